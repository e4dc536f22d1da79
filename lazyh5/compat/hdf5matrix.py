"""``HDF5Matrix``: the Keras 2 object, rebuilt on lazyh5 for code that used it.

Keras 3 removed ``keras.utils.HDF5Matrix`` and converts any array-like given to ``fit``
into one numpy array, i.e. loads the whole file. This class keeps the old object's
behaviour (length, shape, indexing) without ever loading everything silently;
:mod:`lazyh5.compat.streaming` turns the old ``model.fit(x, y, ...)``,
``model.evaluate(x, y)`` and ``model.predict(x)`` calls into ones that stream from the
file — a one-line change each.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import h5py
import numpy as np
from xarray.core.utils import close_on_error

from .._damage import damage_reported
from .._files import open_h5file
from .._filters import missing_filter_error
from ..backend.security import check_dataset, check_link
from ..errors import (
    DimensionError,
    InvalidArgumentError,
    InvalidIndexError,
    ObjectNotFoundError,
)

# np.asarray(matrix) loads at most this much; beyond it, an error says what to do.
MAX_IMPLICIT_LOAD = 256 * 2**20


class HDF5Matrix:
    """Rows ``[start, end)`` of one HDF5 dataset, read on indexing (Keras 2 semantics).

    Parameters
    ----------
    datapath
        The HDF5 file.
    dataset
        The dataset's name in it (``"image"``, ``"train/image"``).
    start, end
        Rows to expose (``end=None``: to the end).
    normalizer
        A function applied to every array of rows read, e.g. ``lambda x: x / 255.0``.
        It may change the shape of a row (``lambda a: a.reshape(len(a), -1)``) but must
        return one row per row it is given: the shape and dtype of the output for the
        first row are the matrix's ``shape[1:]`` and ``dtype``.
    allow_external
        Follow external links, virtual datasets and external storage that leave the
        file's folder (refused by default with ``ExternalReferenceError``, as by
        :func:`lazyh5.open_dataset`: an untrusted file must not read other files).

    Examples
    --------
    >>> import h5py, numpy as np
    >>> from lazyh5 import HDF5Matrix
    >>> with h5py.File("m.h5", "w") as f:
    ...     _ = f.create_dataset("label", data=np.arange(1000))
    >>> y = HDF5Matrix("m.h5", "label", start=800, end=1000)
    >>> len(y), y.shape, int(y[0]), int(y[-1]), y[[1, 3]].tolist()
    (200, (200,), 800, 999, [801, 803])
    >>> y[190:201]  # a slice past the end raises IndexError, as in Keras 2
    Traceback (most recent call last):
    ...
    lazyh5.errors.InvalidIndexError: slice 190:201 reaches past the end of HDF5Matrix ...
    """

    def __init__(
        self,
        datapath: str | os.PathLike,
        dataset: str,
        start: int = 0,
        end: int | None = None,
        normalizer: Callable[[np.ndarray], np.ndarray] | None = None,
        *,
        allow_external: bool = False,
    ) -> None:
        self.datapath = os.fspath(datapath)
        self.dataset = dataset
        self.allow_external = allow_external
        self._file = open_h5file(self.datapath, "r")
        with close_on_error(self._file), _damaged(self.datapath, dataset, self):
            self._check_external(dataset)
            self._open(dataset, start, end, normalizer)

    def _check_external(self, dataset: str) -> None:
        """Refuse a path through an external link, or a dataset whose data is in another
        file, outside the file's folder (before anything follows them)."""
        node = self._file
        for part in filter(None, dataset.split("/")):
            if not isinstance(node, h5py.Group) or node.get(part, getlink=True) is None:
                return  # not there: _open says what exists
            check_link(self.datapath, node, part, self.allow_external)
            node = node[part]
        if isinstance(node, h5py.Dataset):
            check_dataset(self.datapath, node, self.allow_external)

    def _open(
        self,
        dataset: str,
        start: int,
        end: int | None,
        normalizer: Callable[[np.ndarray], np.ndarray] | None,
    ) -> None:
        if dataset not in self._file or not hasattr(self._file[dataset], "shape"):
            raise ObjectNotFoundError(
                f"no dataset '{dataset}' in '{self.datapath}'; expected one of "
                f"{sorted(self._file)} (a dataset path like 'image' or 'train/image')"
            )
        self.data = self._file[dataset]
        if self.data.ndim == 0:
            raise DimensionError(
                f"dataset '{dataset}' in '{self.datapath}' is a scalar; HDF5Matrix needs a "
                "dataset with rows along its first axis"
            )
        n = self.data.shape[0]
        end = n if end is None else int(end)
        if not 0 <= int(start) <= end <= n:
            raise InvalidIndexError(
                f"start={start}, end={end} out of range for '{dataset}' in '{self.datapath}' "
                f"with {n} rows; expected 0 <= start <= end <= {n}"
            )
        self.start, self.end = int(start), end
        self.normalizer = normalizer
        first = self.data[self.start : self.start + 1] if self.end > self.start else self.data[:1]
        sample = np.asarray(normalizer(first)) if normalizer is not None else first
        if sample.ndim == 0 or len(sample) != len(first):
            raise InvalidArgumentError(
                f"the normalizer of HDF5Matrix '{dataset}' in '{self.datapath}' turned "
                f"rows of shape {first.shape} into an array of shape {sample.shape}; "
                "expected one row per row given (a first axis of the same length)"
            )
        self._dtype = sample.dtype
        self._row_shape = tuple(sample.shape[1:])

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._row_shape)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def _row(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise InvalidIndexError(
                f"index {i} out of range for HDF5Matrix of '{self.dataset}' in "
                f"'{self.datapath}' with {n} rows; expected -{n} <= index < {n}"
            )
        return self.start + (i % n)

    def __getitem__(self, key: Any) -> np.ndarray:
        one = isinstance(key, int | np.integer)
        if one and self.normalizer is not None:  # it gets rows: a batch of one
            key = [key]
        with _damaged(self.datapath, self.dataset, self):
            out = self._getitem(key)
        if self.normalizer is None:
            return out
        out = np.asarray(self.normalizer(out))
        return out[0] if one else out

    def _check_slice(self, key: slice) -> None:
        """Keras 2's bound: a slice may not reach past the matrix's last row."""
        n = len(self)
        step = 1 if key.step is None else operator.index(key.step)
        if step > 0 and key.stop is not None and operator.index(key.stop) > n:
            expected = f"a stop <= {n}"
        elif step < 0 and key.start is not None and operator.index(key.start) >= n:
            expected = f"a start < {n} for a negative step"
        else:
            return
        parts = ["" if v is None else str(v) for v in (key.start, key.stop, key.step)]
        text = ":".join(parts if key.step is not None else parts[:2])
        raise InvalidIndexError(
            f"slice {text} reaches past the end of HDF5Matrix of '{self.dataset}' in "
            f"'{self.datapath}' with {n} rows (rows {self.start}:{self.end} of the "
            f"dataset); expected {expected} (as in Keras 2)"
        )

    def _getitem(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            self._check_slice(key)
            rows = range(len(self))[key]
            if rows.step > 0:
                out = self.data[
                    self.start + rows.start : self.start + max(rows.stop, rows.start) : rows.step
                ]
            elif len(rows):  # h5py has no negative steps: read the span, reverse in memory
                lo = rows[-1]
                out = self.data[self.start + lo : self.start + rows[0] + 1][:: rows.step]
            else:
                out = self.data[:0]
        elif isinstance(key, int | np.integer):
            out = self.data[self._row(int(key))]
        else:
            rows = np.asarray(key)
            if rows.dtype == bool:
                rows = np.flatnonzero(rows)
            rows = np.array([self._row(int(i)) for i in rows.ravel()], dtype=np.int64)
            order = np.argsort(rows, kind="stable")
            uniq, inverse = np.unique(rows[order], return_inverse=True)
            read = self.data[uniq] if len(uniq) else self.data[:0]  # h5py wants sorted, unique
            out = np.empty_like(read, shape=(len(rows), *read.shape[1:]))
            out[order] = read[inverse]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        nbytes = self.size * self.dtype.itemsize
        if nbytes > MAX_IMPLICIT_LOAD:
            raise MemoryError(
                f"refusing to load all of '{self.dataset}' in '{self.datapath}' "
                f"({nbytes / 2**20:.0f} MiB) into memory: Keras 3 converts arrays given to "
                "fit(), evaluate() and predict() with np.asarray. Stream it instead: "
                "model.fit(**lazyh5.compat.fit_kwargs(x, y, batch_size=..., "
                "validation_data=(x_val, y_val)), epochs=...), "
                "model.evaluate(**lazyh5.compat.evaluate_kwargs(x, y, batch_size=...)), "
                "model.predict(**lazyh5.compat.predict_kwargs(x, batch_size=...))"
            )
        out = self[:]
        return out.astype(dtype) if dtype is not None else out

    def __repr__(self) -> str:
        return (
            f"HDF5Matrix('{self.datapath}', '{self.dataset}', start={self.start}, "
            f"end={self.end}) shape={self.shape} dtype={self.dtype}"
        )

    def close(self) -> None:
        self._file.close()


def _damaged(
    path: str, dataset: str, matrix: HDF5Matrix | None = None
) -> AbstractContextManager[None]:
    """:func:`~lazyh5._damage.damage_reported` for ``matrix``'s dataset: failed reads of
    a dataset needing a filter that is not installed give a :class:`MissingFilterError`."""

    def missing_filter() -> Exception | None:
        dset = getattr(matrix, "data", None)  # set once the dataset is found
        return None if dset is None else missing_filter_error(dset, dataset, path)

    return damage_reported(path, dataset, missing_filter=missing_filter)
