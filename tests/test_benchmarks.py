"""The benchmark scripts run end to end at small sizes and print their tables.

Their figures at these sizes mean nothing (fixed costs dominate); what is checked is that
the scripts the performance claims come from still run against the current code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(tmp_path: Path, script: str, *args: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_feed_benchmark_prints_every_method_file_and_floor(tmp_path):
    out = _run(
        tmp_path, "feed.py", "--n", "4096", "--repeat", "1", "--keras-n", "320", "--dir", "f"
    )
    head = next(line for line in out.splitlines() if line.startswith("method"))
    for label in ("raw", "lzf", "lzf-q16"):
        assert f"{label} samples/s" in head
    for method in ("h5py-batches", "h5py-fancy", "xbatcher", "lazyh5 in order", "lazyh5 shuffled"):
        assert any(line.startswith(method) for line in out.splitlines()), method
    assert "lzf-q16: lzf: 16 of 16 chunks compressed" in out
    assert out.count(">= ") == 8  # the eight floors
    assert out.count("lazyh5 BatchLoader") == 2  # Keras fit on both protocol files


def test_feed_sweep_reports_every_layout_ratio_and_floor(tmp_path):
    out = _run(tmp_path, "feed.py", "--sweep", "--quick", "--dir", "f")
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith("file"))
    for column in ("h5py-batches/s", "in order ÷ h5py", "shuffled ÷ in order", "1st ÷ steady"):
        assert column in head, column
    kinds, chunks = ("f4", "u8", "lzf", "gzip"), ("16", "64", "256", "1,024")
    rows = [line.split() for line in lines if line.split()[:1] and line.split()[0] in kinds]
    assert {(r[0], r[1]) for r in rows} == {(k, c) for k in kinds for c in chunks}
    assert len(rows) == 16
    for r in rows:  # four ratios, each followed by its verdict and floor
        verdicts = [r[i + 1] for i in range(5, len(r), 3)]
        assert len(verdicts) == 4 and set(verdicts) <= {"met", "MISSED"}, r
        assert all(float(r[i]) > 0 for i in range(5, len(r), 3)), r
    assert "Floors met:" in out
    assert "gzip/16: gzip: 64 of 64 chunks compressed" in out  # the data does compress
    touch = re.search(
        r"fresh memory: up to (\d+) ms per 64 MiB touched first, (\d+) ms reused", out
    )
    assert touch and int(touch[1]) > 0 and int(touch[2]) > 0  # 16,384 page writes each


def test_open_benchmark_compares_with_h5netcdf_on_every_file(tmp_path):
    out = _run(tmp_path, "open.py", "--datasets", "20", "--repeat", "1")
    head = next(line for line in out.splitlines() if line.startswith("case"))
    assert "h5netcdf (s)" in head and "lazyh5 (s)" in head and "ratio" in head
    rows = [line for line in out.splitlines() if ": " in line and "open_data" in line]
    for case in ("20 datasets", "20 with dim. scales", "10**12 elements", "2 groups"):
        assert sum(line.startswith(case + ":") for line in rows) == 3, case
    assert sum("open_datatree" in line for line in rows) == 3
    for line in rows:  # both times and the ratio are numbers
        h5netcdf, lazy, ratio = map(float, line.split(")")[-1].split()[:3])
        assert h5netcdf > 0 and lazy > 0 and ratio > 0


def test_preprocess_benchmark(tmp_path):
    out = _run(tmp_path, "preprocess.py", "--n", "1024", "--repeat", "1", "--dir", "p")
    assert "to_hdf5 normalise (default)" in out and "peak RSS" in out


@pytest.mark.filterwarnings("ignore")
def test_scale_benchmark_with_a_local_cluster(tmp_path):
    out = _run(
        tmp_path, "scale.py", "--n", "2048", "--workers", "1", "--repeat", "1", "--path", "s.h5"
    )
    assert "lazyh5-threads" in out and "cluster-1w" in out


def test_memory_benchmark(tmp_path):
    out = _run(tmp_path, "memory.py", "--sizes", "0.02", "--threads", "2,4", "--dir", "m")
    for method in ("h5netcdf", "lazyh5", "lazyh5-128MiB"):
        assert f" {method} " in out
    assert "lazyh5.open_dataset" in out and "h5py fancy" in out


def test_remote_benchmark_against_the_loopback_s3_server(tmp_path):
    pytest.importorskip("moto.server")
    out = _run(
        tmp_path,
        "remote.py",
        *("--datasets", "20", "--payload", "1", "--n", "512", "--repeat", "1", "--few", "2"),
    )
    for case in (
        "h5py.File(s3fs file) + listing, 0 ms",
        "lazyh5.open_dataset, 20 ms",
        "h5py loop over s3fs file, 20 ms (2 batches)",
        "lazyh5 BatchLoader, 20 ms",
        "lazyh5 BatchLoader, 0 ms",
        "lazyh5 BatchLoader, local file",
    ):
        line = next((x for x in out.splitlines() if x.startswith(case)), None)
        assert line, f"no row {case!r}:\n{out}"
        assert float(line[len(case) :].split()[0].replace(",", "")) > 0, line
    assert re.search(r"requests per epoch: [1-9]\d* \(20 ms\)", out), out
    assert out.count("floor >= ") == 4 and "Floors met:" in out
