"""Parallel feeding: PyTorch DataLoader workers and data-parallel shards, as ratios.

On the uncompressed float32 file of ``feed.py`` (N × 32 × 32 × 3, 256-row HDF5 chunks),
after a warm-up pass that reads it into the page cache, in one run, shuffled (seed 0):

- **torch**: one epoch of ``DataLoader(loader.torch(), batch_size=None, num_workers=2)``
  (workers started by the epoch, as a ``DataLoader`` without persistent workers does),
  and of ``loader.torch_batches(num_workers=2)`` (workers hand over runs of batches;
  persistent workers, its default, after one epoch that starts them),
  against one epoch of the same loader iterated in a single process (floor 0.9), and
  against the usual PyTorch recipe: a map-style ``Dataset`` whose ``__getitem__``
  reads one row with h5py (the file opened once per worker), in
  ``DataLoader(ds, shuffle=True, batch_size=32, num_workers=2)``, timed on a limited
  number of batches (floor 10). For reference, the same with persistent workers, and
  a ``DataLoader`` whose 2 workers hand over ready-made batches of the same shapes: the
  most that torch's worker-to-process transfer carries on this machine. On the
  uncompressed file and on ``lzf-q16`` (lzf that does compress: real decoding).
  Skipped when torch is not installed.
- **shards**: two processes, each feeding one shard of the file (``shard=(i, 2)``) at
  the same time; each shard's rate against half the unsharded epoch rate of one
  process (floor 0.9): what a data-parallel job of two gets from one file.

Each figure is the best of ``--repeat`` (the machine is shared and noisy).

    python benchmarks/feed.py --parallel [--n 100000] [--repeat 2] [--dir DIR]
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import h5py

import lazyh5

WORKERS = 2

try:
    from torch.utils.data import IterableDataset
except ImportError:  # the torch section is skipped
    IterableDataset = object


def _loader(path: Path, bs: int, **kwargs) -> lazyh5.BatchLoader:
    ds = lazyh5.open_dataset(path)
    return lazyh5.BatchLoader(ds, "image", "label", batch_size=bs, seed=0, **kwargs)


def _epoch_rate(batches) -> float:
    """Samples/s of one pass over ``batches`` of ``(x, y)``."""
    t, n = time.perf_counter(), 0
    for _, y in batches:
        n += len(y)
    return n / (time.perf_counter() - t)


class RowPerItem:
    """The usual torch recipe: one row per ``__getitem__``, read with h5py, the file
    opened on first use in each worker (not inherited across the fork)."""

    def __init__(self, path: Path) -> None:
        self.path, self.file = str(path), None
        with h5py.File(self.path, "r") as f:
            self.n = len(f["label"])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if self.file is None:
            self.file = h5py.File(self.path, "r")
        return self.file["image"][i], self.file["label"][i]


class Preallocated(IterableDataset):
    """The ceiling of a 2-worker DataLoader on this machine: fresh batches of the
    loader's shapes (a copy of one made ahead, as a read would make), handed over as
    fast as torch moves them. (The same tensor sent again would cost torch no copy.)

    ``shared=True``: the batches are views of 16 MiB blocks made in shared memory,
    which torch hands over without copying them: what a zero-copy worker could reach.
    ``blocks=True``: fresh 16 MiB blocks are handed over whole (one item a block), for
    the training process to cut into batches (:func:`_cut`): the ceiling of a design
    that moves blocks, not batches, between processes."""

    def __init__(self, loader: lazyh5.BatchLoader, shared: bool = False, blocks: bool = False):
        self.batches, self.bs, self.shared, self.blocks = (
            len(loader),
            loader.batch_size,
            shared,
            blocks,
        )

    def __iter__(self):
        import torch
        from torch.utils.data import get_worker_info

        share = self.batches // get_worker_info().num_workers
        if self.blocks:
            per = self._per_block()
            rows = [min(per, share - first) * self.bs for first in range(0, share, per)]
            x, y = (
                torch.zeros((per * self.bs, 32, 32, 3)),
                torch.zeros(per * self.bs, dtype=torch.int64),
            )
            return ((x[:n].clone(), y[:n].clone()) for n in rows)
        x, y = torch.zeros((self.bs, 32, 32, 3)), torch.zeros(self.bs, dtype=torch.int64)
        if not self.shared:
            return ((x.clone(), y.clone()) for _ in range(share))
        return self._views(share)

    def _per_block(self) -> int:
        return max(1, (16 << 20) // (32 * 32 * 3 * 4 * self.bs))  # batches per block

    def _views(self, share: int):
        import torch

        per = self._per_block()
        for first in range(0, share, per):
            n = min(per, share - first) * self.bs
            x = torch.zeros((n, 32, 32, 3)).share_memory_()
            y = torch.zeros(n, dtype=torch.int64).share_memory_()
            for i in range(0, n, self.bs):
                yield x[i : i + self.bs], y[i : i + self.bs]


def _cut(blocks, bs: int):
    """Batches of ``bs`` rows, views of each ``(x, y)`` block in turn."""
    for x, y in blocks:
        for i in range(0, len(y), bs):
            yield x[i : i + bs], y[i : i + bs]


def _recipe_rate(loader, batches: int, budget: float = 20.0) -> float:
    """Samples/s of ``batches`` batches (or ``budget`` seconds of them: one chunk decoded
    per row is slow), timed from the first one (the workers started)."""
    it = iter(loader)
    next(it)
    t, n = time.perf_counter(), 0
    for i, (_, y) in enumerate(it):
        n += len(y)
        if i + 1 == batches or time.perf_counter() - t > budget:
            break
    return n / (time.perf_counter() - t)


def bench_torch(path: Path, bs: int, repeat: int, batches: int) -> list[tuple[str, float, float]]:
    """The torch rates on ``path`` and its ratios (name, value, floor); none without torch."""
    try:
        from torch.utils.data import DataLoader
    except ImportError:
        print("\ntorch: not installed (pip install lazyh5[torch]); section skipped")
        return []
    loader = _loader(path, bs)
    dataset = loader.torch()
    ceiling, shared = Preallocated(loader), Preallocated(loader, shared=True)
    whole = Preallocated(loader, blocks=True)
    keys = ("single", "workers", "persistent", "runs", "runs-kept")
    keys += ("ceiling", "shared", "blocks", "recipe")
    rates: dict[str, list[float]] = {k: [] for k in keys}
    _epoch_rate(loader)  # the one-process loader in its steady state, as the others
    kept = DataLoader(dataset, batch_size=None, num_workers=WORKERS, persistent_workers=True)
    _epoch_rate(kept)
    runs_kept = loader.torch_batches(num_workers=WORKERS)  # persistent workers by default
    _epoch_rate(runs_kept)
    for _ in range(repeat):  # interleaved: the machine's speed drifts
        rates["single"].append(_epoch_rate(loader))
        rates["workers"].append(
            _epoch_rate(DataLoader(dataset, batch_size=None, num_workers=WORKERS))
        )
        rates["persistent"].append(_epoch_rate(kept))
        fresh = loader.torch_batches(num_workers=WORKERS, persistent_workers=False)
        rates["runs"].append(_epoch_rate(fresh))
        rates["runs-kept"].append(_epoch_rate(runs_kept))
        for key, ready in (("ceiling", ceiling), ("shared", shared)):
            rates[key].append(_epoch_rate(DataLoader(ready, batch_size=None, num_workers=WORKERS)))
        blocks = DataLoader(whole, batch_size=None, num_workers=WORKERS)
        rates["blocks"].append(_epoch_rate(_cut(blocks, bs)))
        usual = DataLoader(RowPerItem(path), shuffle=True, batch_size=bs, num_workers=WORKERS)
        rates["recipe"].append(_recipe_rate(usual, batches))
    best = {k: max(v) for k, v in rates.items()}
    print(f"\ntorch on {path.name}, shuffled, batch {bs}, {WORKERS} workers, best of {repeat}:")
    rows = [
        ("BatchLoader, one process", "single"),
        ("DataLoader(loader.torch(), batch_size=None)", "workers"),
        ("  the same, persistent_workers=True", "persistent"),
        ("loader.torch_batches(num_workers=2)", "runs-kept"),
        ("  the same, persistent_workers=False", "runs"),
        ("DataLoader of ready-made batches (ceiling)", "ceiling"),
        ("  the same, views of shared memory (no copy)", "shared"),
        ("  fresh 16 MiB blocks, cut into batches here", "blocks"),
        (f"map-style h5py Dataset ({batches} batches)", "recipe"),
    ]
    for label, key in rows:
        print(f"  {label:<48} {best[key]:>12,.0f} samples/s")
    name = path.stem.rsplit("_", 1)[-1]
    print(f"  (torch workers vs the ceiling: {best['workers'] / best['ceiling']:.2f})")
    return [
        (f"{name}: {label} vs {base} >= {floor:g}", best[key] / best[under], floor)
        for label, key in (("torch workers", "workers"), ("torch_batches", "runs-kept"))
        for base, under, floor in (
            ("one-process loader", "single", 0.9),
            ("map-style h5py recipe", "recipe", 10),
        )
    ]


def _best_epoch(loader, epochs: int) -> float:
    return max(_epoch_rate(loader) for _ in range(epochs))


def _feed_shard(path: str, bs: int, index: int, epochs: int, start, results) -> None:
    loader = _loader(Path(path), bs, shard=(index, 2))
    start.wait()  # both shards start together
    results.put((index, _best_epoch(loader, epochs)))


def bench_shards(path: Path, bs: int, repeat: int, epochs: int) -> list[tuple[str, float, float]]:
    """Two shards read at once in two processes, each against half the unsharded rate
    (steady state: the best of ``epochs`` epochs of each loader)."""
    whole, shards = [], {0: [], 1: []}
    context = multiprocessing.get_context("spawn")  # fresh processes, no inherited files
    for _ in range(repeat):
        whole.append(_best_epoch(_loader(path, bs), epochs))
        start, results = context.Barrier(2), context.Queue()
        procs = [
            context.Process(target=_feed_shard, args=(str(path), bs, i, epochs, start, results))
            for i in range(2)
        ]
        for p in procs:
            p.start()
        for _ in procs:
            index, rate = results.get(timeout=600)
            shards[index].append(rate)
        for p in procs:
            p.join()
    half = max(whole) / 2
    print(f"\nshards on {path.name}, shuffled, batch {bs}, best of {repeat} x {epochs} epochs:")
    print(f"  {'unsharded, one process (half of it)':<48} {max(whole):>12,.0f} ({half:,.0f})")
    checks = []
    for index, rates in shards.items():
        print(f"  {f'shard {index} of 2, both at once':<48} {max(rates):>12,.0f}")
        label = f"shard {index} of 2 vs half the unsharded rate >= 0.9"
        checks.append((label, max(rates) / half, 0.9))
    return checks


def warm(path: Path) -> None:
    with h5py.File(path, "r") as f:
        for s in range(0, len(f["label"]), 8192):
            f["image"][s : s + 8192]


def run(paths: list[Path], bs: int, repeat: int, quick: bool) -> None:
    """The torch section on each file, the shard section on the first, and the floors."""
    checks = []
    for path in paths:
        warm(path)
        checks += bench_torch(path, bs, repeat, 60 if quick else 300)
    checks += bench_shards(paths[0], bs, repeat, 2 if quick else 3)
    print("\nFloors:")
    for label, value, floor in checks:
        print(f"  {label:<58} {value:8.2f}  {'ok' if value >= floor else 'BELOW'}")


if __name__ == "__main__":  # pragma: no cover - run through feed.py --parallel
    raise SystemExit("run: python benchmarks/feed.py --parallel")
