"""The timed passes over the same rows of the same file, and :func:`bench`, the report.

Measures samples/s of :class:`lazyh5.BatchLoader` (in order and shuffled) against a
hand-written h5py loop ``X[i:i+bs], Y[i:i+bs]`` and a single-thread h5py block read, in the
same run, after a warm-up read that brings those rows into the page cache. Big files are
measured on a prefix of rows, each method for a few seconds.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import h5py

from .._files import open_h5file
from .diagnose import limits, recommend
from .variables import describe, open_fed, prefix_rows

DEFAULT_SECONDS = 3.0

OnePass = Callable[[int], Iterator[int]]  # epoch number -> the lengths of its batches


def _key(axis: int, a: int, b: int) -> tuple[slice, ...]:
    return (slice(None),) * axis + (slice(a, b),)


def _measure(one_pass: OnePass, seconds: float | None, limit: int | None) -> dict[str, float]:
    """Run passes (each yields batch lengths) until ``seconds`` elapse or ``limit`` rows."""
    samples, k = 0, 0
    start = time.perf_counter()
    deadline = start + seconds if seconds else math.inf
    done = False
    while not done:
        batches = one_pass(k)
        try:
            for got in batches:
                samples += got
                if (limit is not None and samples >= limit) or time.perf_counter() >= deadline:
                    done = True
                    break
            else:
                done = limit is not None or samples == 0
        finally:
            with contextlib.suppress(AttributeError):
                batches.close()  # a loader's epoch: stops its prefetch thread now
        k += 1
    elapsed = time.perf_counter() - start
    return {"samples": samples, "seconds": elapsed, "samples_per_s": samples / elapsed}


def _h5py_batches(dsets: list[h5py.Dataset], axes: list[int], rows: int, bs: int) -> OnePass:
    def one_pass(_k: int) -> Iterator[int]:
        for i in range(0, rows, bs):
            j = min(i + bs, rows)
            for d, ax in zip(dsets, axes, strict=True):
                d[_key(ax, i, j)]
            yield j - i

    return one_pass


def _h5py_blocks(
    dsets: list[h5py.Dataset], axes: list[int], rows: int, bs: int, block: int
) -> OnePass:
    def one_pass(_k: int) -> Iterator[int]:
        for s in range(0, rows, block):
            e = min(s + block, rows)
            arrays = [d[_key(ax, s, e)] for d, ax in zip(dsets, axes, strict=True)]
            for i in range(0, e - s, bs):
                j = min(i + bs, e - s)
                for a, ax in zip(arrays, axes, strict=True):
                    a[_key(ax, i, j)]
                yield j - i

    return one_pass


def _loader_pass(loader: Any) -> OnePass:
    def one_pass(k: int) -> Iterator[int]:
        for batch in loader.batches(epoch=k):
            yield len(batch[0] if isinstance(batch, tuple) else batch)

    return one_pass


def _warm_up(dsets: list[h5py.Dataset], axes: list[int], rows: int, block: int) -> float:
    """Read the measured rows once (page cache); returns the seconds it took."""
    start = time.perf_counter()
    for s in range(0, rows, block):
        for d, ax in zip(dsets, axes, strict=True):
            d[_key(ax, s, min(s + block, rows))]
    return time.perf_counter() - start


def _runs(
    dsets: list[h5py.Dataset], axes: list[int], rows: int, bs: int, loaders: dict[bool, Any]
) -> dict[str, tuple[OnePass, str]]:
    """The four methods measured: their passes and what each one is."""
    block_rows = int(loaders[False].plan.sizes.max())
    return {
        "h5py-batches": (
            _h5py_batches(dsets, axes, rows, bs),
            f"X[i:i+{bs}], Y[i:i+{bs}] in order: the hand-written loop",
        ),
        "h5py-blocks": (
            _h5py_blocks(dsets, axes, rows, bs, block_rows),
            f"runs of {block_rows} rows read at once, sliced (one thread)",
        ),
        "lazyh5 in order": (_loader_pass(loaders[False]), "BatchLoader(shuffle=False)"),
        "lazyh5 shuffled": (
            _loader_pass(loaders[True]),
            f"BatchLoader(shuffle=True), window of {loaders[True].window} blocks",
        ),
    }


def bench(
    file: str,
    x: str,
    y: str | None = None,
    *,
    group: str | None = None,
    dim: str | None = None,
    batch_size: int = 32,
    seconds: float | None = None,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """Measure and diagnose the feed of ``x`` (and ``y``) in ``file``; returns the report.

    Each method runs ``seconds`` (default :data:`DEFAULT_SECONDS`), or one pass over the
    first ``max_samples`` rows when that is given.
    """
    ds, dim, names = open_fed(file, x, y, group, dim)
    path, bs = ds[names[0]].encoding["source"], batch_size
    n = int(ds.sizes[dim])
    seconds = None if max_samples else (seconds or DEFAULT_SECONDS)
    with open_h5file(path, "r") as f:
        fed = [describe(f, ds, name, dim) for name in names]
        rows = prefix_rows(n, fed, max_samples)
        y = y if y else None
        loaders = _loaders(ds, x, y, dim, bs, rows)
        plan = loaders[False].plan
        block_rows = int(plan.sizes.max())
        dsets, axes = [f[v.path] for v in fed], [v.axis for v in fed]
        warm = _warm_up(dsets, axes, rows, block_rows)
        with contextlib.closing(loaders[True].batches(epoch=0)) as first:
            next(first)  # the first compute: imports, graph code
        limit = rows if max_samples else None
        methods = {
            name: {**_measure(one_pass, seconds, limit), "what": what}
            for name, (one_pass, what) in _runs(dsets, axes, rows, bs, loaders).items()
        }
    _add_ratios(methods)
    block_bytes = block_rows * sum(v.row_bytes for v in fed)
    return {
        "file": path,
        "group": group,
        "x": x,
        "y": y,
        "dim": dim,
        "rows": rows,
        "rows_in_file": n,
        "batch_size": bs,
        "seconds_per_method": seconds,
        "max_samples": max_samples,
        "warm_up_seconds": warm,
        "methods": methods,
        "chunks": {v.name: asdict(v) for v in fed},
        "compression": {v.name: v.compression for v in fed},
        "loader_block": {"rows": block_rows, "bytes": block_bytes, "blocks": len(plan)},
        "limits": limits(fed, bs, block_rows, block_bytes, methods),
        "recommendation": recommend(path, group, fed, block_rows),
    }


def _loaders(ds: Any, x: str, y: str | None, dim: str, bs: int, rows: int) -> dict[bool, Any]:
    """The loaders measured, in order (``False``) and shuffled (``True``), on ``rows`` rows."""
    from ..feed.loader import BatchLoader  # dask's scheduler, threads: only when measuring

    return {
        shuffle: BatchLoader(ds, x, y, dim=dim, batch_size=bs, shuffle=shuffle, seed=0, end=rows)
        for shuffle in (False, True)
    }


def _add_ratios(methods: dict[str, dict[str, Any]]) -> None:
    """Each method's rate relative to the hand-written h5py loop's."""
    base = methods["h5py-batches"]["samples_per_s"]
    for m in methods.values():
        m["ratio_vs_h5py"] = m["samples_per_s"] / base if base > 0 else float("nan")
