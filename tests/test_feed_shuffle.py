"""Measured shuffle quality of the chunk-aware shuffle (documented in docs/feeding.md)."""

from __future__ import annotations

import h5py
import numpy as np

import lazyh5


def _class_sorted(tmp_path, n=20_000, chunk=250):
    path = tmp_path / "sorted.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(n, dtype="f4")[:, None], chunks=(chunk, 1))
        f.create_dataset("label", data=np.repeat(np.arange(10), n // 10), chunks=(chunk,))
    return lazyh5.open_dataset(path)


def test_rows_of_one_chunk_spread_over_the_epoch(tmp_path):
    ds = _class_sorted(tmp_path)
    loader = lazyh5.BatchLoader(ds, "x", batch_size=100, seed=0, block_size="4KiB", window=8)
    order = np.concatenate([b[:, 0] for b in loader]).astype(int)
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    spans = []
    for c in range(0, 20_000, 250):
        pos = np.sort(position[c : c + 250])
        spans.append(pos[-1] - pos[0])
    # A chunk's rows are spread over a window of 8 blocks (of 4 chunks each here),
    # i.e. about 8000 positions, not kept together as a run of 250.
    assert np.median(spans) > 5000
    # and the chunks land all over the epoch
    starts = [position[c : c + 250].min() for c in range(0, 20_000, 250)]
    assert np.corrcoef(np.arange(len(starts)), starts)[0, 1] < 0.5


def test_class_sorted_file_gives_mixed_windows(tmp_path):
    ds = _class_sorted(tmp_path)
    loader = lazyh5.BatchLoader(
        ds, "x", "label", batch_size=100, seed=1, block_size="4KiB", window=8
    )
    labels = np.concatenate([y for _, y in loader])
    means = labels[: len(labels) // 1000 * 1000].reshape(-1, 1000).mean(axis=1)
    # global mean 4.5; in order, 1000-row windows would have means 0..9 exactly
    assert np.abs(means - 4.5).max() < 3.0
    assert np.abs(means - 4.5).mean() < 1.5
    in_order = lazyh5.BatchLoader(ds, "x", "label", batch_size=100, shuffle=False)
    ordered = np.concatenate([y for _, y in in_order]).reshape(-1, 1000).mean(axis=1)
    assert np.abs(ordered - 4.5).mean() > 2.0  # the measure does see sorted data
