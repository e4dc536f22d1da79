"""What limits a feed, from the fed variables' layout and the measured rates, and the
layout to recommend (keep it, or the ``lazyh5 rechunk`` command to run)."""

from __future__ import annotations

import math
import os
from typing import Any

from .._filters import KNOWN_FILTERS
from ..backend import decode
from ..feed.layout import MAX_CHUNK_BYTES, MIN_CHUNK_BYTES
from .variables import FedVariable, human

# Filters lazyh5 decodes in parallel threads (lzf needs imagecodecs, blosc/zstd/lz4
# numcodecs); others are decoded by h5py, one at a time.
_PARALLEL_FILTERS = {KNOWN_FILTERS[code] for code in decode.DECODERS if code in KNOWN_FILTERS}
# Filters that decode fast; a file using others (gzip, szip...) feeds faster with lzf.
_FAST_FILTERS = {"lzf", "shuffle", "zstd", "lz4", "blosc", "blosc2", "bitshuffle"}
# BatchLoader's default block_size.
_BLOCK_TARGET = 16 << 20
# Above this many chunks per loader block, HDF5's per-chunk cost shows.
_MANY_CHUNKS = 256


def _named(fed: list[FedVariable]) -> str:
    return ", ".join(f"'{v.name}'" for v in fed)


def _chunks_per_block(v: FedVariable, block_rows: int) -> int:
    return math.ceil(block_rows / (v.rows_per_chunk or 1)) * v.splits_rows


def _filter_limits(fed: list[FedVariable]) -> list[str]:
    """One line per kind of filter pipeline among the variables that matter."""
    x, out = fed[0], []
    if not x.filters:
        out.append(f"'{x.name}' is uncompressed: reading it is a copy from the page cache")
    gzip = [v for v in fed if "gzip" in v.filters]
    if gzip:
        out.append(
            f"{_named(gzip)}: gzip decodes at roughly 100-300 MB/s per core (lazyh5 spreads it "
            "over threads, a per-batch h5py loop does not); lzf, zstd or lz4 decode several "
            "times faster"
        )
    serial: dict[str, list[FedVariable]] = {}
    for v in fed:
        slow = "+".join(f for f in v.filters if f not in _PARALLEL_FILTERS)
        if slow:
            serial.setdefault(slow, []).append(v)
    if (os.cpu_count() or 1) > 1:
        for label, vs in serial.items():
            extra = " (install imagecodecs to decode lzf in parallel)" if label == "lzf" else ""
            out.append(
                f"{_named(vs)}: {label} is decoded by h5py, one chunk at a time under its "
                f"global lock, so one core decodes (lazyh5 decodes "
                f"{', '.join(sorted(_PARALLEL_FILTERS))} in parallel threads){extra}"
            )
    for v in fed:
        if v.filters and v.stored_bytes >= 0.95 * v.logical_bytes:
            out.append(
                f"'{v.name}': {v.compression} does not compress this data (stored "
                f"{human(v.stored_bytes)} of {human(v.logical_bytes)}): it saves no space "
                "(lazyh5 copies whole-row chunks a filter left as is straight from the file, "
                "like uncompressed ones)"
            )
    return out


def _chunk_limits(
    v: FedVariable, is_x: bool, bs: int, block_rows: int, block_bytes: int
) -> list[str]:
    """What the chunks of one (chunked) variable cost the feed."""
    out = []
    size = human(v.chunk_bytes or 0)
    if v.splits_rows > 1:
        out.append(
            f"'{v.name}': chunks {tuple(v.chunks or ())} split each sample over {v.splits_rows} "
            f"chunks, so every batch and block decodes {v.splits_rows}x as many chunks"
        )
    if v.filters and (v.chunk_bytes or 0) > v.chunk_cache_bytes and (v.rows_per_chunk or 1) > bs:
        out.append(
            f"'{v.name}': a {size} chunk does not fit h5py's {human(v.chunk_cache_bytes)} "
            f"chunk cache, so the per-batch h5py loop decodes each chunk about "
            f"{(v.rows_per_chunk or 1) / bs:.0f} times ({v.rows_per_chunk} rows per chunk / "
            f"batch {bs}); lazyh5 decodes each chunk once per epoch"
        )
    if is_x and v.filters and (v.chunk_bytes or 0) < MIN_CHUNK_BYTES:
        out.append(
            f"'{v.name}': {size} chunks are small: below {human(MIN_CHUNK_BYTES)} lazyh5 "
            "lets h5py decode them, one at a time, and per-chunk overhead dominates"
        )
    per_block = _chunks_per_block(v, block_rows)
    if per_block > _MANY_CHUNKS:
        out.append(
            f"'{v.name}': a loader block of {block_rows} rows touches {per_block} chunks of "
            f"{size}: HDF5's cost per chunk (tens of µs) adds up"
        )
    if is_x and (v.chunk_bytes or 0) > block_bytes:
        out.append(
            f"'{v.name}': {size} chunks are bigger than the loader's block target, so each "
            "block is a whole chunk: memory holds up to 7 of them (window 4 + prefetch 2 + "
            "1) and shuffling mixes whole chunks"
        )
    return out


def _rate_limits(fed: list[FedVariable], bs: int, block_rows: int, methods: dict) -> list[str]:
    """What the measured rates say, compared with each other."""
    out = []
    rate = {k: m["samples_per_s"] for k, m in methods.items()}
    inorder, ceiling = rate["lazyh5 in order"], rate["h5py-blocks"]
    if ceiling > 0 and inorder / ceiling >= 0.9:
        out.append(
            f"the loader in order runs at {inorder / ceiling:.2f}x a single-thread h5py read of "
            "the same blocks: reading and decoding the file is what limits it"
        )
    elif ceiling > 0 and inorder / ceiling < 0.6 and not reasons(fed, block_rows):
        out.append(
            f"the loader in order reached only {inorder / ceiling:.2f}x a single-thread h5py "
            "read of the same blocks: its own work (a dask compute per block, slicing "
            f"{bs}-row batches, a prefetch thread) costs more than reading here; larger "
            "batches amortise it, and a busy machine slows a threaded loader most"
        )
    if not fed[0].filters and inorder < rate["h5py-batches"]:
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


def limits(
    fed: list[FedVariable], bs: int, block_rows: int, block_bytes: int, methods: dict[str, Any]
) -> list[str]:
    """What limits this feed, from the layout and the measured rates."""
    x = fed[0]
    out: list[str] = []
    if x.chunks is None:
        out.append(
            f"'{x.name}' is contiguous (no HDF5 chunks): reads are plain copies, but it cannot "
            "be compressed, and the loader's blocks are cut at any row"
        )
    for v in fed:
        if v.chunks is not None:
            out.extend(_chunk_limits(v, v is x, bs, block_rows, block_bytes))
    out.extend(_filter_limits(fed))
    out.extend(_rate_limits(fed, bs, block_rows, methods))
    return out


def _problems(v: FedVariable, block_rows: int, heavy: bool) -> list[str]:
    """Short reasons why ``v``'s layout does not suit batch feeding (empty: it does).

    Chunk size and filter matter for ``heavy`` variables (the inputs); for the light
    ones (labels) only the number of chunks a block touches does.
    """
    if v.chunks is None:
        return []
    out = []
    per_block = _chunks_per_block(v, block_rows)
    if v.splits_rows > 1:
        out.append(f"'{v.name}' spreads each sample over {v.splits_rows} chunks")
    elif per_block > _MANY_CHUNKS:
        out.append(f"'{v.name}' needs {per_block} chunks per loader block")
    if not heavy:
        return out
    big = (v.rows_per_chunk or 1) > 1  # a chunk of one huge row is as small as rows get
    if big and v.filters and (v.chunk_bytes or 0) > max(MAX_CHUNK_BYTES, v.chunk_cache_bytes):
        out.append(
            f"'{v.name}' chunks of {human(v.chunk_bytes or 0)} overflow h5py's chunk cache "
            "(per-batch readers decode each one many times)"
        )
    elif big and (v.chunk_bytes or 0) > _BLOCK_TARGET:
        out.append(
            f"'{v.name}' chunks of {human(v.chunk_bytes or 0)} exceed a loader block "
            "(coarse shuffling, more memory)"
        )
    small = (v.chunk_bytes or 0) < MIN_CHUNK_BYTES and v.rows_per_chunk != v.shape[v.axis]
    if v.filters and small and per_block <= _MANY_CHUNKS:
        out.append(f"'{v.name}' chunks of {human(v.chunk_bytes or 0)} are small to decode")
    if [f for f in v.filters if f not in _FAST_FILTERS]:
        out.append(f"'{v.name}' uses {v.compression}, slow to decode")
    return out


def reasons(fed: list[FedVariable], block_rows: int) -> list[str]:
    """Why the layout does not suit batch feeding, all variables together (empty: it does)."""
    total = sum(v.row_bytes for v in fed)
    return [r for v in fed for r in _problems(v, block_rows, v.row_bytes >= total / 4)]


def recommend(path: str, group: str | None, fed: list[FedVariable], block_rows: int) -> str:
    """One recommendation: keep the layout, or the ``lazyh5 rechunk`` command to run."""
    x = fed[0]
    why = reasons(fed, block_rows)
    rows = x.recommended_chunks[x.axis] if x.recommended_chunks else 1
    size = human(rows * x.row_bytes)
    command = f"lazyh5 rechunk {path} {_out_name(path)} --for-training"
    if group:
        command += f" --group {group}"
    if x.chunks is None and not why:
        return (
            f"keep this layout for speed: contiguous, uncompressed '{x.name}' is the fastest "
            f"to read from the page cache. To store it compressed: `{command}` "
            f"({rows} rows per chunk, {size}, lzf; smaller only if lzf compresses this data)"
        )
    if not why:
        return (
            f"keep this layout: '{x.name}' has {x.rows_per_chunk} rows per "
            f"{human(x.chunk_bytes or 0)} chunk of whole samples, "
            f"{x.compression or 'uncompressed'}, which suits batch feeding; nothing to rechunk"
        )
    fast = [f for f in x.filters if f in ("zstd", "lz4", "blosc")]
    if not x.filters or x.stored_bytes >= 0.95 * x.logical_bytes:
        comp, command = "no compression", command + " --compression none"
    elif fast:
        comp, command = fast[0], command + f" --compression {fast[0]}"
    else:
        comp = "lzf"
    return f"rechunk to {rows} rows per chunk ({size}) with {comp}: `{command}` ({'; '.join(why)})"


def _out_name(path: str) -> str:
    stem, ext = os.path.splitext(path)
    return f"{stem}_train{ext or '.h5'}"
