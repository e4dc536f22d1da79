"""What opening costs: lazyh5.open_dataset against h5py listing the same metadata.

Prints one table: for a file of 1,000 small datasets, the same made by
``lazyh5.create`` (dimension scales shared by every dataset, as netCDF4 stores them),
and one 10**12-element dataset that was never written, the time and peak memory of
(a) h5py opening the file and reading every dataset's shape/dtype/chunks/attrs,
(b) lazyh5.open_dataset, and the ratio (b)/(a). Each case runs in a fresh subprocess
so peak RSS is its own.

    python benchmarks/open.py [--datasets 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py

_H5PY = """
import json, resource, sys, time
import h5py
t = time.perf_counter()
with h5py.File(sys.argv[1], "r") as f:
    meta = {k: (d.shape, d.dtype, d.chunks, dict(d.attrs)) for k, d in f.items()}
took = time.perf_counter() - t
print(json.dumps([took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))
"""

_LAZYH5 = """
import json, resource, sys, time
import lazyh5
t = time.perf_counter()
ds = lazyh5.open_dataset(sys.argv[1])
took = time.perf_counter() - t
print(json.dumps([took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))
"""

_CREATE = """
import sys, warnings
import lazyh5
spec = {f"v{i:04d}": ((1000, 16), "f4") for i in range(int(sys.argv[2]))}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    lazyh5.create(sys.argv[1], spec, dims={k: ("row", "col") for k in spec}).close()
"""


def _run(code: str, path: Path) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    took, rss_kib = json.loads(out.stdout.strip().splitlines()[-1])
    return took, rss_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        many = Path(tmp) / "many.h5"
        with h5py.File(many, "w") as f:
            for i in range(args.datasets):
                d = f.create_dataset(f"v{i:04d}", (1000, 16), "f4", chunks=(100, 16))
                d.attrs["units"] = "m"
        scaled = Path(tmp) / "scaled.h5"
        # made in a subprocess: a child's peak RSS starts from its parent's size at fork,
        # so this process must not import lazyh5
        subprocess.run([sys.executable, "-c", _CREATE, str(scaled), str(args.datasets)], check=True)
        huge = Path(tmp) / "huge.h5"
        with h5py.File(huge, "w") as f:
            f.create_dataset("x", (1_000_000, 1_000_000), "f8", chunks=(1000, 1000))
        print(f"{'file':<28} {'method':<8} {'time (s)':>9} {'peak RSS (MiB)':>15} {'ratio':>7}")
        cases = (
            (f"{args.datasets} datasets", many),
            (f"{args.datasets} with dim. scales", scaled),
            ("10**12 elements", huge),
        )
        for label, path in cases:
            _run(_H5PY, path)  # warm-up: page cache and import caches
            base = _run(_H5PY, path)
            lazy = _run(_LAZYH5, path)
            print(f"{label:<28} {'h5py':<8} {base[0]:>9.3f} {base[1]:>15.0f} {1.0:>7.2f}")
            print(
                f"{label:<28} {'lazyh5':<8} {lazy[0]:>9.3f} {lazy[1]:>15.0f} "
                f"{lazy[0] / base[0]:>7.2f}"
            )


if __name__ == "__main__":
    main()
