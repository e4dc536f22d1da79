"""Dask-graph helpers for writing: which file regions a graph reads, shared reductions
computed first, and block-by-block storing with a progress bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import compute_as_if_collection, tokenize
from dask.core import flatten, get_dependencies, reverse_dict, toposort
from dask.highlevelgraph import HighLevelGraph

from ..backend.array import H5BackendArray
from ..backend.view import unwrap

__all__ = ["precompute_shared", "progress_bar", "store_blocks"]


def precompute_shared(arr: da.Array) -> da.Array:
    """Compute first the parts of ``arr``'s graph that many output blocks share.

    ``(x - x.mean()) / x.std()`` makes every output block depend on a reduction over
    all of ``x``: computed in one go, dask must hold every block of ``x`` until the
    reduction is done (memory = the whole array), and an in-place write could
    overwrite blocks the reduction has not read yet. Computing the shared results
    first (reading ``x`` once for them), then substituting their values, leaves a
    graph whose blocks are independent: memory is a few blocks again.

    A key is *shared* when it leads to two or more output blocks; we compute the
    shared keys that feed private (single-block) keys of at least half the output
    blocks directly, i.e. the reductions broadcast back over the blocks.
    """
    if arr.npartitions < 2:
        return arr
    dsk, deps, owner = analyze(arr)
    dependents = reverse_dict(deps)
    # A reduction feeds (almost) every block; an overlap (shift, rolling window) feeds
    # two or three, and precomputing those would hold the whole array in memory.
    wide = max(2, arr.npartitions // 2)
    frontier = [
        k
        for k, o in owner.items()
        if o is None
        and deps[k]  # a leaf (an array object, a constant) has nothing to compute
        and len({owner[d] for d in dependents[k] if owner.get(d) is not None}) >= wide
    ]
    if not frontier:
        return arr
    values = compute_as_if_collection(da.Array, dsk, frontier)
    for k, v in zip(frontier, values, strict=True):
        dsk[k] = (_literal, v)
    return da.Array(dsk, arr.name, arr.chunks, meta=arr._meta)


def analyze(arr: da.Array) -> tuple[dict, dict, dict]:
    """The graph, each key's dependencies, and each key's *owner*.

    The owner is the one output block a key leads to, or ``None`` when it leads to
    several (a shared key). Keys no output needs have no owner.
    """
    dsk = dict(arr.__dask_graph__())
    deps = {k: get_dependencies(dsk, k) for k in dsk}
    dependents = reverse_dict(deps)
    owner: dict[Any, Any] = {}
    out_set = set(flatten(arr.__dask_keys__()))
    # From the outputs down (reverse topological order).
    for k in reversed(toposort(dsk, dependencies=deps)):
        if k in out_set:
            owner[k] = k
            continue
        owners = {owner[d] for d in dependents[k] if d in owner}
        if owners:
            owner[k] = owners.pop() if len(owners) == 1 and None not in owners else None
    return dsk, deps, owner


def target_reads(
    dsk: dict, deps: dict, filename: str, path: str
) -> dict[Any, tuple[slice, ...]] | None:
    """The file regions each task reads from one HDF5 dataset, by task key.

    ``None`` when some read cannot be recognised (then callers must assume the worst).
    Recognised: xarray's ``getter(original, (slice, ...))`` tasks over the whole dataset.
    """
    originals = set()
    for k, v in dsk.items():
        arr = unwrap(v)
        if arr is None or arr.store.filename != filename or arr.path != path:
            continue
        if type(v).__name__ == "Task":
            return None  # the array is inlined into a task: regions unknown
        obj, full = v, True
        while obj is not None and not isinstance(obj, H5BackendArray):
            key = getattr(obj, "key", None)
            if key is not None and any(s != slice(None) for s in getattr(key, "tuple", (0,))):
                full = False
            obj = getattr(obj, "array", None)
        if not full:
            return None
        originals.add(k)
    reads = {}
    for k, ds in deps.items():
        if not ds & originals:
            continue
        region = _getter_region(dsk[k])
        if region is None:
            return None
        reads[k] = region
    return reads


def _getter_region(task: Any) -> tuple[slice, ...] | None:
    """The region a ``getter(array, (slice, ...))`` task reads, else ``None``."""
    func, args = getattr(task, "func", None), getattr(task, "args", ())
    if getattr(func, "__name__", None) != "getter" or len(args) != 2:
        return None
    region = getattr(args[1], "value", None)
    if not isinstance(region, tuple | list):
        return None
    if not all(isinstance(r, slice) and r.step in (None, 1) for r in region):
        return None
    return tuple(region)


def _literal(value: Any) -> Any:
    return value


def progress_bar(total: int, desc: str, progress: bool) -> Any:
    """A tqdm bar, silent when ``progress`` is false or stderr is not a terminal."""
    from tqdm.auto import tqdm

    enabled = bool(progress) and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="block", disable=not enabled, leave=False)


def block_regions(chunks: tuple[tuple[int, ...], ...]) -> dict[tuple[int, ...], tuple[slice, ...]]:
    """The region (slices) of every block of a chunked array, by block index."""
    offsets = [np.cumsum((0, *c)) for c in chunks]
    regions = {}
    for idx in np.ndindex(*(len(c) for c in chunks)):
        regions[idx] = tuple(
            slice(int(o[i]), int(o[i + 1])) for o, i in zip(offsets, idx, strict=True)
        )
    return regions


def store_blocks(
    arr: da.Array,
    write: Callable[[tuple[int, ...], tuple[slice, ...], np.ndarray], None],
    *,
    skip: Iterable[tuple[int, ...]] = (),
    desc: str = "writing",
    progress: bool = True,
    scheduler: Any = None,
    on_workers: bool = False,
) -> int:
    """Compute ``arr`` block by block, calling ``write(index, region, block)`` for each.

    Like :func:`dask.array.store`, but blocks listed in ``skip`` are culled from the
    graph (never computed), which ``resume=True`` needs and ``da.store`` cannot do.
    Each block is written as soon as it is computed, so memory stays at a few blocks
    with dask's depth-first ordering. Returns the number of blocks written.

    On a dask.distributed cluster ``write`` runs in this process as blocks arrive,
    unless ``on_workers``: then it must be picklable and safe to run in any worker
    process (a cluster-locked lazyh5 store), and each block is written by a task on
    the worker that computed it.
    """
    skip = set(skip)
    regions = block_regions(arr.chunks)
    todo = [idx for idx in regions if idx not in skip]
    if not todo:
        return 0
    client = None if scheduler else distributed_client()
    if client is not None:
        return _store_distributed(client, arr, write, todo, regions, desc, progress, on_workers)
    name = "lazyh5-store-" + tokenize(arr.name, desc, len(todo))
    bar = progress_bar(len(todo), desc, progress)

    def task(block: np.ndarray, idx: tuple[int, ...], region: tuple[slice, ...]) -> None:
        write(idx, region, np.asarray(block))
        bar.update(1)

    dsk = {(name, *idx): (task, (arr.name, *idx), idx, regions[idx]) for idx in todo}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[arr])
    try:
        with dask.config.set(scheduler=scheduler) if scheduler else nullcontext():
            compute_as_if_collection(da.Array, graph, list(dsk))
    finally:
        bar.close()
    return len(todo)


def distributed_client() -> Any:
    """The dask.distributed client dask would compute with now, if any."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:
        return None
    scheduler = dask.config.get("scheduler", None)
    return client if scheduler in (None, "dask.distributed", "distributed") else None


def _store_distributed(client, arr, write, todo, regions, desc, progress, on_workers) -> int:
    # h5py handles cannot travel to workers, and workers cannot open a file this
    # process holds for writing: compute blocks on the cluster, write them here as they
    # arrive. A window of blocks in flight keeps memory at a few blocks on both sides.
    # With `on_workers`, a task writes each block where it was computed instead.
    from dask import delayed
    from distributed import as_completed

    blocks = arr.to_delayed()
    window = max(2, 2 * sum(client.nthreads().values()))
    pending = iter(todo)
    bar = progress_bar(len(todo), desc, progress)

    index_of: dict[Any, tuple[int, ...]] = {}

    def submit(idx):
        task = blocks[idx]
        if on_workers:
            task = delayed(write, pure=False)(idx, regions[idx], task)
        future = client.compute(task)
        index_of[future.key] = idx
        return future

    try:
        running = as_completed([submit(i) for _, i in zip(range(window), pending, strict=False)])
        for future in running:
            idx = index_of.pop(future.key)
            result = future.result()  # raises what the task raised
            if not on_workers:
                write(idx, regions[idx], np.asarray(result))
            future.release()
            bar.update(1)
            nxt = next(pending, None)
            if nxt is not None:
                running.add(submit(nxt))
    finally:
        bar.close()
    return len(todo)
