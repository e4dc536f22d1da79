"""Training-feed throughput: lazyh5.BatchLoader against h5py loops, dask, xbatcher, numpy.

Prints one table: each row a method; for the uncompressed and the lzf file,
samples/s and the ratio to ``h5py-batches`` (the hand-written HDF5Matrix-style
loop) from the same run, after a warm-up pass that brings the file into the page cache.
The random images do not compress, so HDF5 stores the lzf file's chunks as
is; a third file (``lzf-q16``: images of 16 levels, which lzf does compress) measures
real LZF decoding, for information (no floor). Full-epoch methods
are timed ``--repeat`` times (best kept: the machine is shared and noisy); slow
baselines on a limited number of batches (rates stay comparable). Then the floors the
loader must clear, and one epoch of Keras ``fit`` (Flatten → Dense(10)) from in-memory numpy vs
from lazyh5. ``--sweep``: the floors on every chunk layout (``feed_sweep.py``);
``--parallel``: torch ``DataLoader`` workers and two concurrent shards (``feed_parallel.py``).

    python benchmarks/feed.py [--n 100000] [--batch 32] [--quick] [--dir DIR] [--repeat 2]
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
from feed_sweep import stored  # beside this script

import lazyh5

CHUNK = 256


# file label -> (compression, quantised): the random float32 images do not
# compress (HDF5 stores lzf chunks as is), so a third file holds images of 16 levels
# that lzf does compress, to measure real decoding.
FILES = {"raw": (None, False), "lzf": ("lzf", False), "lzf-q16": ("lzf", True)}


def make_file(path: Path, n: int, compression: str | None, quantised: bool = False) -> None:
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
            images = rng.random((e - s, 32, 32, 3), dtype=np.float32)
            x[s:e] = np.round(images * 15) / 15 if quantised else images
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


def table(n: int, bs: int, results: dict[str, dict[str, tuple[float, str]]]) -> None:
    """One table: a row per method; samples/s and the ratio to h5py-batches per file."""
    files = list(results)
    print(f"\nN={n:,}, batch {bs}, image float32 (N,32,32,3) in {CHUNK}-row chunks, int64 label")
    head = f"{'method':<16}" + "".join(f"{f + ' samples/s':>19} {'ratio':>9}" for f in files)
    print(head + "  note")
    print("-" * (len(head) + 30))
    for name in results[files[0]]:
        line = f"{name:<16}"
        for f in files:
            r = results[f][name][0]
            line += f"{r:>19,.0f} {r / results[f]['h5py-batches'][0]:>8.3f}x"
        print(line + "  " + results[files[0]][name][1])


def best(fn, repeat: int, limit: int | None = None) -> float:
    return max(rate(fn, limit) for _ in range(repeat))


def bench_file(
    path: Path, bs: int, quick: bool, repeat: int, slow: bool = False
) -> dict[str, tuple[float, str]]:
    """``slow``: per-batch h5py decodes a whole chunk per batch; time 300 batches of it."""
    for _ in range(2):  # warm-up: page cache
        h5py_blocks(path, bs)(None)
    few = 20 if quick else 60
    rows: dict[str, tuple[float, str]] = {}
    limit = 300 if slow else None
    rows["h5py-batches"] = (
        best(h5py_batches(path, bs), repeat, limit),
        "X[i:i+bs], Y[i:i+bs], in order" + (" (lzf-q16: first 300 batches)" if slow else ""),
    )
    rows["h5py-blocks"] = (best(h5py_blocks(path, bs), repeat), "runs of 16 chunks, sliced")
    rows["h5py-fancy"] = (rate(h5py_fancy(path, bs), few), f"X[sorted(idx)], {few} batches")
    rows["dask-batches"] = (rate(dask_batches(path, bs), few * 5), f"{few * 5} batches")
    try:
        rows["xbatcher"] = (rate(xbatcher_batches(path, bs), few * 5), f"{few * 5} batches")
    except ImportError:
        rows["xbatcher"] = (float("nan"), "not installed")
    with h5py.File(path, "r") as f:
        X, Y = f["image"][...], f["label"][...]
    rows["numpy"] = (best(numpy_batches(X, Y, bs), repeat), "in memory, upper bound")
    del X, Y
    rows["lazyh5 in order"] = (best(lazyh5_batches(path, bs, False), repeat), "full epoch")
    rows["lazyh5 shuffled"] = (
        best(lazyh5_batches(path, bs, True), repeat),
        "full epoch, window of 4 16-MiB blocks",
    )
    return rows


def bench_keras(path: Path, n: int, bs: int, repeat: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    with h5py.File(path, "r") as f:
        X, Y = f["image"][:n], f["label"][:n]
    ds = lazyh5.open_dataset(path)

    def model(warm):
        keras.utils.set_random_seed(0)
        m = keras.Sequential(
            [keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)]
        )
        m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        warm(m)  # trace the train step with this input pipeline before timing
        return m

    def numpy_fit(m, rows):
        m.fit(X[:rows], Y[:rows], batch_size=bs, epochs=1, verbose=0, shuffle=True)

    def lazy_fit(m, rows):
        loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=bs, seed=0, end=rows)
        m.fit(loader.keras(), epochs=1, verbose=0, shuffle=False)

    rates: dict[str, list[float]] = {"numpy": [], "lazyh5": []}
    for _ in range(repeat):  # interleaved: the machine is shared, its speed drifts
        for name, fit in (("numpy", numpy_fit), ("lazyh5", lazy_fit)):
            m = model(lambda m, fit=fit: fit(m, bs * 10))
            t = time.perf_counter()
            fit(m, n)
            rates[name].append(n / (time.perf_counter() - t))
    numpy_rate, lazy_rate = max(rates["numpy"]), max(rates["lazyh5"])
    print(
        f"\nKeras fit, one epoch, Flatten->Dense(10), backend {keras.backend.backend()}, "
        f"{path.name}, N={n}, batch {bs}, best of {repeat}"
    )
    print(f"{'numpy in memory':<20} {numpy_rate:>12,.0f} samples/s")
    ratio = lazy_rate / numpy_rate
    print(f"{'lazyh5 BatchLoader':<20} {lazy_rate:>12,.0f} samples/s   ratio {ratio:.3f}x")


def layout_sweep(args: argparse.Namespace, n: int, folder: Path) -> None:
    """``--sweep``: the loader's floors on every chunk layout (``feed_sweep.py``)."""
    from feed_sweep import sweep  # beside this script

    quick = args.quick
    sweep(
        folder,
        n,
        args.batch,
        repeat=1 if quick else args.repeat,
        epochs=2 if quick else args.epochs,
        budget=0.1 if quick else args.budget,
        kinds=args.kinds.split(","),
        chunks=[int(c) for c in args.chunks.split(",")],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--keras-n", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="N=20000, fewer slow batches")
    parser.add_argument("--dir", default=None, help="keep the generated files here")
    parser.add_argument("--repeat", type=int, default=2, help="full-epoch methods: best of")
    parser.add_argument(
        "--parallel", action="store_true", help="torch DataLoader workers and shards instead"
    )
    sweep = parser.add_argument_group("layout sweep")
    sweep.add_argument("--sweep", action="store_true", help="run the layout sweep instead")
    sweep.add_argument("--epochs", type=int, default=3, help="epochs per fresh loader (>= 2)")
    sweep.add_argument("--budget", type=float, default=2.0, help="seconds of h5py-batches")
    sweep.add_argument("--kinds", default="f4,u8,lzf,gzip", help="file kinds to sweep")
    sweep.add_argument("--chunks", default="16,64,256,1024", help="rows per HDF5 chunk")
    args = parser.parse_args()
    n = (4096 if args.sweep else 20_000) if args.quick else args.n
    if args.dir:
        folder = Path(args.dir)
        folder.mkdir(parents=True, exist_ok=True)
        run(args, n, folder)
        return
    # The generated files are GBs: remove them even when the run is interrupted.
    with tempfile.TemporaryDirectory(prefix="lazyh5-feed-") as tmp:
        run(args, n, Path(tmp))


def run(args: argparse.Namespace, n: int, folder: Path) -> None:
    if args.sweep:
        layout_sweep(args, n, folder)
        return
    if args.parallel:
        from feed_parallel import run as run_parallel  # beside this script

        paths = [folder / f"feed_{n}_{label}.h5" for label in ("raw", "lzf-q16")]
        for path, label in zip(paths, ("raw", "lzf-q16"), strict=True):
            make_file(path, n, *FILES[label])
        run_parallel(paths, args.batch, args.repeat, args.quick)
        return
    results = {}
    for label, (comp, quantised) in FILES.items():
        path = folder / f"feed_{n}_{label}.h5"
        make_file(path, n, comp, quantised)
        results[label] = bench_file(path, args.batch, args.quick, args.repeat, slow=quantised)
    table(n, args.batch, results)
    for label in FILES:
        print(f"  {label}: {stored(folder / f'feed_{n}_{label}.h5')}")
    raw = {k: v[0] for k, v in results["raw"].items()}
    lzf = {k: v[0] for k, v in results["lzf"].items()}
    print("\nFloors:")
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
        (
            "shuffled vs h5py-fancy, uncompressed >= 100",
            raw["lazyh5 shuffled"] / raw["h5py-fancy"],
            100,
        ),
        ("shuffled vs h5py-fancy, lzf >= 100", lzf["lazyh5 shuffled"] / lzf["h5py-fancy"], 100),
        ("shuffled vs xbatcher, uncompressed >= 20", raw["lazyh5 shuffled"] / raw["xbatcher"], 20),
        ("shuffled vs xbatcher, lzf >= 20", lzf["lazyh5 shuffled"] / lzf["xbatcher"], 20),
    ]
    for label, value, floor in checks:
        print(f"  {label:<50} {value:8.2f}  {'ok' if value >= floor else 'BELOW'}")
    for comp in ("raw", "lzf"):
        bench_keras(folder / f"feed_{n}_{comp}.h5", min(args.keras_n, n), args.batch, args.repeat)


if __name__ == "__main__":
    main()
