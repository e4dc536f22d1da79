"""Index lists reach HDF5: a dask graph pass that folds a take into the read of a chunk.

``ds["image"].isel(sample=[3, 90_000, 250_000]).values`` on a dask-backed Dataset makes
dask read three whole dask chunks (megabytes each) and then pick one row of each: dask's
``take`` splits an index list per chunk with its shuffle tasks
(``dask.array._shuffle._getitem``), which its own getter fusion
(``dask.array.optimization._optimize_slices``) does not look through, so a few
sorted random rows cost several times h5py's fancy read, more with bigger chunks.

This pass rewrites each ``take(read(chunk region), rows)`` whose read is of a lazyh5
dataset, and whose read feeds nothing else, into one read of just those rows, so HDF5
is asked for exactly the rows selected (xarray's outer indexing handles the list). It
runs before dask's own array optimisation, through dask's documented hook
(``dask.config.set(array_optimize=...)``), and leaves every other graph as it is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import dask
import numpy as np
from dask._task_spec import Alias, DataNode, List, Task, TaskRef, convert_legacy_graph
from dask.array._shuffle import _getitem as _take
from dask.array._shuffle import concatenate_arrays
from dask.array.core import getter, getter_inline, getter_nofancy
from dask.array.optimization import fuse_slice
from dask.array.optimization import optimize as _dask_optimize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer
from dask.utils import ensure_dict

from .array import H5BackendArray

_GETTERS = (getter, getter_inline, getter_nofancy)


def optimize(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """dask's array optimisation, after folding takes of lazyh5 reads into the reads."""
    if _has_takes(dsk):
        dsk = fold_takes(ensure_dict(dsk))
    return _NEXT(dsk, keys, **kwargs)


_NEXT: Callable[..., Any] = _dask_optimize


def install() -> None:
    """Make :func:`optimize` dask's array optimisation (wrapping any one set before)."""
    global _NEXT
    current = dask.config.get("array_optimize", None)
    if current is optimize:
        return
    _NEXT = current or _dask_optimize
    dask.config.set(array_optimize=optimize)


def _has_takes(dsk: Any) -> bool:
    # Cheap test first: take's tasks live in materialized layers; big graphs are mostly
    # blockwise layers, which are never looked into.
    if isinstance(dsk, HighLevelGraph):
        layers = [lay.mapping for lay in dsk.layers.values() if isinstance(lay, MaterializedLayer)]
    else:
        layers = [dsk]
    return any(isinstance(t, Task) and t.func is _take for m in layers for t in m.values())


def fold_takes(dsk: Mapping) -> dict:
    """The graph with each take of a lazyh5 chunk read turned into a read of those rows."""
    dsk = convert_legacy_graph(dict(dsk))
    users = Counter(dep for task in dsk.values() for dep in task.dependencies)
    for key, task in list(dsk.items()):
        if not (isinstance(task, Task) and task.func is _take and len(task.args) == 2):
            continue
        source, rows = task.args
        if not (isinstance(source, TaskRef) and isinstance(rows, TaskRef)):
            continue
        read_key = _resolve(dsk, source.key)
        read = dsk.get(read_key)
        if users[source.key] != 1 or (read_key != source.key and users[read_key] != 1):
            continue  # the whole chunk is needed elsewhere too
        taker = dsk.get(rows.key)
        if not (_is_lazyh5_read(dsk, read) and isinstance(taker, DataNode)):
            continue
        region = read.args[1].value if isinstance(read.args[1], DataNode) else read.args[1]
        try:
            picked = _as_arrays(fuse_slice(region, _as_lists(taker.value[1])))
        except (NotImplementedError, TypeError, ValueError):
            continue
        # Extra arguments (asarray=, lock=) may be positional or keywords: both are kept.
        dsk[key] = Task(
            key, read.func, read.args[0], DataNode(None, picked), *read.args[2:], **read.kwargs
        )
        del dsk[read_key]
        if read_key != source.key:
            del dsk[source.key]
    return _merge_reads(dsk)


def _merge_reads(dsk: dict) -> dict:
    """Join the row reads that one output chunk of a take concatenates into one read.

    100 random rows spread over 100 dask chunks would otherwise be 100 tasks of one
    HDF5 read each (slower than h5py's single fancy read); joined, they are one read.
    """
    users = Counter(dep for task in dsk.values() for dep in task.dependencies)
    for key, task in list(dsk.items()):
        if not (isinstance(task, Task) and task.func is concatenate_arrays):
            continue
        parts, sorter, axis = task.args
        if not isinstance(parts, List) or len(parts.args) < 2:
            continue
        refs = parts.args
        reads = [dsk.get(r.key) if isinstance(r, TaskRef) else None for r in refs]
        if not all(
            isinstance(r, TaskRef) and users[r.key] == 1 and _is_lazyh5_read(dsk, t)
            for r, t in zip(refs, reads, strict=True)
        ):
            continue
        first = reads[0]
        indexes = [t.args[1].value for t in reads]
        if not all(
            t.func is first.func
            and t.args[0] == first.args[0]
            and t.args[2:] == first.args[2:]
            and t.kwargs == first.kwargs
            for t in reads
        ) or not _differ_only_along(indexes, axis):
            continue
        merged = list(indexes[0])
        merged[axis] = np.concatenate([ix[axis] for ix in indexes])
        head = refs[0].key
        dsk[head] = Task(
            head,
            first.func,
            first.args[0],
            DataNode(None, tuple(merged)),
            *first.args[2:],
            **first.kwargs,
        )
        for r in refs[1:]:
            del dsk[r.key]
        dsk[key] = Task(key, concatenate_arrays, List(TaskRef(head)), sorter, axis)
    return dsk


def _differ_only_along(indexes: list[Any], axis: int) -> bool:
    if not all(isinstance(ix, tuple) and len(ix) == len(indexes[0]) for ix in indexes):
        return False
    if not all(isinstance(ix[axis], np.ndarray) and ix[axis].ndim == 1 for ix in indexes):
        return False
    return all(
        all(_same(a, b) for k, (a, b) in enumerate(zip(ix, indexes[0], strict=True)) if k != axis)
        for ix in indexes[1:]
    )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def _resolve(dsk: Mapping, key: Any) -> Any:
    while isinstance(dsk.get(key), Alias):
        key = dsk[key].target
    return key


def _is_lazyh5_read(dsk: Mapping, task: Any) -> bool:
    if not (isinstance(task, Task) and task.func in _GETTERS and len(task.args) >= 2):
        return False
    array = task.args[0]
    if isinstance(array, TaskRef):
        array = dsk.get(array.key)
    if not isinstance(array, DataNode):
        return False
    return _wraps_lazyh5(array.value)


def _wraps_lazyh5(obj: Any) -> bool:
    # xarray wraps the backend array in a few indexing adapters, each with ``.array``.
    for _ in range(16):
        if isinstance(obj, H5BackendArray):
            return True
        obj = getattr(obj, "array", None)
        if obj is None:
            return False
    return False


def _as_arrays(index: Any) -> Any:
    # xarray's OuterIndexer takes integer arrays, not lists.
    if isinstance(index, tuple):
        return tuple(np.asarray(i, np.int64) if isinstance(i, list) else i for i in index)
    return np.asarray(index, np.int64) if isinstance(index, list) else index


def _as_lists(index: Any) -> Any:
    # dask's fuse_slice composes slices with lists; take hands it numpy arrays.
    if isinstance(index, tuple):
        return tuple(i.tolist() if isinstance(i, np.ndarray) else i for i in index)
    return index.tolist() if isinstance(index, np.ndarray) else index
