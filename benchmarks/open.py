"""What opening costs: engine="lazyh5" against engine="h5netcdf" on the same files.

Four files: 1,000 small datasets written by plain h5py (no dimension scales: h5netcdf
names the axes phony_dim_*, lazyh5 its own way), the same made by ``lazyh5.create``
(dimension scales shared by every dataset, as netCDF4 stores them), one 10**12-element
dataset that was never written (HDF5 allocates chunks lazily), and a netCDF4 file with
groups written by h5netcdf (one group per 10 datasets, opened as a DataTree).

Each is opened three ways by each engine: ``xr.open_dataset(path, engine=E)`` (or
``xr.open_datatree``) with xarray's default ``chunks=None``, the same with
``chunks={}`` (dask arrays), and lazyh5's own ``lazyh5.open_dataset`` /
``lazyh5.open_datatree`` (dask arrays, no index for dimensions without coordinates),
whose baseline is h5netcdf with ``chunks={}``. Every (file, way, engine) runs in a fresh
subprocess that imports xarray, h5netcdf and lazyh5 first, opens once as a warm-up
(page cache, import caches), then opens and closes ``--repeat`` times (and for at
least a second: millisecond opens repeat up to 200 times); the best time counts.
Prints one table: the case, h5netcdf's time, lazyh5's, the ratio lazyh5 / h5netcdf
(below 1: lazyh5 is faster), and each subprocess' peak RSS.

    python benchmarks/open.py [--datasets 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py

_OPEN = """
import json, resource, sys, time, warnings
import h5netcdf, xarray as xr
import lazyh5

path, engine, way, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tree = path.endswith(".nc")
if way == "lazyh5":  # lazyh5's own functions
    opener = lazyh5.open_datatree if tree else lazyh5.open_dataset
    kwargs = {}
else:
    opener = xr.open_datatree if tree else xr.open_dataset
    kwargs = {"engine": engine, "chunks": None if way == "none" else {}}
warnings.simplefilter("ignore")  # h5netcdf's phony_dims notice, once per open
best, i, start = float("inf"), 0, time.perf_counter()
# the first open is the warm-up; fast opens (milliseconds, where a busy machine's
# scheduling noise dominates) repeat for at least a second, up to 200 times
while i <= repeat or (time.perf_counter() - start < 1.0 and i <= 200):
    t = time.perf_counter()
    ds = opener(path, **kwargs)
    took = time.perf_counter() - t
    ds.close()
    if i:
        best = min(best, took)
    i += 1
print(json.dumps([best, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))
"""

_CREATE = """
import sys, warnings
import lazyh5
spec = {f"v{i:04d}": ((1000, 16), "f4") for i in range(int(sys.argv[2]))}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    lazyh5.create(sys.argv[1], spec, dims={k: ("row", "col") for k in spec}).close()
"""

_GROUPS = """
import sys
import numpy as np, xarray as xr
n = int(sys.argv[2])
time = np.arange(100)
groups = {"/": xr.Dataset(coords={"time": time}, attrs={"title": "groups"})}
for g in range(max(1, n // 10)):
    groups[f"/g{g:03d}"] = xr.Dataset(
        {f"v{i}": (("time", "x"), np.zeros((100, 16), "f4"), {"units": "m"}) for i in range(10)},
        coords={"x": np.arange(16)},
    )
xr.DataTree.from_dict(groups).to_netcdf(sys.argv[1], engine="h5netcdf")
"""

_WAYS = {"none": "", "dask": ", chunks={}", "lazyh5": ""}


def _run(path: Path, engine: str, way: str, repeat: int) -> tuple[float, float]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-c", _OPEN, str(path), engine, way, str(repeat)],
        capture_output=True,
        text=True,
        env=env,
    )
    if out.returncode:
        raise SystemExit(f"{engine} {way} on {path.name} failed:\n{out.stderr[-3000:]}")
    took, rss_kib = json.loads(out.stdout.strip().splitlines()[-1])
    return took, rss_kib / 1024


def _label(name: str, tree: bool, way: str) -> str:
    if way == "lazyh5":
        return f"{name}: lazyh5.{'open_datatree' if tree else 'open_dataset'}()"
    return f"{name}: {'open_datatree' if tree else 'open_dataset'}({_WAYS[way].lstrip(', ')})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="timed opens after the warm-up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        many = Path(tmp) / "many.h5"
        with h5py.File(many, "w") as f:
            for i in range(args.datasets):
                d = f.create_dataset(f"v{i:04d}", (1000, 16), "f4", chunks=(100, 16))
                d.attrs["units"] = "m"
        scaled = Path(tmp) / "scaled.h5"
        # made in a subprocess: a child's peak RSS starts from its parent's size at fork,
        # so this process must not import lazyh5 (nor xarray)
        subprocess.run([sys.executable, "-c", _CREATE, str(scaled), str(args.datasets)], check=True)
        huge = Path(tmp) / "huge.h5"
        with h5py.File(huge, "w") as f:
            f.create_dataset("x", (1_000_000, 1_000_000), "f8", chunks=(1000, 1000))
        groups = Path(tmp) / "groups.nc"
        subprocess.run([sys.executable, "-c", _GROUPS, str(groups), str(args.datasets)], check=True)
        n_groups = max(1, args.datasets // 10)
        cases = (
            (f"{args.datasets} datasets", many),
            (f"{args.datasets} with dim. scales", scaled),
            ("10**12 elements", huge),
            (f"{n_groups} groups", groups),
        )
        labels = [_label(n, p.suffix == ".nc", w) for n, p in cases for w in _WAYS]
        width = max(map(len, labels))
        print(
            f"best of {args.repeat} opens after a warm-up; baseline of the lazyh5.* rows: "
            "h5netcdf with chunks={}"
        )
        print(
            f"{'case':<{width}} {'h5netcdf (s)':>12} {'lazyh5 (s)':>10} {'ratio':>6} "
            f"{'RSS h5netcdf':>12} {'RSS lazyh5 (MiB)':>16}",
            flush=True,
        )
        for name, path in cases:
            baselines = {w: _run(path, "h5netcdf", w, args.repeat) for w in ("none", "dask")}
            for way in _WAYS:
                base = baselines["none" if way == "none" else "dask"]
                lazy = _run(path, "lazyh5", way, args.repeat)
                label = _label(name, path.suffix == ".nc", way)
                print(
                    f"{label:<{width}} {base[0]:>12.4f} {lazy[0]:>10.4f} "
                    f"{lazy[0] / base[0]:>6.2f} {base[1]:>12.0f} {lazy[1]:>16.0f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
