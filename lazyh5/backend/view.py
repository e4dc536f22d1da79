"""Which region of which HDF5 dataset a view of a lazyh5 variable (after isel/sel) shows.

The ``.h5`` accessor and ``to_hdf5`` write through a :class:`Target` (:func:`target_of`,
narrowed by a key with :meth:`Target.select`); the BatchLoader reads a view's rows
straight from the file when :func:`stored_region` finds them there as stored.

Every axis of the HDF5 dataset gets one of:

- an ``int``: the view selected a single position (the dimension was dropped);
- a ``range``: positions ``start, start+step, ...`` (slices, with any step);
- a 1-D ``int64`` array: positions picked by an index array.

Positions come from the view's data (see :mod:`lazyh5.backend.positions`): the key
of a lazily indexed array, or the dask graph of slices from the file's blocks. No
coordinate is needed, so views of dimensions without coordinates map back too.
"""

from __future__ import annotations

import operator
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.array import chunk
from dask.array._shuffle import _getitem as shuffle_getitem
from dask.array._shuffle import concatenate_arrays
from dask.array.core import concatenate3, getter, getter_inline, getter_nofancy

from ..errors import (
    InvalidIndexError,
    Lazyh5Error,
    ObjectNotFoundError,
    ReadOnlyError,
    UnmappableViewError,
    UnsupportedDtypeError,
)
from .array import H5BackendArray
from .positions import AxisMap, Untraceable, view_positions

# Encoding keys that mean stored values differ from the values xarray shows.
CF_KEYS = ("scale_factor", "add_offset", "_FillValue", "missing_value", "calendar")


@dataclass
class Target:
    """A writable region of one HDF5 dataset, as seen through a view."""

    source: str
    path: str
    name: str
    array: H5BackendArray  # gives the shared h5py handle and its lock
    dtype: np.dtype
    file_shape: tuple[int, ...]
    axes: list[AxisMap]  # one per file axis
    dims: tuple[Hashable, ...]  # the view's dims (= the non-int axes, in file order)

    @property
    def label(self) -> str:
        return f"'{self.name}' ({self.path}) in '{self.source}'"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a) for a in self.axes if not isinstance(a, int))

    def select(self, key: Any) -> Target:
        """The region that ``key`` (numpy-style, orthogonal) picks out of this one."""
        sel = normalize_key(key, self.shape, self.dims, self.label)
        axes: list[AxisMap] = []
        it = iter(sel)
        for axis in self.axes:
            axes.append(axis if isinstance(axis, int) else _compose(axis, next(it)))
        dims = tuple(d for d, k in zip(self.dims, sel, strict=True) if not isinstance(k, int))
        return Target(
            self.source, self.path, self.name, self.array, self.dtype, self.file_shape, axes, dims
        )


def _compose(axis: range | np.ndarray, key: int | range | np.ndarray) -> AxisMap:
    if isinstance(key, int):
        return int(axis[key])
    if isinstance(axis, range):
        if isinstance(key, range):
            start, step = axis.start + axis.step * key.start, axis.step * key.step
            return range(start, start + step * len(key), step) if len(key) else range(0)
        return axis.start + axis.step * key
    return axis[np.asarray(key, dtype=np.int64)]


def normalize_key(
    key: Any, shape: tuple[int, ...], dims: tuple[Hashable, ...], label: str
) -> list[int | range | np.ndarray]:
    """One ``int``, ``range`` or int array per axis, bounds-checked (negatives wrap)."""
    if isinstance(key, Mapping):
        unknown = set(key) - set(dims)
        if unknown:
            raise ObjectNotFoundError(
                f"cannot write to {label}: no dimension(s) {sorted(unknown)} in {dims}"
            )
        key = tuple(key.get(d, slice(None)) for d in dims)
    if not isinstance(key, tuple):
        key = (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise InvalidIndexError(f"cannot write to {label}: more than one '...' in the key")
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1 :]
    if len(key) > len(shape):
        raise InvalidIndexError(
            f"cannot write to {label}: key has {len(key)} entries but the view has "
            f"{len(shape)} dimension(s) {dims}"
        )
    key = key + (slice(None),) * (len(shape) - len(key))
    out: list[int | range | np.ndarray] = []
    for k, n, dim in zip(key, shape, dims, strict=True):
        where = f"cannot write to {label}: index {k!r} along '{dim}'"
        if isinstance(k, slice):
            out.append(range(n)[k])
        elif isinstance(k, int | np.integer) and not isinstance(k, bool | np.bool_):
            k = int(k)
            if not -n <= k < n:
                raise InvalidIndexError(f"{where} is out of bounds; expected -{n} <= index < {n}")
            out.append(k % n)
        elif isinstance(k, xr.DataArray | list | np.ndarray | range | pd.Index):
            arr = np.asarray(k.values if isinstance(k, xr.DataArray) else k)
            if arr.dtype == bool:
                if arr.shape != (n,):
                    raise InvalidIndexError(f"{where}: a boolean mask must have length {n}")
                out.append(np.flatnonzero(arr))
                continue
            if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
                raise InvalidIndexError(f"{where}: expected a 1-D integer array, a slice or an int")
            arr = arr.astype(np.int64)
            if arr.size and (arr.min() < -n or arr.max() >= n):
                raise InvalidIndexError(f"{where} is out of bounds; expected -{n} <= index < {n}")
            out.append(np.where(arr < 0, arr + n, arr))
        else:
            raise InvalidIndexError(f"{where}: expected an int, a slice, or a 1-D integer array")
    return out


def _check_positions(axes: list[AxisMap], view: xr.DataArray, label: str) -> None:
    for dim, axis in zip(view.dims, [a for a in axes if not isinstance(a, int)], strict=True):
        if isinstance(axis, np.ndarray) and len(np.unique(axis)) != len(axis):
            raise UnmappableViewError(
                f"cannot write to {label}: positions along '{dim}' repeat (a selection "
                "that repeats an index, or a concatenation of overlapping views?)"
            )


def unwrap(obj: Any, depth: int = 12) -> H5BackendArray | None:
    """The backend array inside ``obj`` (a graph value), or ``None``."""
    # xarray wraps backend arrays in adapters (CopyOnWrite, LazilyIndexed, ...), all
    # of which keep the wrapped array in `.array`; dask keeps literals in DataNodes.
    for _ in range(depth):
        if isinstance(obj, H5BackendArray):
            return obj
        if hasattr(obj, "args") and hasattr(obj, "func"):  # an array inlined in a task
            for arg in obj.args:
                found = unwrap(arg, depth - 1)
                if found is not None:
                    return found
            return None
        if type(obj).__name__ == "DataNode":
            obj = obj.value
        nxt = getattr(obj, "array", None)
        if nxt is None:
            return None
        obj = nxt
    return None


def h5_sources(data: Any) -> list[H5BackendArray]:
    """The lazyh5 backend arrays an xarray/dask object reads from (one per dataset).

    Examples
    --------
    >>> import numpy as np, lazyh5
    >>> from lazyh5.backend.view import h5_sources
    >>> ds = lazyh5.create("sources.h5", {"x": ((4,), "f4")})
    >>> [a.path for a in h5_sources((ds["x"] * 2).data)]
    ['/x']
    >>> h5_sources(np.zeros(3))
    []
    """
    found: dict[tuple[str, str], H5BackendArray] = {}
    if isinstance(data, da.Array):
        values: Iterable[Any] = dict(data.__dask_graph__()).values()
    else:
        values = [data]
    for value in values:
        arr = unwrap(value)
        if arr is not None:
            found.setdefault((arr.store.filename, arr.path), arr)
    return list(found.values())


def find_array(view: xr.DataArray, label: str) -> H5BackendArray:
    """The one backend array ``view`` reads, the dataset its encoding names."""
    enc = view.encoding
    # The variable's own data: `view.data` would load a lazily indexed (non-dask) view.
    sources = h5_sources(view.variable._data)
    if len(sources) > 1:
        raise UnmappableViewError(
            f"cannot write to {label}: the view reads from {len(sources)} arrays "
            f"({', '.join(s.path for s in sources)}), e.g. a concatenation"
        )
    if not sources:
        raise UnmappableViewError(
            f"cannot write to {label}: the view is not read lazily from the file "
            "(loaded into memory or rebuilt); write through the lazily opened dataset"
        )
    arr = sources[0]
    if arr.store.filename != enc["source"] or arr.path != enc["lazyh5_path"]:
        raise UnmappableViewError(
            f"cannot write to {label}: the view reads from {arr.path} in "
            f"'{arr.store.filename}', not the dataset its encoding names"
        )
    return arr


def target_of(view: xr.DataArray) -> Target:
    """Trace ``view`` back to its HDF5 dataset; raise a clear error if it cannot be."""
    name = str(view.name)
    enc = view.encoding
    if "lazyh5_path" not in enc or "source" not in enc:
        raise UnmappableViewError(
            f"cannot write to '{name}': it is not a variable read by lazyh5 (a computed "
            "expression loses its link to the file); assign to the variable of the "
            "opened dataset instead, e.g. ds['x'].h5[...] = expression"
        )
    source, path = enc["source"], enc["lazyh5_path"]
    label = f"'{name}' ({path}) in '{source}'"
    file_dims = tuple(enc["lazyh5_dims"])
    file_shape = tuple(enc["original_shape"])
    arr = find_array(view, label)
    if arr.element_ndim:
        raise UnsupportedDtypeError(
            f"cannot write to {label}: its last {arr.element_ndim} dimension(s) are the "
            "HDF5 array element type of each value, which lazyh5 reads but does not write; "
            "write with h5py (dset[i] = value of shape element_shape)"
        )
    if arr.store.read_only_reason() is not None:  # a remote file
        raise ReadOnlyError(arr.store.read_only_reason())
    if arr.store.mode == "r":
        raise ReadOnlyError(
            f"cannot write to '{name}' in {source}: the file was opened read-only; "
            "open it with mode='r+'"
        )
    bad = [k for k in CF_KEYS if k in enc] + (["units"] if view.dtype.kind in "mM" else [])
    if bad == ["_FillValue"] and view.dtype.kind == "f" and np.isnan(enc["_FillValue"]):
        bad = []  # a NaN fill on floats decodes to itself: values are stored as shown
    if bad or view.dtype.kind in "mMOSU" or arr.dtype != view.dtype:
        raise UnsupportedDtypeError(
            f"cannot write to {label}: its values are decoded from the file "
            f"({', '.join(bad) or f'{arr.dtype} shown as {view.dtype}'}); writing through "
            "needs a plain numeric dataset (open with decode_cf=False to write raw values)"
        )
    extra = [d for d in view.dims if d not in file_dims]
    if extra or [d for d in file_dims if d in view.dims] != list(view.dims):
        raise UnmappableViewError(
            f"cannot write to {label}: the view's dims {view.dims} are not the file's "
            f"dims {file_dims} in file order (transposed, stacked or expanded?); "
            "write through the untransposed variable"
        )
    try:
        axes = view_positions(view.variable._data, arr)
    except Untraceable as err:
        raise UnmappableViewError(
            f"cannot write to {label}: the view's data does not map to positions of the "
            f"file ({err}); select with isel/sel on the opened dataset and write through that"
        ) from None
    _check_positions(axes, view, label)
    return Target(source, path, name, arr, np.dtype(arr.dtype), file_shape, axes, view.dims)


def label_key(view: xr.DataArray, indexers: Mapping[Hashable, Any], label: str) -> dict:
    """Positions in ``view`` for label-based ``indexers`` (``.h5.loc[...]``)."""
    key: dict[Hashable, Any] = {}
    for dim, lab in indexers.items():
        if dim not in view.dims:
            raise ObjectNotFoundError(
                f"cannot write to {label}: no dimension '{dim}' in {view.dims}"
            )
        index = view.indexes.get(dim)
        if index is None:  # as xarray's .sel: labels along a dimension without one are positions
            index = pd.RangeIndex(view.sizes[dim])
        if not index.is_unique:
            raise UnmappableViewError(
                f"cannot write to {label}: coordinate '{dim}' has repeated values, so labels "
                "do not identify positions; write with positions (.h5[...]) instead"
            )
        try:
            if isinstance(lab, slice):
                key[dim] = index.slice_indexer(lab.start, lab.stop, lab.step)
            elif np.ndim(lab) == 0:
                loc = index.get_loc(lab.item() if hasattr(lab, "item") else lab)
                if not isinstance(loc, int | np.integer):
                    raise KeyError(lab)
                key[dim] = int(loc)
            else:
                found = index.get_indexer(np.asarray(lab))
                if (found < 0).any():
                    raise KeyError(np.asarray(lab)[found < 0].tolist())
                key[dim] = found
        except KeyError as err:
            raise ObjectNotFoundError(
                f"cannot write to {label}: label(s) {err.args[0]!r} not found along '{dim}'"
            ) from None
    return key


# The tasks of a graph that only reads and slices: the read of a region of the file
# (dask's getters), and the slicing, taking and joining of the blocks read (isel,
# rechunk).
_INDEXING = frozenset(
    {getter, getter_inline, getter_nofancy, chunk.getitem, operator.getitem, concatenate3}
    | {shuffle_getitem, concatenate_arrays}
)


def _indexing_only(data: da.Array) -> bool:
    """Whether every task of ``data``'s graph reads or slices blocks (no computation)."""
    for value in dict(data.__dask_graph__()).values():
        func = getattr(value, "func", None)
        if isinstance(value, tuple) and value and callable(value[0]):
            func = value[0]  # a task in dask's tuple form
        if func is not None and func not in _INDEXING:
            return False
    return True


def stored_region(view: xr.DataArray) -> tuple[H5BackendArray, tuple[slice, ...]] | None:
    """The dataset and the region (one step-1 slice per file axis) whose stored values
    ``view`` holds unchanged, in the file's axis order; ``None`` when its values are
    computed: decoded (CF), transformed, assigned in memory, transposed, or picked with
    steps or index arrays (dask computes those). Renamed dimensions do not matter: the
    view's axes are the file's, in order. Only dask-backed views qualify.

    Examples
    --------
    >>> import lazyh5
    >>> from lazyh5.backend.view import stored_region
    >>> ds = lazyh5.create("region.h5", {"x": ((100, 3), "f4")})
    >>> array, key = stored_region(ds["x"][10:50])
    >>> array.path, key
    ('/x', (slice(10, 50, None), slice(0, 3, None)))
    >>> stored_region(ds["x"] * 2) is None
    True
    """
    data = view.variable._data
    enc = view.encoding
    if not isinstance(data, da.Array) or "lazyh5_path" not in enc:
        return None
    if any(k in enc for k in CF_KEYS) or view.dtype.kind not in "biufc":
        return None  # values are decoded from what the file stores
    if view.ndim != len(enc["original_shape"]):
        return None  # a dimension dropped by an integer, or added (renamed ones are fine)
    if not _indexing_only(data):
        return None  # a function of the user's runs on the values (and may have effects)
    label = f"'{view.name}' ({enc['lazyh5_path']}) in '{enc.get('source')}'"
    try:
        arr = find_array(view, label)
        axes = view_positions(data, arr, stored=True)
    except (Lazyh5Error, Untraceable):
        return None
    if arr.dtype != view.dtype or arr.shape != tuple(enc["original_shape"]):
        return None
    if not all(isinstance(a, range) and a.step == 1 for a in axes):
        return None
    if tuple(len(a) for a in axes) != view.shape:
        return None  # not the file's axes in their order (transposes are not indexing)
    return arr, tuple(slice(a.start, a.stop) for a in axes)
