"""Streaming ``fit``, ``evaluate`` and ``predict`` over :class:`HDF5Matrix` data.

Keras 3 turns any array-like given to ``fit``, ``evaluate`` or ``predict`` into one
numpy array, i.e. loads the whole file. Each function here returns the keyword
arguments for one of those calls, with ``keras.utils.PyDataset``\\ s over a
:class:`~lazyh5.BatchLoader` on the same rows in place of the matrices:

- :func:`fit_kwargs`: training data shuffled chunk-aware (by default), validation data
  in file order;
- :func:`evaluate_kwargs` and :func:`predict_kwargs`: file order, so predictions line
  up with the rows.

The shuffled training data of :func:`fit_kwargs` refuses to feed ``predict`` (the
predictions would come out in the shuffled order): see
:class:`~lazyh5.compat.pydataset.TrainingPyDataset`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import InvalidArgumentError
from .hdf5matrix import HDF5Matrix


class _Rows:
    """A matrix's normalizer applied to a block of whole rows, checked to give one row
    of the matrix's row shape per row (what the loader's buffers are sized for)."""

    def __init__(self, matrix: HDF5Matrix) -> None:
        self.normalizer: Callable[[np.ndarray], Any] = matrix.normalizer  # type: ignore[assignment]
        self.row_shape, self.dtype = matrix.shape[1:], matrix.dtype
        self.label = f"HDF5Matrix '{matrix.dataset}' in '{matrix.datapath}'"

    def __call__(self, block: np.ndarray) -> np.ndarray:
        out = np.asarray(self.normalizer(block))
        expected = (len(block), *self.row_shape)
        if out.shape != expected:
            raise InvalidArgumentError(
                f"the normalizer of {self.label} turned rows of shape {block.shape} into an "
                f"array of shape {out.shape}; expected {expected}: one row of shape "
                f"{self.row_shape} per row, the shape it gave for the first row"
            )
        return out.astype(self.dtype, copy=False)


def _normalized(var: xr.DataArray, matrix: HDF5Matrix, name: str) -> xr.DataArray:
    """``var`` (sample dimension first) through ``matrix.normalizer``, block by block,
    with the shape and dtype the normalizer gives (rows may change shape and ndim)."""
    arr = var.data if isinstance(var.data, da.Array) else var.chunk().data
    arr = arr.rechunk({axis: -1 for axis in range(1, arr.ndim)})  # whole rows per block
    row_shape = matrix.shape[1:]
    ndim = 1 + len(row_shape)
    out = arr.map_blocks(
        _Rows(matrix),
        dtype=matrix.dtype,
        chunks=(arr.chunks[0], *((n,) for n in row_shape)),
        drop_axis=list(range(ndim, arr.ndim)),
        new_axis=list(range(arr.ndim, ndim)) or None,
    )
    return xr.DataArray(out, dims=_dims(name, ndim))


def _dims(name: str, ndim: int) -> tuple[str, ...]:
    return ("sample", *(f"{name}_dim_{i}" for i in range(1, ndim)))


def _fed(ds: xr.Dataset, x: HDF5Matrix, y: HDF5Matrix | None) -> tuple[xr.Dataset, list[str]]:
    """``ds`` with a variable per matrix, normalized, and their names. ``x`` and ``y`` of
    one dataset share its variable when they share the normalizer (``fit(x, x)``); with
    different normalizers, ``y`` gets a variable of its own."""
    raw = {m.dataset: ds[m.dataset] for m in (x, y) if m is not None}
    names: list[str] = []
    for m in (x, y):
        if m is None:
            continue
        name = m.dataset
        if names and name == names[0] and m.normalizer is not x.normalizer:
            name = f"{name}_y"  # the target: x's dataset, normalized otherwise
        var = None
        if m.normalizer is not None and name not in names:
            var = _normalized(raw[m.dataset], m, name)
        elif name != m.dataset:
            var = xr.DataArray(raw[m.dataset].data, dims=_dims(name, m.ndim))
        if var is not None:
            ds = ds.drop_vars(name, errors="ignore").assign({name: var})
        names.append(name)
    return ds, names


def _loader(x: HDF5Matrix, y: HDF5Matrix | None, batch_size: int, shuffle: bool):
    from ..feed.loader import BatchLoader
    from ..open import open_dataset

    if y is not None and (os.path.abspath(y.datapath) != os.path.abspath(x.datapath)):
        raise InvalidArgumentError(
            f"x comes from '{x.datapath}' and y from '{y.datapath}'; streaming needs both in "
            "one file (use lazyh5.open_dataset on each and xr.merge them into one BatchLoader)"
        )
    if y is not None and (y.start, y.end) != (x.start, x.end):
        raise InvalidArgumentError(
            f"x holds rows {x.start}:{x.end} but y rows {y.start}:{y.end} of '{x.datapath}'; "
            "they must be the same rows"
        )
    dims = {m.dataset: _dims(m.dataset, m.data.ndim) for m in (x, y) if m is not None}
    # The rows first, so that the normalizers' dask chunks end with them (a block
    # computes whole dask chunks).
    ds = open_dataset(x.datapath, dims=dims, allow_external=x.allow_external)
    ds = ds.isel(sample=slice(x.start, x.end))
    ds, names = _fed(ds, x, y)
    return BatchLoader(
        ds, names[0], None if y is None else names[1], batch_size=batch_size, shuffle=shuffle
    )


def _pydataset(loader) -> Any:
    if not loader.shuffle:
        return loader.keras()
    from .pydataset import TrainingPyDataset

    return TrainingPyDataset(loader)


def fit_kwargs(
    x: HDF5Matrix,
    y: HDF5Matrix | None = None,
    *,
    batch_size: int = 32,
    shuffle: bool = True,
    validation_data: tuple[HDF5Matrix, HDF5Matrix] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``model.fit`` that stream ``HDF5Matrix`` data from the file.

    Replace ``model.fit(x, y, batch_size=32, validation_data=(xv, yv), epochs=5)`` by
    ``model.fit(**fit_kwargs(x, y, batch_size=32, validation_data=(xv, yv)), epochs=5)``.
    With ``shuffle=True`` the training rows come in lazyh5's chunk-aware shuffled order,
    a new one each epoch; that dataset raises if given to ``predict`` (use
    :func:`predict_kwargs`). With ``shuffle=False`` they come in file order. Either
    way the keyword arguments include ``shuffle=False`` for ``fit``, whose own shuffle
    would ask for the batches at random, one read each. Validation data is read in
    file order.

    Examples
    --------
    >>> import h5py, numpy as np
    >>> from lazyh5.compat import HDF5Matrix, fit_kwargs
    >>> with h5py.File("fk.h5", "w") as f:
    ...     _ = f.create_dataset("image", data=np.zeros((100, 4, 4), "f4"))
    ...     _ = f.create_dataset("label", data=np.arange(100) % 2)
    >>> x, y = HDF5Matrix("fk.h5", "image", end=80), HDF5Matrix("fk.h5", "label", end=80)
    >>> xv, yv = HDF5Matrix("fk.h5", "image", start=80), HDF5Matrix("fk.h5", "label", start=80)
    >>> kwargs = fit_kwargs(x, y, batch_size=32, validation_data=(xv, yv))
    >>> sorted(kwargs), len(kwargs["x"]), len(kwargs["validation_data"])
    (['shuffle', 'validation_data', 'x'], 3, 1)
    """
    # Keras' own shuffle asks for batches at random (one read each); the loader
    # shuffles chunk-aware itself, so fit always gets shuffle=False.
    kwargs: dict[str, Any] = {"x": _pydataset(_loader(x, y, batch_size, shuffle)), "shuffle": False}
    if validation_data is not None:
        vx, vy = validation_data
        kwargs["validation_data"] = _loader(vx, vy, batch_size, False).keras()
    return kwargs


def evaluate_kwargs(
    x: HDF5Matrix, y: HDF5Matrix | None = None, *, batch_size: int = 32
) -> dict[str, Any]:
    """Keyword arguments for ``model.evaluate`` that stream ``HDF5Matrix`` data in file order.

    Replace ``model.evaluate(x, y, batch_size=32)`` by
    ``model.evaluate(**evaluate_kwargs(x, y, batch_size=32))``.

    Examples
    --------
    >>> import h5py, numpy as np
    >>> from lazyh5.compat import HDF5Matrix, evaluate_kwargs
    >>> with h5py.File("ek.h5", "w") as f:
    ...     _ = f.create_dataset("image", data=np.zeros((100, 4, 4), "f4"))
    ...     _ = f.create_dataset("label", data=np.arange(100) % 2)
    >>> x, y = HDF5Matrix("ek.h5", "image"), HDF5Matrix("ek.h5", "label")
    >>> kwargs = evaluate_kwargs(x, y, batch_size=32)
    >>> sorted(kwargs), len(kwargs["x"]), kwargs["x"][3][1].tolist()  # the last 4 rows
    (['x'], 4, [0, 1, 0, 1])
    """
    return {"x": _loader(x, y, batch_size, False).keras()}


def predict_kwargs(x: HDF5Matrix, *, batch_size: int = 32) -> dict[str, Any]:
    """Keyword arguments for ``model.predict`` that stream ``HDF5Matrix`` data in file order.

    Replace ``model.predict(x, batch_size=32)`` by
    ``model.predict(**predict_kwargs(x, batch_size=32))``: prediction ``i`` is for
    row ``i`` of ``x``.

    Examples
    --------
    >>> import h5py, numpy as np
    >>> from lazyh5.compat import HDF5Matrix, predict_kwargs
    >>> with h5py.File("pk.h5", "w") as f:
    ...     _ = f.create_dataset("image", data=np.arange(100, dtype="f4").reshape(100, 1))
    >>> x = HDF5Matrix("pk.h5", "image", start=50, normalizer=lambda a: a.reshape(len(a)))
    >>> kwargs = predict_kwargs(x, batch_size=32)
    >>> len(kwargs["x"]), kwargs["x"][1][:3].tolist()  # batch 1: rows 82, 83, 84
    (2, [82.0, 83.0, 84.0])
    """
    return {"x": _loader(x, None, batch_size, False).keras()}
