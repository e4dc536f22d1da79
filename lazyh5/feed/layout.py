"""HDF5 chunk layouts for batch feeding: what suits training, and what does not.

Used by ``lazyh5 rechunk --for-training`` (to choose chunks) and ``lazyh5 bench`` (to
explain what limits a feed). Training reads whole samples, a batch or a block of rows at
a time, so a good layout is a chunk of **whole rows** along the sample axis:

- every other axis whole, so one sample is never spread over several chunks;
- at least 64 KiB decoded (:data:`MIN_CHUNK_BYTES`), where lazyh5's parallel decoder
  takes over from h5py and per-chunk overhead is small;
- at most 1 MiB (:data:`MAX_CHUNK_BYTES`), h5py's default chunk cache, so per-batch
  readers (a hand-written ``X[i:i+32]`` loop, Keras' old ``HDF5Matrix``) decode each
  chunk once rather than once per batch;
- within that, as big as fits: lazyh5's loader pays a fixed cost per chunk (measured
  on 2 cores, uncompressed 12 KiB rows, in order: 16-row chunks of 192 KiB 0.26 M
  samples/s, 64-row chunks of 768 KiB 0.41 M, 256-row chunks of 3 MiB 0.70 M).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "MIN_CHUNK_BYTES",
    "MAX_CHUNK_BYTES",
    "H5PY_CHUNK_CACHE_BYTES",
    "row_bytes",
    "training_chunks",
    "splits_rows",
]

MIN_CHUNK_BYTES = 64 << 10
MAX_CHUNK_BYTES = 1 << 20
# HDF5's default raw-data chunk cache per dataset (h5py keeps it unless rdcc_nbytes=).
H5PY_CHUNK_CACHE_BYTES = 1 << 20


def row_bytes(shape: Sequence[int], dtype: npt.DTypeLike, axis: int = 0) -> int:
    """Decoded bytes of one row (one index along ``axis``), at least 1.

    >>> row_bytes((1000, 32, 32, 3), np.dtype("f4"))
    12288
    """
    inner = math.prod(int(n) for i, n in enumerate(shape) if i != axis)
    return max(1, inner * np.dtype(dtype).itemsize)


def training_chunks(
    shape: Sequence[int],
    dtype: npt.DTypeLike,
    axis: int = 0,
    limit: int = MAX_CHUNK_BYTES,
) -> tuple[int, ...] | None:
    """HDF5 chunks for batch feeding: whole rows along ``axis``, up to ``limit`` bytes.

    The rows per chunk are the largest power of two whose chunk fits in ``limit`` (so
    batches of 32 or 64 rows start on chunk edges, and a chunk fits h5py's chunk cache),
    at least 1 and at most the rows there are; every other axis is whole. Returns
    ``None`` for scalars (HDF5 cannot chunk them).

    Parameters
    ----------
    shape, dtype
        The variable's shape and dtype.
    axis
        The sample axis.
    limit
        Most decoded bytes per chunk (unless one row is bigger).

    Examples
    --------
    >>> training_chunks((100_000, 32, 32, 3), "f4")   # 64 rows of 12 KiB: 768 KiB
    (64, 32, 32, 3)
    >>> training_chunks((100_000, 32, 32, 3), "u1")   # 256 rows of 3 KiB
    (256, 32, 32, 3)
    >>> training_chunks((100_000,), "i8")             # labels: 131,072 rows of 8 bytes...
    (100000,)
    >>> training_chunks((10, 1024, 1024, 3), "f4")    # 12 MiB rows: one row per chunk
    (1, 1024, 1024, 3)
    >>> training_chunks((64, 100), "f8", axis=1)      # samples along the last axis
    (64, 100)
    """
    if len(shape) == 0:
        return None
    fits = limit // row_bytes(shape, dtype, axis)
    rows = 2 ** int(math.log2(fits)) if fits >= 1 else 1
    rows = max(1, min(rows, int(shape[axis])))
    return tuple(rows if i == axis else max(int(n), 1) for i, n in enumerate(shape))


def splits_rows(chunks: Sequence[int] | None, shape: Sequence[int], axis: int = 0) -> int:
    """How many chunks one row (sample) is spread over: 1 when inner axes are whole.

    >>> splits_rows((256, 32, 32, 3), (1000, 32, 32, 3))
    1
    >>> splits_rows((64, 16, 16, 3), (1000, 32, 32, 3))
    4
    >>> splits_rows(None, (1000, 32, 32, 3))      # contiguous
    1
    """
    if chunks is None:
        return 1
    return math.prod(
        math.ceil(int(n) / int(c))
        for i, (c, n) in enumerate(zip(chunks, shape, strict=True))
        if i != axis and n
    )
