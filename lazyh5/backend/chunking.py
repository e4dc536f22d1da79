"""The two chunk rules: dask chunks of a read, and HDF5 chunks of a new dataset.

:func:`dask_chunks` sizes the dask chunks of a variable from its HDF5 chunks and the
memory budget: whole HDF5 chunks each. The rule (documented in ``docs/concepts.md``,
"What bounds memory"): a dask chunk holds at most ``memory_budget / max(threads, 8)``
bytes **counted as float64**, i.e. that many bytes divided by ``max(itemsize, 8)``
elements, in whole HDF5 chunks along every axis and never less than one HDF5 chunk.
Counting as float64 keeps ``ds["image"] / 255`` of a uint8 file as small as the same
expression over float64 data (chunks sized by their stored bytes would make a 128 MiB
uint8 chunk 1 GiB of float64 per thread). Dividing by at least 8 keeps a default chunk
(16 MiB as float64) no bigger than a default BatchLoader block, so feeding a transformed
Dataset computes each chunk once.

:func:`row_chunks` chooses the HDF5 chunks of a dataset lazyh5 creates
(:func:`lazyh5.create`, :func:`lazyh5.to_hdf5`, ``lazyh5 rechunk``): whole rows along the
sample axis, about 1 MiB each. Training reads whole samples, so a chunk spans every
other axis (h5py's own guess splits inner axes, which makes each sample cost several
chunk decodes), and 1 MiB is h5py's default chunk cache, so a per-batch reader decodes
each chunk once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import h5py
import numpy as np
import numpy.typing as npt
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
#: Most decoded bytes per HDF5 chunk of :func:`row_chunks` (unless one row is bigger).
ROW_CHUNK_BYTES = 1 << 20
# HDF5 refuses chunks of 4 GiB or more.
_HDF5_MAX_CHUNK_BYTES = (1 << 32) - 1


def chunk_memory(budget: int | str | None = None, threads: int | None = None) -> int:
    """Bytes (as float64) one dask chunk may take: the budget shared by the threads.

    >>> chunk_memory("128MiB", threads=16) // 2**20
    8
    >>> chunk_memory("128MiB", threads=2) // 2**20  # shared by at least 8
    16
    """
    budget = parse_bytes(budget) if budget is not None else options.memory_budget()
    return max(1, budget // max(threads or options.threads(), _MIN_SHARES))


def dask_chunks(
    shape: tuple[int, ...],
    hdf5_chunks: tuple[int, ...] | None,
    dtype: np.dtype,
    limit: int | str | None = None,
) -> tuple[int, ...]:
    """Dask chunk sizes of at most ``limit`` bytes once promoted to float64.

    ``limit`` defaults to :func:`chunk_memory`. Each size is a whole multiple of the
    HDF5 chunk along that axis (or the full axis), so every HDF5 chunk is decoded by
    exactly one dask task; a single HDF5 chunk bigger than ``limit`` is kept whole.

    >>> dask_chunks((200_000, 32, 32, 3), (256, 32, 32, 3), np.dtype("u1"), "16MiB")
    (512, 32, 32, 3)
    >>> dask_chunks((200_000, 32, 32, 3), (256, 32, 32, 3), np.dtype("f4"), "1MiB")
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
    planned = tuple(max(c[0], 1) for c in chunks)  # an empty axis has chunks (0,)
    if hdf5_chunks is None:
        return planned
    # dask's "auto" splits a previous chunk bigger than the limit; an HDF5 chunk is the
    # smallest unit that can be read without decoding it twice.
    return tuple(max(p, min(h, n)) for p, h, n in zip(planned, hdf5_chunks, shape, strict=True))


def row_bytes(shape: Sequence[int], dtype: npt.DTypeLike, axis: int = 0) -> int:
    """Decoded bytes of one row (one index along ``axis``), at least 1.

    >>> row_bytes((1000, 32, 32, 3), np.dtype("f4"))
    12288
    """
    inner = math.prod(int(n) for i, n in enumerate(shape) if i != axis)
    return max(1, inner * np.dtype(dtype).itemsize)


def row_chunks(
    shape: Sequence[int],
    dtype: npt.DTypeLike,
    axis: int = 0,
    *,
    limit: int = ROW_CHUNK_BYTES,
    power_of_two: bool = False,
) -> tuple[int, ...] | None:
    """HDF5 chunks of whole rows along ``axis``, as many rows as fit in ``limit`` bytes.

    Every other axis is whole; the rows per chunk are at least 1 and at most the rows
    there are. With ``power_of_two`` the rows are rounded down to a power of two, so
    batches of 32 or 64 rows start on chunk edges (the training layout of
    ``lazyh5 rechunk --for-training``). Returns ``None`` for scalars (HDF5 cannot chunk
    them); a row too big for one HDF5 chunk (4 GiB) gets h5py's guess instead.

    Parameters
    ----------
    shape, dtype
        The variable's shape and dtype.
    axis
        The sample axis.
    limit
        Most decoded bytes per chunk (unless one row is bigger).
    power_of_two
        Round the rows per chunk down to a power of two.

    Examples
    --------
    >>> row_chunks((20_000, 32, 32, 3), "u1")        # 341 rows of 3 KiB
    (341, 32, 32, 3)
    >>> row_chunks((100_000, 32, 32, 3), "u1", power_of_two=True)
    (256, 32, 32, 3)
    >>> row_chunks((100_000,), "i8")                  # capped at the rows there are
    (100000,)
    >>> row_chunks((10, 1024, 1024, 3), "f4")         # 12 MiB rows: one row per chunk
    (1, 1024, 1024, 3)
    >>> row_chunks((64, 100), "f8", axis=1, power_of_two=True)  # samples along axis 1
    (64, 100)
    """
    if len(shape) == 0:
        return None
    itemsize = np.dtype(dtype).itemsize
    row = row_bytes(shape, dtype, axis)
    if row > _HDF5_MAX_CHUNK_BYTES:
        return tuple(h5py.filters.guess_chunk(tuple(shape), None, itemsize))
    fits = limit // row
    if power_of_two:
        fits = 2 ** int(math.log2(max(fits, 1)))
    rows = max(1, min(fits, int(shape[axis])))
    return tuple(rows if i == axis else max(int(n), 1) for i, n in enumerate(shape))
