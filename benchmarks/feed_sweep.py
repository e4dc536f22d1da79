"""Layout sweep of the training feed: every BatchLoader floor on every HDF5 chunk layout.

Users' files are not chunked the way a benchmark is, so the loader's floors are checked
on 16, 64, 256 and 1,024 rows per HDF5 chunk, for four kinds of image file
(N × 32 × 32 × 3, int64 labels):

- ``f4``: float32 images, uncompressed;
- ``u8``: uint8 images, uncompressed, normalised lazily as users do
  (``ds["image"].astype("f4") / 255``: dask computes each block);
- ``lzf`` and ``gzip`` (level 4): float32 images of 16 grey levels, which both compress
  (random floats do not: HDF5 would store the chunks as is and no decoding would be
  measured). These files hold ``N / 4`` rows: decoding makes their epochs long enough.

For each file, after a warm-up pass that reads it into the page cache, in one run:

- ``h5py-batches``: the hand-written ``X[i:i+bs], Y[i:i+bs]`` loop in order (with the same
  normalisation for ``u8``), timed for up to ``--budget`` seconds, best of two (one before
  and one after the loaders, as the machine's speed drifts);
- ``--repeat`` fresh loaders in order and as many shuffled, interleaved, each run for
  ``--epochs`` epochs: the **first epoch** of a fresh loader (from building it) and the
  **steady state** (the best later epoch).

Ratios, each with its floor:

- in order ÷ h5py-batches: ≥ 1.0 uncompressed, ≥ 1.8 lzf and gzip;
- steady shuffled ÷ steady in order: ≥ 0.85;
- first epoch ÷ steady state, in order and shuffled: ≥ 0.8.

Before the files, it measures what fresh memory costs the machine (:func:`first_touch`):
a fresh loader's first epoch fills its buffers in memory the process has not used.

    python benchmarks/feed.py --sweep [--n 100000] [--repeat 2] [--epochs 3] [--dir DIR]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

import lazyh5

CHUNK_ROWS = (16, 64, 256, 1024)
# file kind -> (image dtype, compression, 16 grey levels, rows as a fraction of N)
KINDS: dict[str, tuple[str, str | None, bool, int]] = {
    "f4": ("f4", None, False, 1),
    "u8": ("u1", None, False, 1),
    "lzf": ("f4", "lzf", True, 4),
    "gzip": ("f4", "gzip", True, 4),
}


@dataclass
class Layout:
    """One file of the sweep and what was measured on it (samples/s)."""

    kind: str
    chunk: int
    n: int
    path: Path
    stored: str = ""
    rates: dict[str, float] = field(default_factory=dict)

    @property
    def compressed(self) -> bool:
        return KINDS[self.kind][1] is not None


@dataclass(frozen=True)
class Floor:
    """A ratio of two measured rates and the value it must reach on a layout."""

    label: str
    over: str
    under: str
    floor: Callable[[Layout], float]


# Each floor is a column of the table. Floors measured by other benchmarks (torch
# workers, shards) join this list with the rates they read from ``Layout.rates``.
FLOORS = [
    Floor("in order ÷ h5py", "in-order", "h5py-batches", lambda t: 1.8 if t.compressed else 1.0),
    Floor("shuffled ÷ in order", "shuffled", "in-order", lambda t: 0.85),
    Floor("1st ÷ steady, in order", "first in-order", "in-order", lambda t: 0.8),
    Floor("1st ÷ steady, shuffled", "first shuffled", "shuffled", lambda t: 0.8),
]


def make_file(path: Path, n: int, chunk: int, kind: str) -> None:
    """N images of ``kind`` in ``chunk``-row HDF5 chunks, and int64 labels."""
    if path.exists():
        return
    dtype, compression, quantised, _ = KINDS[kind]
    opts = {"compression": compression, "compression_opts": 4 if compression == "gzip" else None}
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".part")
    with h5py.File(tmp, "w") as f:
        x = f.create_dataset("image", (n, 32, 32, 3), dtype, chunks=(chunk, 32, 32, 3), **opts)
        y = f.create_dataset("label", (n,), "i8", chunks=(min(n, 16384),), **opts)
        for s in range(0, n, 8192):
            e = min(s + 8192, n)
            if dtype == "u1":
                images = rng.integers(0, 256, (e - s, 32, 32, 3), dtype=np.uint8)
            else:
                images = rng.random((e - s, 32, 32, 3), dtype=np.float32)
                images = np.round(images * 15) / 15 if quantised else images
            x[s:e] = images
            y[s:e] = rng.integers(0, 10, e - s)
    tmp.rename(path)


def stored(path: Path) -> str:
    """How the image chunks are stored: compressed (and to what size), or as is."""
    with h5py.File(path, "r") as f:
        image = f["image"]
        if image.compression is None:
            return "uncompressed"
        masks: list[int] = []
        image.id.chunk_iter(lambda info: masks.append(info.filter_mask))
        ratio = image.id.get_storage_size() / image.nbytes
    packed = sum(m == 0 for m in masks)
    return f"{image.compression}: {packed} of {len(masks)} chunks compressed, {ratio:.0%} of size"


def first_touch(mib: int = 64, count: int = 4) -> tuple[float, float]:
    """Milliseconds to write one byte a page of a fresh ``mib`` MiB array, held
    ``count`` at once (memory this process has not used before), then again once they
    are freed (the same pages, reused): what a fresh loader's first window costs the
    machine. On a virtual machine whose host takes back the pages a guest frees, the
    first can be many times the second."""

    def touch() -> list[float]:
        held, times = [], []
        for _ in range(count):
            t = time.perf_counter()
            a = np.empty(mib << 20, np.uint8)
            a[::4096] = 1
            times.append((time.perf_counter() - t) * 1000)
            held.append(a)
        return times

    fresh = touch()
    return max(fresh), float(np.median(touch()))


def warm(path: Path) -> None:
    """Bring the file into the page cache (its bytes, no decoding)."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def h5py_batches(path: Path, bs: int, budget: float, normalise: bool) -> float:
    """Samples/s of ``X[i:i+bs], Y[i:i+bs]`` in order, for up to ``budget`` seconds."""
    with h5py.File(path, "r") as f:
        X, Y = f["image"], f["label"]
        n, i = len(Y), 0
        t = time.perf_counter()
        while i < n:
            x, _ = X[i : i + bs], Y[i : i + bs]
            if normalise:
                x = x.astype("f4") / 255
            i += bs
            if time.perf_counter() - t > budget:
                break
        return min(i, n) / (time.perf_counter() - t)


def loader_epochs(path: Path, kind: str, bs: int, shuffle: bool, epochs: int) -> list[float]:
    """Samples/s of each epoch of one fresh loader; the first includes building it."""
    ds = lazyh5.open_dataset(path)
    if kind == "u8":
        ds = ds.assign(image=ds["image"].astype("f4") / 255)
    t = time.perf_counter()
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=bs, shuffle=shuffle, seed=0)
    rates = []
    for _ in range(epochs):
        n = 0
        for _x, y in loader:
            n += len(y)
        now = time.perf_counter()
        rates.append(n / (now - t))
        t = now
    return rates


def measure(layout: Layout, bs: int, repeat: int, epochs: int, budget: float) -> None:
    """Every rate of one layout (see the module docstring), into ``layout.rates``."""
    warm(layout.path)
    normalise = layout.kind == "u8"
    base = [h5py_batches(layout.path, bs, budget, normalise)]
    got: dict[str, list[float]] = {}
    for _ in range(repeat):  # interleaved: the machine's speed drifts
        for name, shuffle in (("in-order", False), ("shuffled", True)):
            rates = loader_epochs(layout.path, layout.kind, bs, shuffle, epochs)
            got.setdefault("first " + name, []).append(rates[0])
            got.setdefault(name, []).extend(rates[1:])
    base.append(h5py_batches(layout.path, bs, budget, normalise))
    layout.rates = {"h5py-batches": max(base), **{k: max(v) for k, v in got.items()}}


def cell(layout: Layout, floor: Floor) -> str:
    ratio = layout.rates[floor.over] / layout.rates[floor.under]
    need = floor.floor(layout)
    return f"{ratio:5.2f} {'met' if ratio >= need else 'MISSED':>6} (≥{need:g})"


def table(
    layouts: list[Layout], bs: int, loads: tuple[float, float], touch: tuple[float, float]
) -> None:
    print(f"\nLayout sweep: batch {bs}, images 32x32x3, int64 labels, default loader settings")
    # Timings of a shared machine: the load says how much the ratios can be trusted,
    # and the cost of fresh memory how much a first epoch pays the machine for it.
    print(f"load average (1 min): {loads[0]:.1f} at the start, {loads[1]:.1f} at the end")
    print(
        f"fresh memory: up to {touch[0]:.0f} ms per 64 MiB touched first, "
        f"{touch[1]:.0f} ms reused (measured before the sweep)"
    )
    head = f"{'file':<5} {'rows/chunk':>10} {'N':>7} {'h5py-batches/s':>15} {'in order/s':>12}"
    head += "".join(f"  {f.label:<23}" for f in FLOORS)
    print(head)
    print("-" * len(head))
    for t in layouts:
        line = f"{t.kind:<5} {t.chunk:>10,} {t.n:>7,} {t.rates['h5py-batches']:>15,.0f}"
        line += f" {t.rates['in-order']:>12,.0f}"
        line += "".join(f"  {cell(t, f):<23}" for f in FLOORS)
        print(line)
    missed = [
        f"{t.kind}/{t.chunk}: {f.label}"
        for t in layouts
        for f in FLOORS
        if t.rates[f.over] / t.rates[f.under] < f.floor(t)
    ]
    print(
        f"\nFloors met: {len(layouts) * len(FLOORS) - len(missed)} of {len(layouts) * len(FLOORS)}"
    )
    for m in missed:
        print(f"  missed: {m}")
    print("\nStored:")
    for t in layouts:
        print(f"  {t.kind}/{t.chunk}: {t.stored}")


def sweep(
    folder: Path,
    n: int,
    bs: int,
    repeat: int,
    epochs: int,
    budget: float,
    kinds: list[str],
    chunks: list[int],
) -> list[Layout]:
    """Make the files (kept in ``folder``), measure each, print the table."""
    layouts = []
    load = os.getloadavg()[0]
    touch = first_touch()
    for kind in kinds:
        for chunk in chunks:
            rows = max(n // KINDS[kind][3], chunk)
            path = folder / f"sweep_{kind}_{chunk}_{rows}.h5"
            make_file(path, rows, chunk, kind)
            layout = Layout(kind, chunk, rows, path, stored(path))
            measure(layout, bs, repeat, max(epochs, 2), budget)
            layouts.append(layout)
    table(layouts, bs, (load, os.getloadavg()[0]), touch)
    return layouts
