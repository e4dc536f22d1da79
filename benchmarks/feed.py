"""Training-feed throughput: lazyh5.BatchLoader against the baselines of the protocol.

Prints one table per file (uncompressed, lzf): each row a method, samples/s, and the
ratio to ``h5py-batches`` (the hand-written HDF5Matrix-style loop) from the same run,
after a warm-up pass that brings the file into the page cache. Slow baselines are timed
on a limited number of batches (rates stay comparable). Then one epoch of Keras ``fit``
(Flatten → Dense(10)) from in-memory numpy vs from lazyh5.

    python benchmarks/feed.py [--n 100000] [--batch 32] [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import dask.array as da
import h5py
import numpy as np

import lazyh5

CHUNK = 256


def make_file(path: Path, n: int, compression: str | None) -> None:
    if path.exists():
        return
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        x = f.create_dataset(
            "image", (n, 32, 32, 3), "f4", chunks=(CHUNK, 32, 32, 3), compression=compression
        )
        y = f.create_dataset("label", (n,), "i8", chunks=(CHUNK * 16,), compression=compression)
        for s in range(0, n, 8192):
            e = min(s + 8192, n)
            x[s:e] = rng.random((e - s, 32, 32, 3), dtype=np.float32)
            y[s:e] = rng.integers(0, 10, e - s)


def rate(fn, limit: int | None = None) -> float:
    t = time.perf_counter()
    samples = fn(limit)
    return samples / (time.perf_counter() - t)


def h5py_batches(path, bs):
    def run(limit):
        with h5py.File(path, "r") as f:
            X, Y = f["image"], f["label"]
            n = len(Y) if limit is None else min(len(Y), limit * bs)
            for i in range(0, n, bs):
                X[i : i + bs], Y[i : i + bs]
        return n

    return run


def h5py_blocks(path, bs):
    def run(limit):
        with h5py.File(path, "r") as f:
            X, Y = f["image"], f["label"]
            n = len(Y)
            step = CHUNK * 16
            for s in range(0, n, step):
                xb, yb = X[s : s + step], Y[s : s + step]
                for i in range(0, len(yb), bs):
                    xb[i : i + bs], yb[i : i + bs]
        return n

    return run


def h5py_fancy(path, bs):
    def run(limit):
        rng = np.random.default_rng(0)
        with h5py.File(path, "r") as f:
            X, Y = f["image"], f["label"]
            perm = rng.permutation(len(Y))
            for b in range(limit):
                idx = np.sort(perm[b * bs : (b + 1) * bs])
                X[idx], Y[idx]
        return limit * bs

    return run


def dask_batches(path, bs):
    def run(limit):
        with h5py.File(path, "r") as f:
            x = da.from_array(f["image"], chunks=(CHUNK, 32, 32, 3))
            y = da.from_array(f["label"], chunks=(CHUNK * 16,))
            for i in range(0, limit * bs, bs):
                da.compute(x[i : i + bs], y[i : i + bs])
        return limit * bs

    return run


def xbatcher_batches(path, bs):
    def run(limit):
        import xarray as xr
        import xbatcher

        ds = xr.open_dataset(path, engine="h5netcdf", phony_dims="sort")
        # xbatcher stacks into a dimension named "sample", so name the rows "row"
        ds = ds.rename({ds["image"].dims[0]: "row"})
        ds = ds.rename({ds["label"].dims[0]: "row"}) if "row" not in ds["label"].dims else ds
        gen = xbatcher.BatchGenerator(ds, input_dims={"row": bs})
        for i, batch in enumerate(gen):
            batch["image"].values, batch["label"].values
            if i + 1 >= limit:
                break
        return limit * bs

    return run


def numpy_batches(X, Y, bs):
    def run(limit):
        for i in range(0, len(Y), bs):
            np.ascontiguousarray(X[i : i + bs]), Y[i : i + bs]
        return len(Y)

    return run


def lazyh5_batches(path, bs, shuffle):
    def run(limit):
        ds = lazyh5.open_dataset(path)
        loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=bs, shuffle=shuffle, seed=0)
        n = 0
        for _x, y in loader:
            n += len(y)
        return n

    return run


def table(title: str, rows: list[tuple[str, float, str]]) -> None:
    base = dict((r[0], r[1]) for r in rows)["h5py-batches"]
    print(f"\n{title}")
    print(f"{'method':<20} {'samples/s':>12} {'vs h5py-batches':>16}  note")
    for name, r, note in rows:
        print(f"{name:<20} {r:>12,.0f} {r / base:>15.3f}x  {note}")


def bench_file(path: Path, bs: int, quick: bool) -> dict[str, float]:
    for _ in range(2):  # warm-up: page cache
        h5py_blocks(path, bs)(None)
    few = 20 if quick else 60
    rows = [
        ("h5py-batches", rate(h5py_batches(path, bs)), "in order, full epoch"),
        ("h5py-blocks", rate(h5py_blocks(path, bs)), "in order, full epoch"),
        ("h5py-fancy", rate(h5py_fancy(path, bs), few), f"shuffled, {few} batches"),
        ("dask-batches", rate(dask_batches(path, bs), few * 5), f"in order, {few * 5} batches"),
    ]
    try:
        rows.append(
            ("xbatcher", rate(xbatcher_batches(path, bs), few * 5), f"in order, {few * 5} batches")
        )
    except ImportError:
        rows.append(("xbatcher", float("nan"), "not installed"))
    with h5py.File(path, "r") as f:
        X, Y = f["image"][...], f["label"][...]
    rows.append(("numpy", rate(numpy_batches(X, Y, bs)), "in memory, upper bound"))
    del X, Y
    rows.append(("lazyh5 in order", rate(lazyh5_batches(path, bs, False)), "full epoch"))
    rows.append(("lazyh5 shuffled", rate(lazyh5_batches(path, bs, True)), "full epoch, window 4"))
    table(f"{path.name}: N={len(h5py.File(path)['label'])}, batch {bs}", rows)
    return {name: r for name, r, _ in rows}


def bench_keras(path: Path, n: int, bs: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    with h5py.File(path, "r") as f:
        X, Y = f["image"][:n], f["label"][:n]

    def model():
        keras.utils.set_random_seed(0)
        m = keras.Sequential(
            [keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)]
        )
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return m

    m = model()
    m.fit(X[: bs * 10], Y[: bs * 10], batch_size=bs, epochs=1, verbose=0)  # warm-up/trace
    t = time.perf_counter()
    m.fit(X, Y, batch_size=bs, epochs=1, verbose=0, shuffle=True)
    numpy_rate = n / (time.perf_counter() - t)
    ds = lazyh5.open_dataset(path)
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=bs, seed=0, end=n)
    m = model()
    m.fit(
        lazyh5.BatchLoader(ds, "image", "label", batch_size=bs, end=bs * 10).keras(),
        epochs=1,
        verbose=0,
    )
    t = time.perf_counter()
    m.fit(loader.keras(), epochs=1, verbose=0)
    lazy_rate = n / (time.perf_counter() - t)
    print(
        f"\nKeras fit, one epoch, Flatten->Dense(10), backend {keras.backend.backend()}, "
        f"N={n}, batch {bs}"
    )
    print(f"{'numpy in memory':<20} {numpy_rate:>12,.0f} samples/s")
    ratio = lazy_rate / numpy_rate
    print(f"{'lazyh5 BatchLoader':<20} {lazy_rate:>12,.0f} samples/s   ratio {ratio:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--keras-n", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="N=20000, fewer slow batches")
    parser.add_argument("--dir", default=None, help="keep the generated files here")
    args = parser.parse_args()
    n = 20_000 if args.quick else args.n
    folder = Path(args.dir or tempfile.mkdtemp(prefix="lazyh5-feed-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for comp in (None, "lzf"):
        path = folder / f"feed_{n}_{comp or 'raw'}.h5"
        make_file(path, n, comp)
        results[comp or "raw"] = bench_file(path, args.batch, args.quick)
    raw, lzf = results["raw"], results["lzf"]
    print("\nFloors (issue 4):")
    checks = [
        (
            "in order vs h5py-batches, uncompressed >= 1.0",
            raw["lazyh5 in order"] / raw["h5py-batches"],
            1.0,
        ),
        ("in order vs h5py-batches, lzf >= 1.8", lzf["lazyh5 in order"] / lzf["h5py-batches"], 1.8),
        (
            "shuffled vs own in order, uncompressed >= 0.8",
            raw["lazyh5 shuffled"] / raw["lazyh5 in order"],
            0.8,
        ),
        (
            "shuffled vs own in order, lzf >= 0.8",
            lzf["lazyh5 shuffled"] / lzf["lazyh5 in order"],
            0.8,
        ),
        ("shuffled vs h5py-fancy, lzf >= 100", lzf["lazyh5 shuffled"] / lzf["h5py-fancy"], 100),
        ("shuffled vs xbatcher, lzf >= 20", lzf["lazyh5 shuffled"] / lzf["xbatcher"], 20),
    ]
    for label, value, floor in checks:
        print(f"  {label:<50} {value:8.2f}  {'ok' if value >= floor else 'BELOW'}")
    bench_keras(folder / f"feed_{n}_lzf.h5", min(args.keras_n, n), args.batch)


if __name__ == "__main__":
    main()
