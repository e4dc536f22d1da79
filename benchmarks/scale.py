"""Read throughput: h5py single process vs lazyh5 parallel decode vs a LocalCluster.

On a gzip+shuffle-compressed image file (``--n`` images of 32×32×3 float32, HDF5
chunks of 256 rows; built once and reused), each case sums the whole array blockwise
(so every chunk is read and decoded once) after one warm-up pass that fills the OS page
cache. The best of ``--repeat`` timings is reported, with the ratio to ``h5py-blocks``
from the same run:

- ``h5py-blocks``: one process, one thread, h5py reading whole runs of chunks (the same
  rows per read as lazyh5's dask chunks) — what a careful h5py user writes;
- ``lazyh5-threads``: ``lazyh5.open_dataset`` + dask's local threaded scheduler; chunks
  are decoded outside the HDF5 lock (lazyh5.backend.read);
- ``lazyh5-h5py-lock``: the same, with parallel decoding switched off (every read
  through h5py under its lock), to show what the parallel path buys;
- ``lazyh5-1-thread``: dask's synchronous scheduler and one decode thread: what the
  parallel path costs per core;
- ``cluster-Nw``: the same computation on a ``LocalCluster`` of N worker processes
  (one thread each; each worker decodes a task's chunks in its own decode threads);
  ``cluster-Nw-1dt``: with ``LAZYH5_DECODE_THREADS=1``, one decoding thread per worker,
  which shows how throughput scales with worker processes alone.

With ``--write-n N`` (0: skip), the write path too: in-place normalisation
``ds["image"].h5[:] = (x - x.mean()) / x.std()`` of an uncompressed file of ``N``
images, in blocks of 16 MiB, on the threaded scheduler (``inplace-threads``) and on
each cluster (``inplace-Nw``, the file opened writable under the ``Client``, so reads
and writes go through its cluster-wide lock; see docs/distributed.md).

    python benchmarks/scale.py [--n 100000] [--workers 1 2] [--repeat 3] [--path FILE]
                               [--write-n 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import dask
import h5py
import numpy as np

import lazyh5
from lazyh5.backend import decode

CHUNK_ROWS = 256


def build(path: Path, n: int) -> None:
    """Smooth 8-bit-like images (compress ~3× with gzip+shuffle), written in blocks."""
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32) / 32
    with h5py.File(tmp, "w") as f:
        dset = f.create_dataset(
            "image",
            (n, 32, 32, 3),
            "f4",
            chunks=(CHUNK_ROWS, 32, 32, 3),
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )
        f.create_dataset("label", data=rng.integers(0, 10, n), chunks=(min(n, 65536),))
        step = CHUNK_ROWS * 40
        for start in range(0, n, step):
            m = min(step, n - start)
            a, b, c = (rng.random((3, m, 1, 1, 1), dtype=np.float32) * 4).astype(np.float32)
            img = a * yy[None, :, :, None] + b * xx[None, :, :, None] + c * np.arange(3) / 3
            noise = rng.integers(0, 8, img.shape).astype(np.float32) / 255
            dset[start : start + m] = np.round((img % 1) * 255) / 255 + noise
    tmp.rename(path)


def build_plain(path: Path, n: int) -> None:
    """Uncompressed float32 images, for the in-place write case."""
    tmp = path.with_suffix(".tmp")
    rng = np.random.default_rng(1)
    with h5py.File(tmp, "w") as f:
        dset = f.create_dataset("image", (n, 32, 32, 3), "f4", chunks=(CHUNK_ROWS, 32, 32, 3))
        step = CHUNK_ROWS * 40
        for start in range(0, n, step):
            m = min(step, n - start)
            dset[start : start + m] = rng.random((m, 32, 32, 3), dtype=np.float32)
    tmp.rename(path)


def inplace(path: Path) -> float:
    """Normalise the file's images in place; the mean afterwards (about 0)."""
    with dask.config.set({"array.chunk-size": "16MiB"}):
        ds = lazyh5.open_dataset(path, mode="r+")
        try:
            x = ds["image"]
            ds["image"].h5[:] = (x - x.mean()) / x.std()
            return float(ds["image"].data[:1000].mean().compute())
        finally:
            ds.close()


def h5py_blocks(path: Path, rows: int) -> float:
    total = 0.0
    with h5py.File(path, "r") as f:
        dset = f["image"]
        for start in range(0, dset.shape[0], rows):
            total += float(dset[start : start + rows].sum(dtype=np.float64))
    return total


def lazyh5_sum(path: Path) -> float:
    ds = lazyh5.open_dataset(path)
    try:
        return float(ds["image"].data.sum(dtype=np.float64).compute())
    finally:
        ds.close()


def best_of(repeat: int, fn, *args) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn(*args)
        times.append(time.perf_counter() - t)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of 32×32×3 images")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--path", type=Path, default=None, help="file to build/reuse")
    parser.add_argument("--write-n", type=int, default=0, help="images for the write case")
    args = parser.parse_args()

    path = args.path or Path(tempfile.gettempdir()) / "lazyh5-bench" / f"scale-{args.n}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        t = time.perf_counter()
        build(path, args.n)
        print(f"built {path} in {time.perf_counter() - t:.1f}s")
    raw_mb = args.n * 32 * 32 * 3 * 4 / 1e6
    ds = lazyh5.open_dataset(path)
    rows = ds["image"].data.chunksize[0]
    print(
        f"file: {path} ({os.path.getsize(path) / 1e6:.0f} MB on disk, {raw_mb:.0f} MB decoded), "
        f"N={args.n}, HDF5 chunks {CHUNK_ROWS} rows, dask/h5py blocks {rows} rows, "
        f"{os.cpu_count()} CPUs"
    )
    ds.close()

    results: list[tuple[str, float]] = []
    h5py_blocks(path, rows)  # warm-up: page cache
    t, expected = best_of(args.repeat, h5py_blocks, path, rows)
    results.append(("h5py-blocks", t))

    def run(name: str, scheduler: str | None, threads: str | None = None, plain: bool = False):
        env = {"LAZYH5_DECODE_THREADS": threads} if threads else {}
        saved_env = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        saved = decode.format_of
        if plain:
            decode.format_of = lambda dset: None  # every read through h5py's own filters
        try:
            # None: the active distributed Client (the default scheduler while it lives).
            with dask.config.set(scheduler=scheduler) if scheduler else contextlib.nullcontext():
                lazyh5_sum(path)  # warm-up
                t, value = best_of(args.repeat, lazyh5_sum, path)
        finally:
            decode.format_of = saved
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k)
                else:
                    os.environ[k] = v
        assert np.isclose(value, expected, rtol=1e-9), (name, value, expected)
        results.append((name, t))

    run("lazyh5-threads", "threads")
    run("lazyh5-h5py-lock", "threads", plain=True)
    run("lazyh5-1-thread", "sync", threads="1")

    from distributed import Client, LocalCluster

    writes: list[tuple[str, float]] = []
    plain = path.parent / f"inplace-{args.write_n}.h5"
    if args.write_n:
        if not plain.exists():
            build_plain(plain, args.write_n)
        with dask.config.set(scheduler="threads"):
            inplace(plain)  # warm-up
            t, mean = best_of(args.repeat, inplace, plain)
        assert abs(mean) < 0.05, mean
        writes.append(("inplace-threads", t))

    for n_workers in args.workers:
        for threads in ("1", None):
            # Worker processes inherit LAZYH5_DECODE_THREADS from this environment.
            os.environ.pop("LAZYH5_DECODE_THREADS", None)
            if threads:
                os.environ["LAZYH5_DECODE_THREADS"] = threads
            try:
                with (
                    LocalCluster(
                        n_workers=n_workers,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=None,
                    ) as cluster,
                    Client(cluster),
                ):
                    label = f"cluster-{n_workers}w" + ("-1dt" if threads else "")
                    run(label, None)
                    if args.write_n and threads is None:
                        inplace(plain)  # warm-up
                        t, mean = best_of(args.repeat, inplace, plain)
                        assert abs(mean) < 0.05, mean
                        writes.append((f"inplace-{n_workers}w", t))
            finally:
                os.environ.pop("LAZYH5_DECODE_THREADS", None)

    base = results[0][1]
    print(f"{'case':<18}{'seconds':>9}{'MB/s':>9}{'× h5py-blocks':>15}")
    for name, t in results:
        print(f"{name:<18}{t:>9.2f}{raw_mb / t:>9.0f}{base / t:>15.2f}")
    if writes:
        mb = args.write_n * 32 * 32 * 3 * 4 / 1e6
        print(f"\nin place, {args.write_n} images ({mb:.0f} MB read and written), 16 MiB blocks")
        print(f"{'case':<18}{'seconds':>9}{'MB/s':>9}{'× threads':>11}")
        for name, t in writes:
            print(f"{name:<18}{t:>9.2f}{mb / t:>9.0f}{writes[0][1] / t:>11.2f}")


if __name__ == "__main__":
    main()
