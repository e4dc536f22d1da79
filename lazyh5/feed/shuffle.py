"""Epoch orders: random block order plus a shuffle across a window of several blocks.

A true per-sample shuffle of an HDF5 file costs one chunk decode per sample (what
``h5py`` fancy indexing does, far slower than reading in order). lazyh5 instead

1. visits the blocks (runs of whole HDF5 chunks) in a random order, and
2. pools the rows of ``window`` consecutive blocks of that order and permutes them.

Each row appears exactly once per epoch. Rows of one HDF5 chunk end up spread over a
stretch of ``window`` blocks, at a random place in the epoch; a class-sorted file comes
out mixed at the scale of a window (see ``tests/test_feed_shuffle.py`` for measurements).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .plan import BlockPlan


@dataclass(frozen=True)
class Window:
    """Blocks read together and the order their pooled rows are emitted in."""

    blocks: np.ndarray  # block ids, in the order they are read
    order: np.ndarray  # permutation of the window's pooled rows (block by block)


def epoch_windows(
    plan: BlockPlan, epoch: int, seed: int | None, shuffle: bool, window: int
) -> Iterator[Window]:
    """The windows of one epoch; the same ``(seed, epoch)`` always gives the same order."""
    if not shuffle:
        for b in range(len(plan)):
            yield Window(np.array([b]), np.arange(plan.sizes[b]))
        return
    rng = np.random.default_rng(None if seed is None else [seed, epoch])
    blocks = rng.permutation(len(plan))
    for i in range(0, len(blocks), window):
        ids = blocks[i : i + window]
        yield Window(ids, rng.permutation(int(plan.sizes[ids].sum())))
