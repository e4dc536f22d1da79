"""Dask chunks planned from HDF5 chunks and the memory budget: whole HDF5 chunks each.

The rule (documented in ``docs/concepts.md``, "What bounds memory"): a dask chunk holds
at most ``memory_budget / max(threads, 8)`` bytes **counted as float64**, i.e. that many
bytes divided by ``max(itemsize, 8)`` elements, in whole HDF5 chunks along every axis and
never less than one HDF5 chunk. Counting as float64 is what keeps ``ds["image"] / 255``
of a uint8 file as small as the same expression over float64 data: before, chunks were
sized by their stored bytes, and a 128 MiB uint8 chunk became 1 GiB of float64 per
thread. Dividing by at least 8 keeps a default chunk (16 MiB as float64) no bigger than
a default BatchLoader block, so feeding a transformed Dataset computes each chunk once.
"""

from __future__ import annotations

import numpy as np
from dask.array.core import normalize_chunks
from dask.utils import parse_bytes

from .. import options

# Object (string) arrays have no fixed item size; assume short strings for planning.
_OBJECT_ITEMSIZE = 16
# What one element may become in a computation: numpy promotes integers and float32
# divided by a Python float to float64.
_PROMOTED = np.dtype("f8")
# The budget is shared by at least this many threads (see the module docstring).
_MIN_SHARES = 8


def chunk_memory(budget: int | str | None = None, threads: int | None = None) -> int:
    """Bytes (as float64) one dask chunk may take: the budget shared by the threads.

    >>> chunk_memory("128MiB", threads=16) // 2**20
    8
    >>> chunk_memory("128MiB", threads=2) // 2**20  # shared by at least 8
    16
    """
    budget = parse_bytes(budget) if budget is not None else options.memory_budget()
    return max(1, budget // max(threads or options.threads(), _MIN_SHARES))


def plan_chunks(
    shape: tuple[int, ...],
    hdf5_chunks: tuple[int, ...] | None,
    dtype: np.dtype,
    limit: int | str | None = None,
) -> tuple[int, ...]:
    """Dask chunk sizes of at most ``limit`` bytes once promoted to float64.

    ``limit`` defaults to :func:`chunk_memory`. Each size is a whole multiple of the
    HDF5 chunk along that axis (or the full axis), so every HDF5 chunk is decoded by
    exactly one dask task; a single HDF5 chunk bigger than ``limit`` is kept whole.

    >>> plan_chunks((200_000, 32, 32, 3), (256, 32, 32, 3), np.dtype("u1"), "16MiB")
    (512, 32, 32, 3)
    >>> plan_chunks((200_000, 32, 32, 3), (256, 32, 32, 3), np.dtype("f4"), "1MiB")
    (256, 32, 32, 3)
    """
    if len(shape) == 0:
        return ()
    limit = parse_bytes(limit) if limit is not None else chunk_memory()
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        dtype = np.dtype(f"S{_OBJECT_ITEMSIZE}")
    counted = _PROMOTED if dtype.itemsize <= _PROMOTED.itemsize else dtype
    chunks = normalize_chunks(
        "auto", shape, limit=limit, dtype=counted, previous_chunks=hdf5_chunks
    )
    planned = tuple(max(c[0], 1) if c else 1 for c in chunks)
    if hdf5_chunks is None:
        return planned
    # dask's "auto" splits a previous chunk bigger than the limit; an HDF5 chunk is the
    # smallest unit that can be read without decoding it twice.
    return tuple(max(p, min(h, n)) for p, h, n in zip(planned, hdf5_chunks, shape, strict=True))
