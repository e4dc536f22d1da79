"""Memory and speed of the out-of-core paths, against the h5netcdf engine on the same file.

Prints two tables.

1. For uint8 image files (N×32×32×3, made by ``lazyh5.create`` with its defaults) of each
   ``--sizes``, and dask's threaded scheduler at each ``--threads`` (threads, not cores:
   16 threads run on a 2-core machine and hold what 16 cores would), the two calls of
   the README's style, each in a fresh process:

   - ``mean``: ``float((ds["image"] / 255).mean())``;
   - ``to_hdf5``: ``((ds["image"] / 255 - 0.5) / 0.25).astype("f2")`` written to a new
     file (lazyh5: ``lazyh5.to_hdf5``; h5netcdf: xarray's ``to_netcdf(engine="h5netcdf")``).

   Methods: ``lazyh5`` (``lazyh5.open_dataset``, default memory budget), ``h5netcdf``
   (``xr.open_dataset(engine="h5netcdf", chunks={})``: dask chunks = HDF5 chunks) and
   ``lazyh5-128MiB`` (the same calls with the dask chunks lazyh5 chose before the
   budget: 128 MiB of stored bytes; skipped above ``--before-max-threads`` threads,
   where it needs 14 GB for a 2 GB file). Columns: peak RSS over the opened dataset
   (``VmHWM`` minus the resident size after opening), uint8 MB/s, and the rate as a
   ratio to h5netcdf's and to lazyh5-128MiB's in the same run.

2. Random access: 100 sorted random rows, ``ds["image"].isel(sample=idx).values``,
   best of 5 after a warm-up, for h5py's fancy read ``dset[idx]`` (the baseline),
   ``lazyh5.open_dataset``, ``xr.open_dataset(engine="h5netcdf", chunks={})`` and
   ``xr.open_dataset(engine="lazyh5")`` without dask; ratios to h5py.

Floors: peak RSS under 512 MiB at 16 threads for both calls whatever the file size; lazyh5
rates ≥ 1.0× h5netcdf and ≥ 0.9× lazyh5-128MiB; random rows ≤ 2× h5py.

    python benchmarks/memory.py                          # 1 GB and 4 GB, 2 and 16 threads
    python benchmarks/memory.py --sizes 0.2 --threads 8  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROW = 32 * 32 * 3
MiB = 1 << 20

_CALL = """
import json, os, sys, time
import dask
path, method, call, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
dask.config.set(num_workers=threads, scheduler="threads")  # as on a machine of this many cores
import xarray as xr
import lazyh5

def rss():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) * 1024

if method == "h5netcdf":
    ds = xr.open_dataset(path, engine="h5netcdf", chunks={})
elif method == "lazyh5-128MiB":
    # The dask chunks lazyh5.open_dataset chose before the budget: 128 MiB stored.
    rows = (128 * 2**20 // (32 * 32 * 3)) // 341 * 341
    ds = lazyh5.open_dataset(path, chunks={"sample": rows})
else:
    ds = lazyh5.open_dataset(path)
base = rss()
out = path + f".{os.getpid()}.out.h5"
start = time.perf_counter()
if call == "mean":
    float((ds["image"] / 255).mean())
else:
    result = ds[["image"]].assign(image=((ds["image"] / 255 - 0.5) / 0.25).astype("f2"))
    if method == "h5netcdf":
        result.to_netcdf(out, engine="h5netcdf")
    else:
        lazyh5.to_hdf5(out, result, progress=False)
took = time.perf_counter() - start
# VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's size at fork.
with open("/proc/self/status") as f:
    peak = int(f.read().split("VmHWM:")[1].split()[0]) * 1024
if os.path.exists(out):
    os.remove(out)
print(json.dumps({"peak": peak - base, "seconds": took, "rows": ds["image"].chunks[0][0]}))
"""

_RANDOM = """
import json, sys, time
import h5py, numpy as np, xarray as xr
import lazyh5
path = sys.argv[1]
with h5py.File(path, "r") as f:
    n = f["image"].shape[0]
idx = np.sort(np.random.default_rng(0).choice(n, 100, replace=False))

def best(fn):
    fn()  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)

out = {}
with h5py.File(path, "r") as f:
    out["h5py fancy"] = best(lambda: f["image"][idx])
ds = lazyh5.open_dataset(path)
out["lazyh5.open_dataset"] = best(lambda: ds["image"].isel(sample=idx).values)
hn = xr.open_dataset(path, engine="h5netcdf", chunks={})
out["h5netcdf chunks={}"] = best(lambda: hn["image"].isel(sample=idx).values)
plain = xr.open_dataset(path, engine="lazyh5")
out["lazyh5 engine, no dask"] = best(lambda: plain["image"].isel(sample=idx).values)
print(json.dumps(out))
"""

_MAKE = """
import sys
import numpy as np
import lazyh5
n = int(sys.argv[2])
ds = lazyh5.create(sys.argv[1], {"image": ((n, 32, 32, 3), "u1")},
                   dims={"image": ("sample", "y", "x", "channel")})
rng = np.random.default_rng(0)
block = rng.integers(0, 256, (20_000, 32, 32, 3), dtype=np.uint8)
for start in range(0, n, 20_000):
    stop = min(n, start + 20_000)
    ds["image"].h5[start:stop] = block[: stop - start]
ds.close()
"""


def _run(code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _file(folder: Path, gigabytes: float) -> Path:
    n = int(gigabytes * 1e9 / ROW)
    path = folder / f"uint8-{gigabytes:g}GB.h5"
    if not path.exists():
        subprocess.run([sys.executable, "-c", _MAKE, str(path), str(n)], check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,4", help="file sizes in GB, comma-separated")
    parser.add_argument("--threads", default="2,16", help="dask threads, comma-separated")
    parser.add_argument("--before-max-threads", type=int, default=2)
    parser.add_argument("--dir", help="where the files go (kept); a temporary folder if unset")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        files = {size: _file(folder, size) for size in sizes}
        head = (
            f"{'file':>7} {'threads':>7} {'call':<8} {'method':<14} {'chunk rows':>10} "
            f"{'peak MiB':>9} {'MB/s':>7} {'vs h5netcdf':>11} {'vs 128MiB':>9}"
        )
        print(head)
        for size, path in files.items():
            nbytes = os.path.getsize(path)
            _run(_RANDOM, str(path))  # warm-up: the file into the page cache
            for n in threads:
                for call in ("mean", "to_hdf5"):
                    methods = ["h5netcdf", "lazyh5"]
                    if n <= args.before_max_threads:
                        methods.append("lazyh5-128MiB")
                    got = {m: _run(_CALL, str(path), m, call, str(n)) for m in methods}
                    rate = {m: nbytes / g["seconds"] / 1e6 for m, g in got.items()}
                    for m, g in got.items():
                        vs_before = (
                            f"{rate[m] / rate['lazyh5-128MiB']:>9.2f}"
                            if "lazyh5-128MiB" in rate
                            else f"{'-':>9}"
                        )
                        print(
                            f"{size:>5g}GB {n:>7} {call:<8} {m:<14} {g['rows']:>10} "
                            f"{g['peak'] / MiB:>9.0f} {rate[m]:>7.0f} "
                            f"{rate[m] / rate['h5netcdf']:>11.2f} {vs_before}"
                        )
        print()
        print(f"{'file':>7} {'100 random rows':<24} {'seconds':>8} {'vs h5py':>8}")
        for size, path in files.items():
            times = _run(_RANDOM, str(path))
            for method, took in times.items():
                ratio = took / times["h5py fancy"]
                print(f"{size:>5g}GB {method:<24} {took:>8.4f} {ratio:>8.2f}")
    print(
        "\nfloors: peak < 512 MiB at 16 threads; lazyh5 >= 1.0x h5netcdf and >= 0.9x "
        "lazyh5-128MiB; random rows <= 2x h5py"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
