"""``lazyh5 bench FILE --x VAR --y VAR``: how fast a file feeds training, and what limits it.

Measures samples/s of :class:`lazyh5.BatchLoader` (in order and shuffled) against a
hand-written h5py loop ``X[i:i+bs], Y[i:i+bs]`` and a single-thread h5py block read, on
the same rows of the same file, in the same run, after a warm-up read that brings those
rows into the page cache. Big files are measured on a prefix of rows, each method for a
few seconds, so the command finishes in well under a minute. Then it reads the layout
(chunks along the sample axis, chunk bytes, filters, chunk cache, the loader's blocks),
says what limits the feed and recommends a layout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import h5py
import xarray as xr

from .._files import check_readable_hdf5, open_h5file
from .._filters import KNOWN_FILTERS, compression_label, filter_pipeline
from ..backend import decode
from ..backend.chunking import row_chunks
from ..errors import DimensionError, InvalidArgumentError, ObjectNotFoundError
from ..feed.layout import (
    H5PY_CHUNK_CACHE_BYTES,
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    row_bytes,
    splits_rows,
)

DEFAULT_SECONDS = 3.0
# A prefix of about this many bytes (all fed variables) is measured on big files: the
# warm-up reads it once, and a few seconds per method cover it at least once.
_PREFIX_BYTES = 256 << 20
# Filters lazyh5 decodes in parallel threads (lzf needs imagecodecs, blosc/zstd/lz4
# numcodecs); others are decoded by h5py, one at a time.
_PARALLEL_FILTERS = {KNOWN_FILTERS[code] for code in decode.DECODERS if code in KNOWN_FILTERS}
# Filters that decode fast; a file using others (gzip, szip...) feeds faster with lzf.
_FAST_FILTERS = {"lzf", "shuffle", "zstd", "lz4", "blosc", "blosc2", "bitshuffle"}
# BatchLoader's default block_size.
_BLOCK_TARGET = 16 << 20
# Above this many chunks per loader block, HDF5's per-chunk cost shows.
_MANY_CHUNKS = 256


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure a file as a training feed (lazyh5 vs an h5py loop) and explain its limits",
    )
    p.add_argument("file", help="HDF5 file")
    p.add_argument("--x", required=True, metavar="VAR", help="input variable (e.g. image)")
    p.add_argument("--y", default=None, metavar="VAR", help="target variable (e.g. label)")
    p.add_argument("--group", default=None, help="group holding the variables")
    p.add_argument(
        "--dim", default=None, help="sample dimension (default: 'sample', else the first of --x)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="rows per batch (default: 32)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"time per method (default: {DEFAULT_SECONDS:g}), on a prefix of about "
        f"{_PREFIX_BYTES >> 20} MiB of rows",
    )
    budget.add_argument(
        "--max-samples",
        type=int,
        default=None,
        metavar="N",
        help="instead of a time: one pass over the first N rows per method",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


@dataclass
class _Layout:
    """What the file says about one fed variable (from metadata only)."""

    name: str
    path: str
    shape: list[int]
    dtype: str
    axis: int
    chunks: list[int] | None
    compression: str | None
    filters: list[str]
    row_bytes: int
    rows_per_chunk: int | None
    chunk_bytes: int | None
    splits_rows: int
    chunk_cache_bytes: int
    logical_bytes: int
    stored_bytes: int
    recommended_chunks: list[int] | None


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _open(args: argparse.Namespace) -> tuple[xr.Dataset, str, list[str]]:
    """The lazily opened dataset, the sample dimension and the fed variables, checked."""
    from ..open import open_dataset

    path = check_readable_hdf5(args.file)
    if args.batch_size <= 0:
        raise InvalidArgumentError(
            f"--batch-size must be a positive integer, got {args.batch_size}"
        )
    if args.seconds is not None and not args.seconds > 0:
        raise InvalidArgumentError(f"--seconds must be positive, got {args.seconds}")
    if args.max_samples is not None and args.max_samples <= 0:
        raise InvalidArgumentError(f"--max-samples must be positive, got {args.max_samples}")
    ds = open_dataset(path, group=args.group)
    where = f"'{path}'" + (f" group '{args.group}'" if args.group else "")
    names = [args.x] + ([args.y] if args.y and args.y != args.x else [])
    for name in names:
        if name not in ds.variables or "lazyh5_path" not in ds[name].encoding:
            raise ObjectNotFoundError(
                f"no dataset '{name}' in {where}; available: {sorted(map(str, ds.data_vars))}"
            )
    x = ds[args.x]
    dim = args.dim or ("sample" if "sample" in x.dims else (x.dims[0] if x.dims else None))
    for name in names:
        if dim is None or dim not in ds[name].dims:
            raise DimensionError(
                f"'{name}' in {where} has dims {ds[name].dims}, without the sample dimension "
                f"'{dim}'; pass --dim, or --x/--y variables that share it"
            )
    return ds, str(dim), names


def _layout(f: h5py.File, ds: xr.Dataset, name: str, dim: str) -> _Layout:
    var = ds[name]
    dset = f[var.encoding["lazyh5_path"]]
    axis = var.dims.index(dim)
    shape = tuple(int(n) for n in dset.shape)
    rb = row_bytes(shape, dset.dtype, axis)
    chunks = list(dset.chunks) if dset.chunks else None
    rows = chunks[axis] if chunks else None
    chunk_bytes = math.prod(chunks) * dset.dtype.itemsize if chunks else None
    try:
        cache = int(dset.id.get_access_plist().get_chunk_cache()[1])
    except (AttributeError, OSError):
        cache = H5PY_CHUNK_CACHE_BYTES
    recommended = row_chunks(shape, dset.dtype, axis, power_of_two=True)
    return _Layout(
        name=name,
        path=dset.name,
        shape=list(shape),
        dtype=str(dset.dtype),
        axis=axis,
        chunks=chunks,
        compression=compression_label(dset),
        filters=[label for _code, label, _values in filter_pipeline(dset)],
        row_bytes=rb,
        rows_per_chunk=rows,
        chunk_bytes=chunk_bytes,
        splits_rows=splits_rows(chunks, shape, axis),
        chunk_cache_bytes=cache,
        logical_bytes=int(dset.size * dset.dtype.itemsize),
        stored_bytes=int(dset.id.get_storage_size()),
        recommended_chunks=list(recommended) if recommended else None,
    )


def _prefix_rows(n: int, layouts: list[_Layout], max_samples: int | None) -> int:
    """Rows measured: the first ``max_samples``, or about ``_PREFIX_BYTES`` worth."""
    if max_samples is not None:
        return min(n, max_samples)
    rows = _PREFIX_BYTES // sum(v.row_bytes for v in layouts)
    unit = layouts[0].rows_per_chunk or 1
    if rows >= unit:
        rows = rows // unit * unit  # whole chunks of x
    return max(1, min(n, max(rows, unit)))


def _key(axis: int, a: int, b: int) -> tuple[slice, ...]:
    return (slice(None),) * axis + (slice(a, b),)


def _measure(
    one_pass: Callable[[int], Iterator[int]], seconds: float | None, limit: int | None
) -> dict[str, float]:
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


def _h5py_batches(dsets: list[h5py.Dataset], axes: list[int], rows: int, bs: int):
    def one_pass(_k: int) -> Iterator[int]:
        for i in range(0, rows, bs):
            j = min(i + bs, rows)
            for d, ax in zip(dsets, axes, strict=True):
                d[_key(ax, i, j)]
            yield j - i

    return one_pass


def _h5py_blocks(dsets: list[h5py.Dataset], axes: list[int], rows: int, bs: int, block: int):
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


def _loader_pass(loader: Any):
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


def _filter_limits(layouts: list[_Layout]) -> list[str]:
    """One line per kind of filter pipeline among the variables that matter."""
    x, out = layouts[0], []
    named = lambda vs: ", ".join(f"'{v.name}'" for v in vs)  # noqa: E731
    if not x.filters:
        out.append(f"'{x.name}' is uncompressed: reading it is a copy from the page cache")
    gzip = [v for v in layouts if "gzip" in v.filters]
    if gzip:
        out.append(
            f"{named(gzip)}: gzip decodes at roughly 100-300 MB/s per core (lazyh5 spreads it "
            "over threads, a per-batch h5py loop does not); lzf, zstd or lz4 decode several "
            "times faster"
        )
    serial: dict[str, list[_Layout]] = {}
    for v in layouts:
        slow = "+".join(f for f in v.filters if f not in _PARALLEL_FILTERS)
        if slow:
            serial.setdefault(slow, []).append(v)
    if (os.cpu_count() or 1) > 1:
        for label, vs in serial.items():
            extra = " (install imagecodecs to decode lzf in parallel)" if label == "lzf" else ""
            out.append(
                f"{named(vs)}: {label} is decoded by h5py, one chunk at a time under its "
                f"global lock, so one core decodes (lazyh5 decodes "
                f"{', '.join(sorted(_PARALLEL_FILTERS))} in parallel threads){extra}"
            )
    for v in layouts:
        if v.filters and v.stored_bytes >= 0.95 * v.logical_bytes:
            out.append(
                f"'{v.name}': {v.compression} does not compress this data (stored "
                f"{_human(v.stored_bytes)} of {_human(v.logical_bytes)}): it saves no space "
                "(lazyh5 copies whole-row chunks a filter left as is straight from the file, "
                "like uncompressed ones)"
            )
    return out


def _limits(
    layouts: list[_Layout], bs: int, block_rows: int, block_bytes: int, methods: dict
) -> list[str]:
    """What limits this feed, from the layout and the measured rates."""
    layout_problems = _reasons(layouts, block_rows)
    x = layouts[0]
    out: list[str] = []
    if x.chunks is None:
        out.append(
            f"'{x.name}' is contiguous (no HDF5 chunks): reads are plain copies, but it cannot "
            "be compressed, and the loader's blocks are cut at any row"
        )
    for v in layouts:
        if v.chunks is None:
            continue
        size = _human(v.chunk_bytes or 0)
        if v.splits_rows > 1:
            out.append(
                f"'{v.name}': chunks {tuple(v.chunks)} split each sample over {v.splits_rows} "
                f"chunks, so every batch and block decodes {v.splits_rows}x as many chunks"
            )
        if (
            v.filters
            and (v.chunk_bytes or 0) > v.chunk_cache_bytes
            and (v.rows_per_chunk or 1) > bs
        ):
            out.append(
                f"'{v.name}': a {size} chunk does not fit h5py's {_human(v.chunk_cache_bytes)} "
                f"chunk cache, so the per-batch h5py loop decodes each chunk about "
                f"{v.rows_per_chunk / bs:.0f} times ({v.rows_per_chunk} rows per chunk / "
                f"batch {bs}); lazyh5 decodes each chunk once per epoch"
            )
        if v is x and v.filters and (v.chunk_bytes or 0) < MIN_CHUNK_BYTES:
            out.append(
                f"'{v.name}': {size} chunks are small: below {_human(MIN_CHUNK_BYTES)} lazyh5 "
                "lets h5py decode them, one at a time, and per-chunk overhead dominates"
            )
        per_block = math.ceil(block_rows / (v.rows_per_chunk or 1)) * v.splits_rows
        if per_block > _MANY_CHUNKS:
            out.append(
                f"'{v.name}': a loader block of {block_rows} rows touches {per_block} chunks of "
                f"{size}: HDF5's cost per chunk (tens of µs) adds up"
            )
        if v is x and (v.chunk_bytes or 0) > block_bytes:
            out.append(
                f"'{v.name}': {size} chunks are bigger than the loader's block target, so each "
                "block is a whole chunk: memory holds up to 7 of them (window 4 + prefetch 2 + "
                "1) and shuffling mixes whole chunks"
            )
    out.extend(_filter_limits(layouts))
    rate = {k: m["samples_per_s"] for k, m in methods.items()}
    inorder, ceiling = rate["lazyh5 in order"], rate["h5py-blocks"]
    if ceiling > 0 and inorder / ceiling >= 0.9:
        out.append(
            f"the loader in order runs at {inorder / ceiling:.2f}x a single-thread h5py read of "
            "the same blocks: reading and decoding the file is what limits it"
        )
    elif ceiling > 0 and inorder / ceiling < 0.6 and not layout_problems:
        out.append(
            f"the loader in order reached only {inorder / ceiling:.2f}x a single-thread h5py "
            "read of the same blocks: its own work (a dask compute per block, slicing "
            f"{bs}-row batches, a prefetch thread) costs more than reading here; larger "
            "batches amortise it, and a busy machine slows a threaded loader most"
        )
    if not x.filters and inorder < rate["h5py-batches"]:
        out.append(
            "uncompressed rows in the page cache: the per-batch h5py loop copies each batch "
            "straight into a small buffer, while the loader first copies whole blocks "
            "(see docs/feeding.md, Performance); lazyh5 pays off with compression and shuffling"
        )
    shuffled = rate["lazyh5 shuffled"]
    if inorder > 0 and shuffled / inorder < 0.7:
        out.append(
            f"shuffling costs {1 - shuffled / inorder:.0%} of the in-order rate: rows are put "
            "in shuffled order across a window of 4 blocks before its first batch (see "
            "docs/feeding.md, Shuffling; a larger batch or block_size changes the balance)"
        )
    return out


def _problems(v: _Layout, block_rows: int, heavy: bool) -> list[str]:
    """Short reasons why ``v``'s layout does not suit batch feeding (empty: it does).

    Chunk size and filter matter for ``heavy`` variables (the inputs); for the light
    ones (labels) only the number of chunks a block touches does.
    """
    if v.chunks is None:
        return []
    out = []
    per_block = math.ceil(block_rows / (v.rows_per_chunk or 1)) * v.splits_rows
    if v.splits_rows > 1:
        out.append(f"'{v.name}' spreads each sample over {v.splits_rows} chunks")
    elif per_block > _MANY_CHUNKS:
        out.append(f"'{v.name}' needs {per_block} chunks per loader block")
    if not heavy:
        return out
    big = (v.rows_per_chunk or 1) > 1  # a chunk of one huge row is as small as rows get
    if big and v.filters and (v.chunk_bytes or 0) > max(MAX_CHUNK_BYTES, v.chunk_cache_bytes):
        out.append(
            f"'{v.name}' chunks of {_human(v.chunk_bytes or 0)} overflow h5py's chunk cache "
            "(per-batch readers decode each one many times)"
        )
    elif big and (v.chunk_bytes or 0) > _BLOCK_TARGET:
        out.append(
            f"'{v.name}' chunks of {_human(v.chunk_bytes or 0)} exceed a loader block "
            "(coarse shuffling, more memory)"
        )
    small = (v.chunk_bytes or 0) < MIN_CHUNK_BYTES and v.rows_per_chunk != v.shape[v.axis]
    if v.filters and small and per_block <= _MANY_CHUNKS:
        out.append(f"'{v.name}' chunks of {_human(v.chunk_bytes or 0)} are small to decode")
    if [f for f in v.filters if f not in _FAST_FILTERS]:
        out.append(f"'{v.name}' uses {v.compression}, slow to decode")
    return out


def _reasons(layouts: list[_Layout], block_rows: int) -> list[str]:
    total = sum(v.row_bytes for v in layouts)
    return [r for v in layouts for r in _problems(v, block_rows, v.row_bytes >= total / 4)]


def _recommend(path: str, group: str | None, layouts: list[_Layout], block_rows: int) -> str:
    """One recommendation: keep the layout, or the ``lazyh5 rechunk`` command to run."""
    x = layouts[0]
    reasons = _reasons(layouts, block_rows)
    rows = x.recommended_chunks[x.axis] if x.recommended_chunks else 1
    size = _human(rows * x.row_bytes)
    command = f"lazyh5 rechunk {path} {_out_name(path)} --for-training"
    if group:
        command += f" --group {group}"
    if x.chunks is None and not reasons:
        return (
            f"keep this layout for speed: contiguous, uncompressed '{x.name}' is the fastest "
            f"to read from the page cache. To store it compressed: `{command}` "
            f"({rows} rows per chunk, {size}, lzf; smaller only if lzf compresses this data)"
        )
    if not reasons:
        return (
            f"keep this layout: '{x.name}' has {x.rows_per_chunk} rows per "
            f"{_human(x.chunk_bytes or 0)} chunk of whole samples, "
            f"{x.compression or 'uncompressed'}, which suits batch feeding; nothing to rechunk"
        )
    fast = [f for f in x.filters if f in ("zstd", "lz4", "blosc")]
    if not x.filters or x.stored_bytes >= 0.95 * x.logical_bytes:
        comp, command = "no compression", command + " --compression none"
    elif fast:
        comp, command = fast[0], command + f" --compression {fast[0]}"
    else:
        comp = "lzf"
    return (
        f"rechunk to {rows} rows per chunk ({size}) with {comp}: `{command}` ({'; '.join(reasons)})"
    )


def _out_name(path: str) -> str:
    stem, ext = os.path.splitext(path)
    return f"{stem}_train{ext or '.h5'}"


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Measure and diagnose the feed of ``args.file``; returns the report."""
    from ..feed.loader import BatchLoader

    ds, dim, names = _open(args)
    path, bs = ds[names[0]].encoding["source"], args.batch_size
    n = int(ds.sizes[dim])
    seconds = None if args.max_samples else (args.seconds or DEFAULT_SECONDS)
    with open_h5file(path, "r") as f:
        layouts = [_layout(f, ds, name, dim) for name in names]
        rows = _prefix_rows(n, layouts, args.max_samples)
        y = args.y if args.y else None
        loaders = {
            shuffle: BatchLoader(
                ds, args.x, y, dim=dim, batch_size=bs, shuffle=shuffle, seed=0, end=rows
            )
            for shuffle in (False, True)
        }
        plan = loaders[False].plan
        block_rows = int(plan.sizes.max())
        block_bytes = block_rows * sum(v.row_bytes for v in layouts)
        dsets = [f[v.path] for v in layouts]
        axes = [v.axis for v in layouts]
        warm = _warm_up(dsets, axes, rows, block_rows)
        with contextlib.closing(loaders[True].batches(epoch=0)) as first:
            next(first)  # the first compute: imports, graph code
        limit = rows if args.max_samples else None
        runs = {
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
        methods = {}
        for name, (one_pass, what) in runs.items():
            methods[name] = {**_measure(one_pass, seconds, limit), "what": what}
    base = methods["h5py-batches"]["samples_per_s"]
    for m in methods.values():
        m["ratio_vs_h5py"] = m["samples_per_s"] / base if base > 0 else float("nan")
    return {
        "file": path,
        "group": args.group,
        "x": args.x,
        "y": y,
        "dim": dim,
        "rows": rows,
        "rows_in_file": n,
        "batch_size": bs,
        "seconds_per_method": seconds,
        "max_samples": args.max_samples,
        "warm_up_seconds": warm,
        "methods": methods,
        "chunks": {v.name: asdict(v) for v in layouts},
        "compression": {v.name: v.compression for v in layouts},
        "loader_block": {"rows": block_rows, "bytes": block_bytes, "blocks": len(plan)},
        "limits": _limits(layouts, bs, block_rows, block_bytes, methods),
        "recommendation": _recommend(path, args.group, layouts, block_rows),
    }


def render(report: dict[str, Any]) -> str:
    """The human-readable report: a table of rates, the layout, limits, recommendation."""
    lines = []
    variables = ", ".join(
        f"{k}={v['name']} {tuple(v['shape'])} {v['dtype']}"
        for k, v in zip(("x", "y"), report["chunks"].values(), strict=False)
    )
    lines.append(f"lazyh5 bench: {report['file']}  {variables}")
    budget = (
        f"{report['seconds_per_method']:g} s per method"
        if report["seconds_per_method"]
        else "one pass per method"
    )
    lines.append(
        f"rows 0:{report['rows']} of {report['rows_in_file']} along '{report['dim']}', "
        f"batch {report['batch_size']}, {budget}, after a warm-up read "
        f"({report['warm_up_seconds']:.1f} s)"
    )
    lines.append("")
    lines.append(f"{'method':<17}{'samples/s':>12}{'x h5py':>9}  what")
    for name, m in report["methods"].items():
        lines.append(
            f"{name:<17}{m['samples_per_s']:>12,.0f}{m['ratio_vs_h5py']:>8.2f}x  {m['what']}"
        )
    lines.append("")
    lines.append("layout")
    for v in report["chunks"].values():
        comp = v["compression"] or "uncompressed"
        if v["chunks"] is None:
            lines.append(f"  {v['name']:<10} contiguous, {comp}")
            continue
        lines.append(
            f"  {v['name']:<10} chunks {'x'.join(map(str, v['chunks']))}: "
            f"{v['rows_per_chunk']} row{'s' if v['rows_per_chunk'] != 1 else ''}, "
            f"{_human(v['chunk_bytes'])} per chunk, {comp}; "
            f"chunk cache {_human(v['chunk_cache_bytes'])}"
        )
    b = report["loader_block"]
    lines.append(
        f"  loader     blocks of {b['rows']} rows ({_human(b['bytes'])}), "
        f"{b['blocks']} in the measured rows"
    )
    lines.append("")
    lines.append("what limits this feed")
    lines.extend(f"  - {text}" for text in report["limits"])
    lines.append("")
    lines.append("recommendation")
    lines.append(f"  {report['recommendation']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = bench(args)
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0
