"""The lazily indexed wrapper around one HDF5 dataset."""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
from h5py import h5s, h5t
from h5py._hl import selections
from xarray.backends import BackendArray
from xarray.core import indexing

from .._damage import damage_reported
from .._filters import missing_filter_error
from .read import read
from .types import VariableType


class H5BackendArray(BackendArray):
    """One HDF5 dataset, read only when indexed.

    It holds the store (a picklable file manager + lock) and the dataset's path, never
    an h5py object, so it pickles and reopens the file by path on dask workers.
    """

    __slots__ = (
        "_decode_strings",
        "_element_ndim",
        "_read_dtype",
        "dtype",
        "path",
        "shape",
        "store",
    )

    def __init__(self, store, path: str, shape: tuple[int, ...], kind: VariableType):
        self.store = store
        self.path = path
        self.shape = shape
        self.dtype = kind.dtype
        self._decode_strings = kind.strings
        # Trailing axes of an HDF5 array element type: h5py returns them whole.
        self._element_ndim = len(kind.element_shape)
        self._read_dtype = kind.read_dtype

    @property
    def element_ndim(self) -> int:
        """How many trailing dimensions come from an HDF5 array element type."""
        return self._element_ndim

    def get_array(self, needs_lock: bool = True):
        return self.store.acquire(needs_lock)[self.path]

    def _dataset_unlocked(self):
        return self.get_array(needs_lock=False)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        # h5py takes basic slices plus one increasing integer list per selection;
        # xarray decomposes anything else (steps < 0, unsorted or repeated indices).
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER_1VECTOR, self._getitem
        )

    def _getitem(
        self, key: tuple, out: np.ndarray | None = None, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """``dset[key]``, into ``out`` when given; with ``rows`` (``key`` all slices),
        its row ``i`` into ``out[rows[i]]`` (see :func:`~lazyh5.backend.read.read`)."""
        with self.damage_reported():
            return self._read(key, out, rows)

    def damage_reported(self) -> AbstractContextManager[None]:
        """:func:`~lazyh5._damage.damage_reported` for reads of this dataset (a missing
        HDF5 filter reported as such)."""
        return damage_reported(self.store.filename, self.path, missing_filter=self._missing_filter)

    def _missing_filter(self) -> Exception | None:
        """The error for a failed read of a dataset whose filter is not installed."""
        with self.store.lock:
            dset = self.get_array(needs_lock=False)
            return missing_filter_error(dset, self.path, self.store.filename)

    def _read(
        self, key: tuple, out: np.ndarray | None = None, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """``dset[key]``; into ``out`` when given (numeric data, slices only; with
        ``rows``, see :meth:`_getitem`)."""
        if self._element_ndim or self._read_dtype is not None:
            values = self._read_converted(key, out if rows is None else None)
        elif not self._decode_strings:
            ranges = self.store.ranges()  # a remote file's byte ranges, else None
            return read(self._dataset_unlocked, self.store.lock, self.shape, key, out, ranges, rows)
        else:
            with self.store.lock:
                dset = self.get_array(needs_lock=False)
                values = np.asarray(dset.asstr()[key], dtype=object)
        if rows is None:
            return values
        out[rows] = values  # read whole, then placed
        return out

    def _read_converted(self, key: tuple, out: np.ndarray | None) -> np.ndarray:
        """``dset[key]`` of a dataset HDF5 converts (byte order of a compound) or whose
        array element type adds trailing axes, which h5py cannot index: they are read
        whole and indexed here, one axis at a time (outer indexing, as xarray asks)."""
        key = tuple(key) + (slice(None),) * (len(self.shape) - len(key))
        n = len(self.shape) - self._element_ndim
        file_key, element_key = key[:n], key[n:]
        with self.store.lock:
            dset = self.get_array(needs_lock=False)
            if self._read_dtype is not None:
                values = _read_as(dset, file_key, self._read_dtype)
            elif self._decode_strings:
                values = np.asarray(dset.asstr()[file_key])
            else:
                values = np.asarray(dset[file_key])
        kept = sum(not isinstance(k, int | np.integer) for k in file_key)
        # Last axis first, so the positions of the axes before it do not move.
        for axis in reversed(range(len(element_key))):
            values = values[(slice(None),) * (kept + axis) + (element_key[axis],)]
        if self._decode_strings:
            values = values.astype(object)
        if out is None:
            return values
        out[...] = values
        return out


def _read_as(dset, key: tuple, dtype: np.dtype) -> np.ndarray:
    """``dset[key]`` converted by HDF5 to ``dtype``.

    Done with h5py's low-level read: ``dset.astype`` asks for the dataset's own numpy
    dtype first, which h5py cannot build when a compound has a member of a type numpy
    has no counterpart for (PyTables' time columns), even though HDF5 reads the others.
    """
    sel = selections.select(dset.shape, key, dset)
    out = np.empty(sel.array_shape, dtype)
    if sel.nselect == 0:
        return out
    mspace = h5s.create_simple(sel.mshape) if sel.mshape else h5s.create(h5s.SCALAR)
    dset.id.read(mspace, sel.id, out, h5t.py_create(dtype))
    return out
