"""HDF5 chunk layouts for batch feeding: what suits training, and what does not.

Used by ``lazyh5 rechunk --for-training`` (to choose chunks, with
:func:`lazyh5.backend.chunking.row_chunks` and ``power_of_two=True``) and ``lazyh5 bench``
(to explain what limits a feed). Training reads whole samples, a batch or a block of rows at
a time, so a good layout is a chunk of **whole rows** along the sample axis:

- every other axis whole, so one sample is never spread over several chunks;
- at least 64 KiB decoded (:data:`MIN_CHUNK_BYTES`), where lazyh5's parallel decoder
  takes over from h5py and per-chunk overhead is small;
- at most 1 MiB (:data:`MAX_CHUNK_BYTES`), h5py's default chunk cache, so per-batch
  readers (a hand-written ``X[i:i+32]`` loop, Keras' old ``HDF5Matrix``) decode each
  chunk once rather than once per batch;
- within that, as big as fits: lazyh5's loader pays a fixed cost per chunk, so fewer,
  bigger chunks feed faster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..backend.chunking import ROW_CHUNK_BYTES, row_bytes

__all__ = [
    "MIN_CHUNK_BYTES",
    "MAX_CHUNK_BYTES",
    "H5PY_CHUNK_CACHE_BYTES",
    "row_bytes",
    "splits_rows",
]

MIN_CHUNK_BYTES = 64 << 10
MAX_CHUNK_BYTES = ROW_CHUNK_BYTES
# HDF5's default raw-data chunk cache per dataset (h5py keeps it unless rdcc_nbytes=).
H5PY_CHUNK_CACHE_BYTES = 1 << 20


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
