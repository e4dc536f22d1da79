"""Dask-graph helpers for writing: which HDF5 arrays a graph reads, shared reductions
computed first, and block-by-block storing with a progress bar.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.base import compute_as_if_collection, tokenize
from dask.core import flatten, get_dependencies
from dask.highlevelgraph import HighLevelGraph

from ..backend.array import H5BackendArray

__all__ = ["h5_sources", "precompute_shared", "progress_bar", "store_blocks"]


def _unwrap(obj: Any, depth: int = 12) -> H5BackendArray | None:
    # xarray wraps backend arrays in adapters (CopyOnWrite, LazilyIndexed, ...), all
    # of which keep the wrapped array in `.array`.
    for _ in range(depth):
        if isinstance(obj, H5BackendArray):
            return obj
        obj = getattr(obj, "value", None) if hasattr(obj, "value") else obj
        nxt = getattr(obj, "array", None)
        if nxt is None:
            return obj if isinstance(obj, H5BackendArray) else None
        obj = nxt
    return None


def h5_sources(data: Any) -> list[H5BackendArray]:
    """The lazyh5 backend arrays an xarray/dask object reads from (one per dataset)."""
    found: dict[tuple[str, str], H5BackendArray] = {}
    if isinstance(data, da.Array):
        values: Iterable[Any] = dict(data.__dask_graph__()).values()
    else:
        values = [data]
    for value in values:
        arr = _unwrap(value)
        if arr is not None:
            found.setdefault((arr.store.filename, arr.path), arr)
    return list(found.values())


def precompute_shared(arr: da.Array) -> da.Array:
    """Compute first the parts of ``arr``'s graph that many output blocks share.

    ``(x - x.mean()) / x.std()`` makes every output block depend on a reduction over
    all of ``x``: computed in one go, dask must hold every block of ``x`` until the
    reduction is done (memory = the whole array), and an in-place write could
    overwrite blocks the reduction has not read yet. Computing the shared results
    first (reading ``x`` once for them), then substituting their values, leaves a
    graph whose blocks are independent: memory is a few blocks again.

    A key is *shared* when it leads to two or more output blocks; we compute the
    shared keys that feed two or more private (single-block) keys directly, i.e.
    the reductions broadcast back over the blocks.
    """
    outputs = list(flatten(arr.__dask_keys__()))
    if len(outputs) < 2:
        return arr
    dsk = dict(arr.__dask_graph__())
    deps = {k: get_dependencies(dsk, k) for k in dsk}
    dependents: dict[Any, list[Any]] = {k: [] for k in dsk}
    for k, ds in deps.items():
        for d in ds:
            dependents[d].append(k)
    # Walk from the outputs down (reverse topological order): a key's owner is the one
    # output block it leads to, or None when it leads to several.
    owner: dict[Any, Any] = {}
    order = _topological(dsk, deps)
    out_set = set(outputs)
    for k in reversed(order):
        if k in out_set:
            owner[k] = k
            continue
        owners = {owner.get(d) for d in dependents[k] if d in owner}
        if not owners:
            continue  # not needed by any output (culled later)
        owner[k] = owners.pop() if len(owners) == 1 and None not in owners else None
    frontier = [
        k
        for k, o in owner.items()
        if o is None
        and deps[k]  # a leaf (an array object, a constant) has nothing to compute
        and sum(1 for d in dependents[k] if owner.get(d) is not None) >= 2
    ]
    if not frontier:
        return arr
    values = compute_as_if_collection(da.Array, dsk, frontier)
    for k, v in zip(frontier, values, strict=True):
        dsk[k] = (_literal, v)
    return da.Array(dsk, arr.name, arr.chunks, meta=arr._meta)


def _literal(value: Any) -> Any:
    return value


def _topological(dsk: dict, deps: dict) -> list[Any]:
    seen: set[Any] = set()
    order: list[Any] = []
    for root in dsk:
        if root in seen:
            continue
        stack = [(root, iter(deps[root]))]
        seen.add(root)
        while stack:
            node, it = stack[-1]
            child = next(it, None)
            if child is None:
                stack.pop()
                order.append(node)
            elif child not in seen and child in dsk:
                seen.add(child)
                stack.append((child, iter(deps[child])))
    return order


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
) -> int:
    """Compute ``arr`` block by block, calling ``write(index, region, block)`` for each.

    Like :func:`dask.array.store`, but blocks listed in ``skip`` are culled from the
    graph (never computed), which ``resume=True`` needs and ``da.store`` cannot do.
    Each block is written as soon as it is computed, so memory stays at a few blocks
    with dask's depth-first ordering. Returns the number of blocks written.
    """
    skip = set(skip)
    regions = block_regions(arr.chunks)
    todo = [idx for idx in regions if idx not in skip]
    if not todo:
        return 0
    name = "lazyh5-store-" + tokenize(arr.name, desc, len(todo))
    bar = progress_bar(len(todo), desc, progress)

    def task(block: np.ndarray, idx: tuple[int, ...], region: tuple[slice, ...]) -> None:
        write(idx, region, np.asarray(block))
        bar.update(1)

    dsk = {(name, *idx): (task, (arr.name, *idx), idx, regions[idx]) for idx in todo}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[arr])
    try:
        with dask.config.set(scheduler=scheduler) if scheduler else _nullcontext():
            compute_as_if_collection(da.Array, graph, list(dsk))
    finally:
        bar.close()
    return len(todo)


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
