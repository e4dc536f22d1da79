"""Builders of the small real HDF5 files (and bad files) the tests share.

Plain functions: each writes under the path or folder it is given and returns the path.
The fixtures of ``tests/conftest.py`` call them; tests that need a file in a folder of
their own (the bad-input table) call them directly.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np


def write_plain(path: Path) -> Path:
    """A plain h5py file: image (1000, 32, 32, 3) float32 + label (1000,), no dimension scales."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "image",
            data=rng.random((1000, 32, 32, 3), dtype=np.float32),
            chunks=(100, 32, 32, 3),
        )
        f.create_dataset("label", data=np.arange(1000) % 10, chunks=(250,))
        f["image"].attrs["units"] = "intensity"
        f.attrs["title"] = "plain"
    return path


def write_feed(path: Path, n: int = 2000) -> Path:
    """A training file whose rows say where they are: ``image[i] == i`` (4×4 float32) and
    ``label[i] == i`` in 64-row chunks, ``weight`` (ones), plus ``names`` (strings) and a
    ``scalar`` that cannot be fed."""
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "image",
            data=np.arange(n, dtype="f4")[:, None, None] * np.ones((1, 4, 4), "f4"),
            chunks=(64, 4, 4),
        )
        f.create_dataset("label", data=np.arange(n), chunks=(64,))
        f.create_dataset("weight", data=np.ones(n, "f4"), chunks=(64,))
        f.create_dataset("names", data=np.array([b"a"] * n))
        f.create_dataset("scalar", data=1.0)
    return path


def dict_loader(path: Path, **kwargs):
    """A loader of :func:`write_feed`'s first 100 rows in order, with a dict of inputs
    (``{"pixels": image}``), labels and sample weights: ``(x, y, w)`` batches."""
    import lazyh5

    kwargs = {"batch_size": 64, "shuffle": False, "end": 100, **kwargs}
    ds = lazyh5.open_dataset(path)
    return lazyh5.BatchLoader(ds, {"pixels": "image"}, "label", sample_weight="weight", **kwargs)


def write_lzf_feed(path: Path) -> Path:
    """A plain h5py training file: 2048 images (8×8×3 float32) in 512-row lzf chunks."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "image",
            data=rng.random((2048, 8, 8, 3), dtype=np.float32),
            chunks=(512, 8, 8, 3),
            compression="lzf",
        )
        f.create_dataset("label", data=rng.integers(0, 10, 2048), chunks=(256,))
    return path


#: The kinds of path :func:`unreadable` builds, each refused by every reader.
UNREADABLE = ("missing", "directory", "empty", "text", "truncated")


def unreadable(kind: str, folder: Path, source: Path) -> Path:
    """A path in ``folder`` that is not a readable HDF5 file, of one of :data:`UNREADABLE`.

    ``missing``: nothing there; ``directory``: a folder named like a file; ``empty``: 0
    bytes; ``text``: a CSV file; ``truncated``: the first 2000 bytes of the HDF5 file
    ``source``.
    """
    if kind == "missing":
        return folder / "missing.h5"
    if kind == "directory":
        (folder / "adir.h5").mkdir()
        return folder / "adir.h5"
    if kind == "empty":
        (folder / "empty.h5").write_bytes(b"")
        return folder / "empty.h5"
    if kind == "text":
        (folder / "text.h5").write_text("id,label\n1,2\n")
        return folder / "text.h5"
    if kind == "truncated":
        (folder / "trunc.h5").write_bytes(source.read_bytes()[:2000])
        return folder / "trunc.h5"
    raise ValueError(f"unknown kind {kind!r}, expected one of {UNREADABLE}")
