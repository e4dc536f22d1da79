"""Which positions of its HDF5 dataset a view holds, read from the view's own data.

lazyh5 adds no position coordinates to datasets (xarray would not create them), so a
view made by ``isel`` carries no labels telling which rows of the file it holds.
Its data does: a lazily indexed array keeps the key it was indexed with, and a dask
array keeps the graph of slices that led from the file's blocks to the view's. We
replay that graph with :class:`Positions` standing in for the file: each block then
holds, per file axis, the file positions it would have read (one 1-D array per axis,
so memory is the sum of the axis lengths, not their product).

Anything the replay does not recognise (vectorized indexing, arithmetic, new axes)
makes the view untraceable: writing through it is refused rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
from dask.core import flatten
from dask.local import get_sync
from xarray.core import indexing

from .array import H5BackendArray

AxisMap = int | range | np.ndarray


class Untraceable(Exception):
    """The view's data went through an operation that does not map to file positions."""


class Positions:
    """A stand-in for a block of an HDF5 dataset: its file positions along each axis.

    ``axes`` has one entry per axis of the file's dataset: an ``int`` where the view
    selected one position (the axis is dropped), else the 1-D ``int64`` positions.
    It supports what dask and xarray do to blocks when a view is sliced: orthogonal
    ``__getitem__``, ``np.concatenate`` and ``np.take``.
    """

    __slots__ = ("axes",)
    dtype = np.dtype(np.int64)

    def __init__(self, axes: list[int | np.ndarray]):
        self.axes = axes

    @classmethod
    def full(cls, shape: tuple[int, ...]) -> Positions:
        return cls([np.arange(n, dtype=np.int64) for n in shape])

    @property
    def _kept(self) -> list[int]:
        return [i for i, a in enumerate(self.axes) if not isinstance(a, int)]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.axes[i]) for i in self._kept)

    @property
    def ndim(self) -> int:
        return len(self._kept)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Positions:
        if isinstance(key, indexing.ExplicitIndexer):
            if isinstance(key, indexing.VectorizedIndexer):
                raise Untraceable("vectorized (pointwise) indexing")
            key = key.tuple
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is None for k in key):
            raise Untraceable("a new axis")
        if any(k is Ellipsis for k in key):
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if len(key) > self.ndim:
            raise Untraceable(f"a key of {len(key)} entries on {self.ndim} axes")
        key = key + (slice(None),) * (self.ndim - len(key))
        axes = list(self.axes)
        for i, k in zip(self._kept, key, strict=True):
            if isinstance(k, slice):
                axes[i] = axes[i][k]
            elif isinstance(k, int | np.integer) and not isinstance(k, bool | np.bool_):
                axes[i] = int(axes[i][k])
            else:
                arr = np.asarray(k)
                if arr.ndim != 1 or arr.dtype.kind not in "iub":
                    raise Untraceable(f"an index of shape {arr.shape} and dtype {arr.dtype}")
                axes[i] = axes[i][arr]
        return type(self)(axes)

    def copy(self) -> Positions:
        return type(self)(list(self.axes))

    def __setitem__(self, key: Any, value: Any) -> None:
        # Assigning values in memory (ds["x"][i] = v) moves no data: positions stay.
        pass

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise Untraceable("the data was converted to numpy values (computed)")

    def __array_function__(
        self, func: Callable, types: Any, args: tuple, kwargs: dict[str, Any]
    ) -> Any:
        handler = _HANDLED.get(func)
        if handler is None:
            raise Untraceable(f"numpy.{func.__name__}")
        return handler(*args, **kwargs)


def _concatenate(arrays: Any, axis: int = 0, **kwargs: Any) -> Positions:
    arrays = list(arrays)
    if kwargs.get("out") is not None or not all(isinstance(a, Positions) for a in arrays):
        raise Untraceable("a concatenation with other data")
    first = arrays[0]
    along = first._kept[axis]
    axes = list(first.axes)
    for i, a in enumerate(first.axes):
        if i == along:
            continue
        for other in arrays[1:]:
            if not np.array_equal(a, other.axes[i]):
                raise Untraceable("a concatenation of blocks from different positions")
    axes[along] = np.concatenate([a.axes[along] for a in arrays])
    return type(first)(axes)


def _take(a: Positions, indices: Any, axis: int | None = None, **kwargs: Any) -> Positions:
    if axis is None or kwargs.get("out") is not None:
        raise Untraceable("numpy.take without an axis")
    key: list[Any] = [slice(None)] * a.ndim
    key[axis] = np.asarray(indices)
    return a[tuple(key)]


_HANDLED: dict[Callable, Callable] = {np.concatenate: _concatenate, np.take: _take}


class StoredPositions(Positions):
    """Positions of a view whose values must be the file's as stored: an assignment
    in memory (``ds["x"][i] = v``) makes it untraceable."""

    __slots__ = ()

    def __setitem__(self, key: Any, value: Any) -> None:
        raise Untraceable("values assigned in memory")


def _lazy_key(obj: Any) -> tuple[H5BackendArray, Any] | None:
    """The backend array under xarray's wrappers, and the lazy key on it (if any)."""
    key = None
    for _ in range(12):
        if isinstance(obj, H5BackendArray):
            return obj, key
        if isinstance(obj, indexing.LazilyVectorizedIndexedArray):
            raise Untraceable("vectorized (pointwise) indexing")
        if isinstance(obj, indexing.LazilyIndexedArray):
            if key is not None:
                return None  # xarray composes keys into one wrapper; two is unexpected
            key = obj.key
        obj = getattr(obj, "array", None)
        if obj is None:
            return None
    return None


def _stand_in(obj: Any, arr: H5BackendArray, kind: type[Positions]) -> Positions | None:
    found = _lazy_key(obj)
    if found is None or found[0] is not arr:
        return None
    # xarray wraps every backend array in a lazily indexed array: there is a key
    return kind.full(arr.shape)[found[1]]


def _as_map(axis: int | np.ndarray) -> AxisMap:
    """Positions as a ``range`` when they are evenly spaced (cheaper to write)."""
    if isinstance(axis, int):
        return axis
    if len(axis) == 0:
        return range(0)
    if len(axis) == 1:
        return range(int(axis[0]), int(axis[0]) + 1)
    step = int(axis[1] - axis[0])
    if step != 0 and np.array_equal(np.diff(axis), np.full(len(axis) - 1, step)):
        return range(int(axis[0]), int(axis[-1]) + step, step)
    return axis  # int64 already: positions come from Positions.full


def _replay(data: da.Array, arr: H5BackendArray, kind: type[Positions]) -> Positions:
    """Compute ``data``'s graph with ``kind`` (:class:`Positions`) in place of the
    file's array."""
    dsk = dict(data.__dask_graph__())
    # None for tasks: they wrap no array
    stand_ins = {k: s for k, v in dsk.items() if (s := _stand_in(v, arr, kind)) is not None}
    if not stand_ins:
        raise Untraceable("the file's array is inlined into the graph's tasks")
    dsk.update(stand_ins)
    try:
        blocks = get_sync(dsk, list(flatten(data.__dask_keys__())))
    except Untraceable:
        raise
    except Exception as err:  # an operation Positions does not support
        raise Untraceable(f"{type(err).__name__}: {err}") from None
    blocks = list(blocks)
    if not all(isinstance(b, Positions) for b in blocks):
        raise Untraceable("the view's blocks are computed values")
    return _assemble(data, blocks)


def _assemble(data: da.Array, blocks: list[Positions]) -> Positions:
    """One :class:`Positions` for the whole view from its blocks (checked consistent)."""
    grid = np.empty(data.numblocks, dtype=object)
    for flat, block in enumerate(blocks):
        grid[np.unravel_index(flat, data.numblocks)] = block
    first = grid[(0,) * data.ndim]
    kept = first._kept
    if any(block._kept != kept for block in blocks):  # before joining their positions
        raise Untraceable("blocks that drop different axes")
    axes: list[int | np.ndarray] = list(first.axes)
    for j, file_axis in enumerate(kept):
        along = [grid[(0,) * j + (b,) + (0,) * (data.ndim - j - 1)] for b in range(grid.shape[j])]
        axes[file_axis] = np.concatenate([b.axes[file_axis] for b in along])
    offsets = [np.cumsum((0, *c)) for c in data.chunks]
    for idx in np.ndindex(*data.numblocks):
        block = grid[idx]
        for j, file_axis in enumerate(kept):
            lo, hi = offsets[j][idx[j]], offsets[j][idx[j] + 1]
            if not np.array_equal(block.axes[file_axis], axes[file_axis][lo:hi]):
                raise Untraceable("blocks that are not an outer product of positions")
        for i in set(range(len(axes))) - set(kept):
            if block.axes[i] != axes[i]:
                raise Untraceable("blocks from different positions of a dropped axis")
    return Positions(axes)


# Replaying a graph costs time per block and the loader asks again for each block
# plan, so results are kept per dask array (its name identifies its graph).
_CACHE: dict[tuple[str, bool], list[AxisMap]] = {}
_CACHE_SIZE = 256


def view_positions(data: Any, arr: H5BackendArray, *, stored: bool = False) -> list[AxisMap]:
    """The file positions ``data`` (a view of ``arr``'s dataset) holds, per file axis.

    Parameters
    ----------
    data
        The view's data: ``Variable._data`` (a dask array or xarray's lazily indexed
        wrapper around ``arr``).
    arr
        The backend array of the HDF5 dataset the view reads.
    stored
        Also refuse a view whose values differ from the stored ones by an assignment
        in memory (positions alone do not change with it).

    Returns
    -------
    list
        One entry per axis of the file's dataset: an ``int`` (the view selected that
        single position), a ``range`` or a 1-D ``int64`` array of positions.

    Raises
    ------
    Untraceable
        When the view's data does not map to positions of the file.
    """
    kind = StoredPositions if stored else Positions
    if isinstance(data, da.Array):
        cached = _CACHE.get((data.name, stored))
        if cached is None:
            cached = [_as_map(a) for a in _replay(data, arr, kind).axes]
            if len(_CACHE) >= _CACHE_SIZE:
                del _CACHE[next(iter(_CACHE))]  # the oldest
            _CACHE[data.name, stored] = cached
        return cached
    stand_in = _stand_in(data, arr, kind)
    if stand_in is None:
        raise Untraceable("the view's data is not lazily indexed from the file")
    return [_as_map(a) for a in stand_in.axes]
