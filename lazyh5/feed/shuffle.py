"""Epoch orders: random block order plus a shuffle across a window of several blocks.

A true per-sample shuffle of an HDF5 file costs one chunk decode per sample (what
``h5py`` fancy indexing does, far slower than reading in order). lazyh5 instead

1. visits the blocks (runs of whole HDF5 chunks) in a random order, and
2. pools the rows of ``window`` consecutive blocks of that order and permutes them.

Each row appears exactly once per epoch. Rows of one HDF5 chunk end up spread over a
stretch of ``window`` blocks, at a random place in the epoch; a class-sorted file comes
out mixed at the scale of a window (see ``tests/test_feed_shuffle.py`` for measurements).

**Shards.** The epoch's block order is one for all shards (it depends on ``seed`` and
the epoch only). Shard ``s`` of ``k`` takes positions ``[s * R, (s + 1) * R)`` of the
rows in that block order: whole blocks, but for the two at the ends of its run, which
it shares with its neighbours. ``R`` is ``ceil(rows / k)`` when padding (positions past
the end wrap to the epoch's first rows: at most ``k - 1`` repeated rows) or
``floor(rows / k)`` when dropping (at most ``k - 1`` rows left out of the epoch), so
every shard has the same number of rows, hence of batches, in every epoch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .plan import BlockPlan


@dataclass(frozen=True)
class Window:
    """Rows read together and the order their pooled rows are emitted in.

    The window holds rows ``[starts[j], stops[j])`` of block ``blocks[j]`` for each
    ``j`` (a whole block but at a shard's edges), pooled in that order; emitted row
    ``q`` is pooled row ``order[q]``.
    """

    blocks: np.ndarray  # block ids, in the order they are read
    starts: np.ndarray
    stops: np.ndarray
    order: np.ndarray  # permutation of the window's pooled rows (piece by piece)

    @property
    def rows(self) -> int:
        return len(self.order)

    def file_rows(self, emitted: np.ndarray) -> np.ndarray:
        """The rows (along the loader's dimension) emitted at positions ``emitted``."""
        pooled = self.order[emitted]
        edges = np.concatenate([[0], np.cumsum(self.stops - self.starts)])
        piece = np.searchsorted(edges, pooled, side="right") - 1
        return self.starts[piece] + pooled - edges[piece]


def shard_rows(rows: int, count: int, drop: bool) -> int:
    """Rows per shard: ``ceil(rows / count)`` (padding) or ``floor(rows / count)``."""
    return rows // count if drop else -(-rows // count)


def _pieces(
    plan: BlockPlan, blocks: np.ndarray, first: int, last: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``[first, last)`` of the rows of ``blocks`` (in that order) as pieces
    ``(block, start, stop)``; positions past the end wrap around to the beginning.
    Needs ``first < last`` (a shard has at least one row: the loader checks)."""
    sizes = plan.sizes[blocks]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    total = int(edges[-1])
    ids, starts, stops = [], [], []
    while first < last:
        lo, span = first % total, min(last - first, total - first % total)
        hi = lo + span
        j0 = int(np.searchsorted(edges, lo, side="right")) - 1
        j1 = int(np.searchsorted(edges, hi))  # the first edge at or past hi
        js = np.arange(j0, j1)
        b = blocks[js]
        ids.append(b)
        starts.append(plan.starts[b] + np.maximum(lo - edges[js], 0))
        stops.append(plan.starts[b] + np.minimum(hi, edges[js + 1]) - edges[js])
        first += span
    return np.concatenate(ids), np.concatenate(starts), np.concatenate(stops)


def epoch_windows(
    plan: BlockPlan,
    epoch: int,
    seed: int | None,
    shuffle: bool,
    window: int,
    shard: tuple[int, int],
    drop: bool,
) -> Iterator[Window]:
    """The windows of one epoch (of one shard); the same ``(seed, epoch)`` always gives
    the same order, and the shards of an epoch together cover its rows."""
    rng = np.random.default_rng(None if seed is None else [seed, epoch])
    blocks = rng.permutation(len(plan)) if shuffle else np.arange(len(plan))
    index, count = shard
    if count > 1:
        per = shard_rows(plan.rows, count, drop)
        ids, starts, stops = _pieces(plan, blocks, index * per, (index + 1) * per)
        if shuffle:  # a stream of its own per shard (seeded: the loader checks)
            rng = np.random.default_rng([seed, epoch, count, index])
    else:
        ids, starts, stops = blocks, plan.starts[blocks], plan.stops[blocks]
    step = window if shuffle else 1
    for i in range(0, len(ids), step):
        a, b = starts[i : i + step], stops[i : i + step]
        total = int((b - a).sum())
        order = rng.permutation(total) if shuffle else np.arange(total)
        yield Window(ids[i : i + step], a, b, order)


class EpochOrder:
    """One epoch's windows (of one shard), with where each batch's rows are."""

    def __init__(self, windows: list[Window], batch_size: int) -> None:
        self.windows, self.batch_size = windows, batch_size
        self.edges = np.concatenate([[0], np.cumsum([w.rows for w in windows])]).astype(np.int64)

    @property
    def rows(self) -> int:
        return int(self.edges[-1])

    def start(self, batch: int) -> tuple[int, int]:
        """The window that holds the first row of ``batch``, and that row's place in it."""
        at = batch * self.batch_size
        w = int(np.searchsorted(self.edges, at, side="right")) - 1
        return w, at - int(self.edges[w])

    def batch_rows(self, batch: int) -> np.ndarray:
        """The rows (along the loader's dimension) of ``batch``, in emission order."""
        lo = batch * self.batch_size
        hi = min(lo + self.batch_size, self.rows)
        first = int(np.searchsorted(self.edges, lo, side="right")) - 1
        parts = []
        for w in range(first, len(self.windows)):
            a, b = int(self.edges[w]), int(self.edges[w + 1])
            if a >= hi:
                break
            parts.append(self.windows[w].file_rows(np.arange(max(lo, a) - a, min(hi, b) - a)))
        return np.concatenate(parts)
