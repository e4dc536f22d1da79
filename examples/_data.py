"""Shared by the examples: make a small image file (image + label) if it is not there yet."""

from __future__ import annotations

import os

import numpy as np

import lazyh5


def make_images(path: str, n: int = 5000, seed: int = 0) -> str:
    """uint8 images (n, 32, 32, 3) whose mean brightness encodes the label (0..9)."""
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(seed)
    ds = lazyh5.create(
        path,
        {"image": ((n, 32, 32, 3), "u1"), "label": ((n,), "i8")},
        dims={"image": ("sample", "y", "x", "channel")},
        compression="lzf",
    )
    labels = rng.integers(0, 10, n)
    ds["label"].h5[:] = labels
    for start in range(0, n, 2048):
        stop = min(start + 2048, n)
        noise = rng.integers(0, 60, (stop - start, 32, 32, 3))
        ds["image"].h5[start:stop] = (labels[start:stop, None, None, None] * 20 + noise).astype(
            np.uint8
        )
    ds.close()
    return path
