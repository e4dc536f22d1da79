"""Remote files: lazyh5 against h5py over an fsspec file object, on an S3 API server.

The S3 API server (moto's server mode) and two proxies in front of it (one adding no
latency, one adding ``--latency`` seconds, 20 ms by default, to every request) run in
this process, on loopback (``tests/_servers.py``, ``tests/_proxy.py``); every measured
client runs in a subprocess of its own, so the servers never compete with it for the
GIL. Two files are uploaded: ``many.h5``, ``--datasets`` empty chunked datasets (plain
h5py, as ``open.py``) followed by ``--payload`` MiB of data, and ``train.h5``, ``--n``
images (16×16×3 float32, 64-row chunks) with an int64 label. Both are larger than
s3fs's 50 MiB read-ahead block at the default sizes, as training files are: smaller,
the baseline's first read fetches the whole file and the rest is a local read.

* open: ``lazyh5.open_dataset(url)`` and listing its variables, against
  ``h5py.File(fs.open(url))`` with s3fs's defaults and listing every dataset's shape,
  dtype and attributes (the usual recipe), and lazyh5 on the local file (its own cost
  of building the Dataset); ``--uncached``: also h5py with s3fs's cache off
  (``cache_type="none"``: one request per HDF5 read; slow, timed once);
* epoch: a shuffled ``BatchLoader`` epoch against a per-batch h5py loop over an s3fs
  file object (the HDF5Matrix loop: ``X[i:i+bs]``, ``Y[i:i+bs]``, batches in shuffled
  order; timed on its first ``--few`` batches, the rate compared), and the same loader
  on the local file.

Each client warms up once (connections, imports) and runs ``--repeat`` times; the best
time counts. Printed: times, ratios against the baselines of the same run, requests per
open or epoch (counted by the proxy), each client's peak RSS, and the floors.

    python benchmarks/remote.py [--datasets 1000] [--n 8192] [--latency 0.02] [--repeat 3]
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
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the loopback servers of the test suite

from tests._proxy import FaultProxy  # noqa: E402
from tests._servers import start_s3_server  # noqa: E402

_CLIENT = """
import json, sys, time
import numpy as np

case, url, options, repeat, batch, few = sys.argv[1:7]
options, repeat, batch, few = json.loads(options), int(repeat), int(batch), int(few)
import fsspec, h5py, lazyh5


def open_lazyh5():
    ds = lazyh5.open_dataset(url, storage_options=options or None)
    names = list(ds.data_vars)
    ds.close()
    return len(names)


def open_h5py(**kwargs):
    fs, path = fsspec.core.url_to_fs(url, **options)
    with fs.open(path, "rb", **kwargs) as fo, h5py.File(fo, "r") as f:
        listing = [(o.shape, o.dtype, dict(o.attrs)) for o in f.values()]
    return len(listing)


def epoch_lazyh5():
    ds = lazyh5.open_dataset(url, storage_options=options or None)
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=batch, seed=0)
    rows = sum(len(y) for x, y in loader)
    ds.close()
    return rows


def epoch_h5py():
    fs, path = fsspec.core.url_to_fs(url, **options)
    with fs.open(path, "rb") as fo, h5py.File(fo, "r") as f:
        X, Y = f["image"], f["label"]
        rows = 0
        for i in np.random.default_rng(0).permutation(np.arange(0, len(Y), batch))[:few]:
            x, y = X[i:i + batch], Y[i:i + batch]
            rows += len(y)
        return rows


def peak_mib():  # this process' own high-water mark (ru_maxrss keeps the parent's)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024


run = {"open-lazyh5": open_lazyh5, "open-h5py": open_h5py,
       "open-h5py-uncached": lambda: open_h5py(cache_type="none"),
       "epoch-lazyh5": epoch_lazyh5, "epoch-h5py": epoch_h5py}[case]
if repeat > 1:
    run()  # warm-up
best = float("inf")
for _ in range(repeat):
    t = time.perf_counter()
    count = run()
    best = min(best, time.perf_counter() - t)
print(json.dumps([best, count, peak_mib()]))
"""


def write_many(path: Path, datasets: int, payload_mib: int) -> Path:
    """``datasets`` chunked datasets of 1000×16 float32 with an attribute (never written,
    as in ``open.py``: their metadata is all the file holds of them), then a
    ``payload_mib`` MiB dataset of data, as a data file's metadata precedes its data."""
    with h5py.File(path, "w") as f:
        for i in range(datasets):
            d = f.create_dataset(f"v{i:04d}", (1000, 16), "f4", chunks=(100, 16))
            d.attrs["units"] = "m"
        rows = max(1, payload_mib * 2**20 // 4096)
        f.create_dataset("payload", data=np.random.default_rng(0).random((rows, 1024), "f4"))
    return path


def write_train(path: Path, n: int) -> Path:
    """``n`` images 16×16×3 float32 in 64-row chunks, and their labels."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "image", data=rng.random((n, 16, 16, 3), dtype=np.float32), chunks=(64, 16, 16, 3)
        )
        f.create_dataset("label", data=np.arange(n), chunks=(min(n, 1024),))
    return path


class Bench:
    """The servers, the uploaded files and the client runs."""

    def __init__(self, s3, proxies: dict[str, FaultProxy], args: argparse.Namespace) -> None:
        self.s3, self.proxies, self.args = s3, proxies, args

    def client(
        self, case: str, url: str, proxy: str | None, few: int = 0, repeat: int | None = None
    ) -> dict:
        """Run one client case; its best time, result, peak RSS and requests per run."""
        repeat = repeat or self.args.repeat
        options = self.s3.storage_options(self.proxies[proxy].url) if proxy else {}
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        )
        if proxy:
            self.proxies[proxy].reset_counts()
        argv = [case, url, json.dumps(options), repeat, self.args.batch, few]
        out = subprocess.run(
            [sys.executable, "-c", _CLIENT, *map(str, argv)],
            capture_output=True,
            text=True,
            env=env,
            timeout=1800,
        )
        if out.returncode:
            raise SystemExit(f"{case} through {proxy} failed:\n{out.stderr[-3000:]}")
        took, count, rss = json.loads(out.stdout.strip().splitlines()[-1])
        runs = repeat + (repeat > 1)
        requests = self.proxies[proxy].count() / runs if proxy else 0.0
        return {"time": took, "count": count, "rss": rss, "requests": requests}


def _row(label: str, value: str, r: dict, ratio: str = "") -> None:
    print(f"{label:<48}{value:>10}{r['requests']:>10.0f}{r['rss']:>10.0f}  {ratio}")


def _floor(floors: list, what: str, value: float, floor: float) -> None:
    met = value >= floor
    floors.append(met)
    print(f"  {what}: {value:.2f}x, floor >= {floor}x: {'met' if met else 'MISSED'}")


def run_open(bench: Bench, url: str, local: Path, floors: list) -> None:
    n = bench.args.datasets
    print(f"\nopen a file of {n:,} datasets and {bench.args.payload} MiB of data")
    print(f"{'case':<48}{'time (s)':>10}{'requests':>10}{'peak MiB':>10}  ratio")
    for proxy in ("0 ms", "latency"):
        base = bench.client("open-h5py", url, proxy)
        lazy = bench.client("open-lazyh5", url, proxy)
        assert base["count"] == lazy["count"] == n + 1, (base, lazy)
        tag = f"{bench.args.latency * 1000:.0f} ms" if proxy == "latency" else proxy
        ratio = base["time"] / lazy["time"]
        _row(f"h5py.File(s3fs file) + listing, {tag}", f"{base['time']:.3f}", base)
        _row(f"lazyh5.open_dataset, {tag}", f"{lazy['time']:.3f}", lazy, f"{ratio:.2f}x faster")
        _floor(floors, f"open, {tag}: h5py / lazyh5", ratio, 10)
    here = bench.client("open-lazyh5", str(local), None)
    _row("lazyh5.open_dataset, local file", f"{here['time']:.3f}", here)
    if bench.args.uncached:  # slow: one request per HDF5 read; one open, no warm-up
        base = bench.client("open-h5py-uncached", url, "0 ms", repeat=1)
        ratio = base["time"] / lazy["time"]
        _row("h5py.File(s3fs file, cache_type='none'), 0 ms", f"{base['time']:.3f}", base)
        print(f"  open, 0 ms: h5py uncached / lazyh5 ({tag}): {ratio:.2f}x (no floor)")


def run_epoch(bench: Bench, url: str, local: Path, floors: list) -> None:
    args = bench.args
    few = min(args.few, args.n // args.batch)
    tag = f"{args.latency * 1000:.0f} ms"
    mib = args.n * 3 * 2**10 / 2**20
    what = f"{args.n:,} images (16x16x3 float32, {mib:.0f} MiB)"
    print(f"\nshuffled epoch of {what}, batch {args.batch}")
    print(f"{'case':<48}{'samples/s':>10}{'requests':>10}{'peak MiB':>10}  ratio")
    base = bench.client("epoch-h5py", url, "latency", few)
    slow = bench.client("epoch-lazyh5", url, "latency")
    fast = bench.client("epoch-lazyh5", url, "0 ms")
    here = bench.client("epoch-lazyh5", str(local), None)
    for r in (base, slow, fast, here):
        r["rate"] = r["count"] / r["time"]
    rate = lambda r: f"{r['rate']:,.0f}"  # noqa: E731
    _row(f"h5py loop over s3fs file, {tag} ({few} batches)", rate(base), base)
    _row(f"lazyh5 BatchLoader, {tag}", rate(slow), slow, f"{slow['rate'] / base['rate']:.2f}x h5py")
    _row(
        "lazyh5 BatchLoader, 0 ms",
        rate(fast),
        fast,
        f"with {tag} {slow['rate'] / fast['rate']:.2f}x",
    )
    _row("lazyh5 BatchLoader, local file", rate(here), here)
    print(f"  requests per epoch: {slow['requests']:.0f} ({tag}), {fast['requests']:.0f} (0 ms)")
    print(f"  peak RSS remote / local: {slow['rss'] / here['rss']:.2f}x")
    _floor(floors, f"epoch, {tag}: lazyh5 / h5py loop", slow["rate"] / base["rate"], 10)
    _floor(floors, f"epoch: lazyh5 {tag} / lazyh5 0 ms", slow["rate"] / fast["rate"], 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=1000)
    parser.add_argument("--payload", type=int, default=64, help="MiB of data in many.h5")
    parser.add_argument("--n", type=int, default=32768, help="images in train.h5")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--few", type=int, default=10, help="batches of the h5py loop")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument(
        "--uncached", action="store_true", help="also open with s3fs's cache off (slow)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, start_s3_server() as s3:
        many_local = write_many(Path(tmp) / "many.h5", args.datasets, args.payload)
        many = s3.upload(many_local)
        local = write_train(Path(tmp) / "train.h5", args.n)
        train = s3.upload(local)
        with (
            FaultProxy(s3.endpoint) as plain,
            FaultProxy(s3.endpoint, latency=args.latency) as slow,
        ):
            bench = Bench(s3, {"0 ms": plain, "latency": slow}, args)
            floors: list[bool] = []
            print(f"loadavg {os.getloadavg()[0]:.2f}, best of {args.repeat} after a warm-up")
            run_open(bench, many, many_local, floors)
            run_epoch(bench, train, local, floors)
    print(f"\nFloors met: {sum(floors)} of {len(floors)}")


if __name__ == "__main__":
    main()
