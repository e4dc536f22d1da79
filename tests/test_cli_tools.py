"""The console tools as a user runs them: ``demo``, ``show``, ``bench`` and ``rechunk``.

Every command runs as a subprocess (``python -m lazyh5.cli.main``) on small real files;
the outputs are checked by opening them (PNGs decoded, HDF5 files read back).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import pty
import struct
import subprocess
import sys
import termios

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5.backend.chunking import row_chunks
from lazyh5.feed.layout import MAX_CHUNK_BYTES, MIN_CHUNK_BYTES
from lazyh5.write.to_hdf5 import partial_path
from tests._process import run_lazyh5

_QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "3"}  # TensorFlow's start-up log lines


def _png(path) -> np.ndarray:
    """Decode a PNG (fails unless it is one); returns the pixels (rows, columns, channels)."""
    import matplotlib.image

    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return matplotlib.image.imread(path)


@pytest.fixture
def awkward_file(tmp_path):
    """A layout that feeds badly: gzip chunks splitting each image, 1-row label chunks."""
    path = tmp_path / "awkward.h5"
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "image",
            data=rng.random((1000, 16, 16, 3), dtype=np.float32),
            chunks=(100, 8, 8, 3),
            compression="gzip",
        )
        f.create_dataset("label", data=np.arange(1000) % 10, chunks=(1,))
    return path


# -- demo ---------------------------------------------------------------------------


def _check_demo_folder(out) -> None:
    files = sorted(os.listdir(out))
    assert "images.h5" in files, files
    raw = lazyh5.open_dataset(out / "images.h5")
    assert raw["image"].shape == (1000, 32, 32, 3) and raw["image"].dtype == np.uint8
    assert raw["label"][10:20].values.tolist() == list(range(10))  # the assigned slice
    prepped = [f for f in files if f.endswith(".h5") and f != "images.h5"]
    assert prepped, f"no preprocessed file in {files}"
    pre = lazyh5.open_dataset(out / prepped[0])
    assert pre["image"].dtype.kind == "f" and pre["image"].shape == (1000, 32, 32, 3)
    assert "summary.png" in files, files  # it must decode and be a real figure
    pixels = _png(out / "summary.png")
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 300, pixels.shape


def test_demo_tiny_without_training(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    res = run_lazyh5("demo", "--size", "tiny", "--out", out, "--no-train")
    assert res.returncode == 0, res.stderr
    _check_demo_folder(out)


@pytest.mark.keras
def test_demo_tiny_with_training(tmp_path):
    pytest.importorskip("keras")
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    res = run_lazyh5(
        "demo", "--size", "tiny", "--out", out, "--epochs", "1", timeout=300, env=_QUIET_TF
    )
    assert res.returncode == 0, res.stderr
    assert "accuracy" in res.stdout.lower()
    _check_demo_folder(out)


# -- show ---------------------------------------------------------------------------


def test_show_writes_a_png_of_the_rows(lzf_feed_file, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "grid.png"
    res = run_lazyh5("show", lzf_feed_file, "image", "--index", "0:16", "-o", out)
    assert res.returncode == 0, res.stderr
    assert "16 rows" in res.stdout
    # two rows of eight 1.6-inch thumbnails (+0.4 in title) at 100 dpi
    assert _png(out).shape[:2] == (round(100 * (2 * 1.6 + 0.4)), round(100 * 8 * 1.6))


# -- bench --------------------------------------------------------------------------


def test_bench_json(lzf_feed_file):
    res = run_lazyh5(
        "bench", lzf_feed_file, "--x", "image", "--y", "label", "--max-samples", "1024", "--json"
    )
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["file"].endswith("feed.h5")
    assert (report["x"], report["y"], report["rows"], report["batch_size"]) == (
        "image",
        "label",
        1024,
        32,
    )
    assert set(report["methods"]) == {
        "h5py-batches",
        "h5py-blocks",
        "lazyh5 in order",
        "lazyh5 shuffled",
    }
    for name, m in report["methods"].items():
        assert m["samples"] == 1024, name  # one pass over the first 1024 rows
        for key in ("samples_per_s", "ratio_vs_h5py"):
            assert isinstance(m[key], float) and math.isfinite(m[key]) and m[key] > 0, (name, m)
    assert report["methods"]["h5py-batches"]["ratio_vs_h5py"] == 1.0
    image = report["chunks"]["image"]
    assert image["chunks"] == [512, 8, 8, 3] and image["rows_per_chunk"] == 512
    assert image["chunk_bytes"] == 512 * 8 * 8 * 3 * 4
    assert image["recommended_chunks"] == list(row_chunks((2048, 8, 8, 3), "f4", power_of_two=True))
    assert report["compression"] == {"image": "lzf", "label": None}
    assert report["limits"] and all(isinstance(s, str) for s in report["limits"])
    # 384 KiB chunks of whole rows: nothing to change
    assert report["recommendation"].startswith("keep this layout"), report["recommendation"]


def test_bench_explains_a_bad_layout(awkward_file):
    res = run_lazyh5("bench", awkward_file, "--x", "image", "--y", "label", "--seconds", "0.3")
    assert res.returncode == 0, res.stderr
    text = res.stdout
    for method in ("h5py-batches", "h5py-blocks", "lazyh5 in order", "lazyh5 shuffled"):
        assert method in text
    assert "split each sample over 4 chunks" in text
    assert "gzip" in text
    assert "touches" in text and "chunks of 8 B" in text  # the 1-row label chunks
    rec = text.split("recommendation", 1)[1]
    assert f"lazyh5 rechunk {awkward_file} " in rec and "--for-training" in rec
    assert "rows per chunk" in rec


def test_bench_errors_name_the_file_and_variable(lzf_feed_file, tmp_path, capsys):
    from lazyh5.cli.main import main

    missing = tmp_path / "nope.h5"
    res = run_lazyh5("bench", missing, "--x", "image")
    assert res.returncode == 2 and str(missing) in res.stderr and "Traceback" not in res.stderr

    def error(*args) -> str:  # the same entry point, in this process (quicker)
        assert main(["bench", str(lzf_feed_file), "--x", "image", *args]) == 2
        return capsys.readouterr().err

    err = error("--y", "labels")
    assert "'labels'" in err and str(lzf_feed_file) in err
    assert "--batch-size" in error("--batch-size", "0")


# -- rechunk ------------------------------------------------------------------------


def _same_values(a, b) -> None:
    ds_a, ds_b = lazyh5.open_dataset(a), lazyh5.open_dataset(b)
    assert set(ds_a.data_vars) == set(ds_b.data_vars)
    for name in ds_a.data_vars:
        np.testing.assert_array_equal(ds_a[name].values, ds_b[name].values)
        assert ds_a[name].dtype == ds_b[name].dtype


def test_rechunk_for_training(awkward_file, tmp_path):
    out = tmp_path / "train.h5"
    res = run_lazyh5("rechunk", awkward_file, out, "--for-training", "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "100x8x8x3, gzip(4)  ->  256x16x16x3, lzf" in res.stdout
    assert "1, uncompressed" in res.stdout and "->  1000, lzf" in res.stdout
    _same_values(awkward_file, out)
    with h5py.File(out, "r") as f:
        image, label = f["image"], f["label"]
        training = row_chunks((1000, 16, 16, 3), "f4", power_of_two=True)
        assert image.chunks == training == (256, 16, 16, 3)
        assert MIN_CHUNK_BYTES <= math.prod(image.chunks) * 4 <= MAX_CHUNK_BYTES
        assert label.chunks == (1000,)  # 131,072 rows of 8 bytes, capped at the rows there are
        assert image.compression == label.compression == "lzf"
    assert not os.path.exists(partial_path(out))

    # a second run does not clobber the result unless asked to
    again = run_lazyh5("rechunk", awkward_file, out, "--for-training")
    assert again.returncode == 2 and str(out) in again.stderr and "--overwrite" in again.stderr
    again = run_lazyh5("rechunk", awkward_file, out, "--hdf5-chunks", "image=10", "--overwrite")
    assert again.returncode == 0, again.stderr
    with h5py.File(out, "r") as f:
        assert f["image"].chunks == (10, 16, 16, 3)
        assert f["image"].compression == "gzip"  # without --compression: kept
    _same_values(awkward_file, out)


def test_rechunk_chunks_and_compression(lzf_feed_file, tmp_path):
    out = tmp_path / "gz.h5"
    res = run_lazyh5(
        "rechunk",
        lzf_feed_file,
        out,
        "--hdf5-chunks",
        "image=100,label=1000",
        "--compression",
        "gzip:2",
        "--no-progress",
    )
    assert res.returncode == 0, res.stderr
    with h5py.File(out, "r") as f:
        assert f["image"].chunks == (100, 8, 8, 3) and f["label"].chunks == (1000,)
        assert f["image"].compression == "gzip" and f["image"].compression_opts == 2
    _same_values(lzf_feed_file, out)
    res = run_lazyh5(
        "rechunk", lzf_feed_file, tmp_path / "raw.h5", "--for-training", "--compression", "none"
    )
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "raw.h5", "r") as f:
        assert f["image"].compression is None and f["image"].chunks == (1024, 8, 8, 3)


def test_rechunk_resumes_an_interrupted_run(awkward_file, tmp_path, monkeypatch):
    import dask

    from lazyh5.cli.main import main
    from lazyh5.write import to_hdf5 as writer

    out = tmp_path / "resumed.h5"
    real = writer.store_blocks
    written = []

    def interrupted(arr, write, **kwargs):
        def write_some(idx, region, block):
            if len(written) >= 4:
                raise RuntimeError("interrupted")
            written.append(idx)
            write(idx, region, block)

        return real(arr, write_some, **kwargs)

    monkeypatch.setattr(writer, "store_blocks", interrupted)
    args = ["rechunk", str(awkward_file), str(out), "--for-training", "--no-progress"]
    with (
        lazyh5.set_options(memory_budget="256KiB"),
        dask.config.set(scheduler="sync"),
        pytest.raises(RuntimeError, match="interrupted"),
    ):
        main(args)  # small dask blocks: several per variable, the fifth one fails
    assert not out.exists() and os.path.exists(partial_path(out))

    res = run_lazyh5(*args, "--resume")
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stdout and "4 of" in res.stdout, res.stdout
    assert not os.path.exists(partial_path(out))
    _same_values(awkward_file, out)


def test_rechunk_errors(lzf_feed_file, tmp_path, capsys):
    from lazyh5.cli.main import main

    missing = tmp_path / "missing.h5"
    res = run_lazyh5("rechunk", missing, tmp_path / "o.h5")
    assert res.returncode == 2 and str(missing) in res.stderr and "no such file" in res.stderr
    assert "Traceback" not in res.stderr

    def error(*args) -> str:  # the same entry point, in this process (quicker)
        assert main(["rechunk", *map(str, args)]) == 2
        return capsys.readouterr().err

    err = error(lzf_feed_file, tmp_path / "o.h5", "--hdf5-chunks", "images=10")
    assert "'images'" in err and str(lzf_feed_file) in err
    assert "VAR=ROWS" in error(lzf_feed_file, tmp_path / "o.h5", "--hdf5-chunks", "image")
    assert "brotli" in error(lzf_feed_file, tmp_path / "o.h5", "--compression", "brotli")
    assert "does not exist" in error(lzf_feed_file, tmp_path / "no" / "o.h5")
    assert "into itself" in error(lzf_feed_file, lzf_feed_file, "--overwrite")
    assert not (tmp_path / "o.h5").exists()


# -- --group, --dim, --batch-size, --progress ---------------------------------------


@pytest.fixture
def grouped_file(tmp_path):
    """Variables in group 'g', rows along 't' (not 'sample', not the leading axis of x)."""
    path = tmp_path / "grouped.h5"
    ds = lazyh5.create(
        path,
        {"x": ((3, 1000), "f4"), "y": ((1000,), "i8")},
        dims={"x": ("f", "t"), "y": ("t",)},
        group="g",
        hdf5_chunks={"x": (3, 10), "y": (10,)},
    )
    ds["x"].h5[:] = np.arange(3000, dtype="f4").reshape(3, 1000)
    ds["y"].h5[:] = np.arange(1000)
    ds.close()
    return path


def test_rechunk_group_and_dim(grouped_file, tmp_path):
    out = tmp_path / "re.h5"
    res = run_lazyh5(
        "rechunk", grouped_file, out, "--group", "g", "--dim", "t", "--hdf5-chunks", "x=100,y=250"
    )
    assert res.returncode == 0, res.stderr
    with h5py.File(out) as f, h5py.File(grouped_file) as g:
        assert f["g/x"].chunks == (3, 100) and f["g/y"].chunks == (250,)  # rows along t
        np.testing.assert_array_equal(f["g/x"][()], g["g/x"][()])
        np.testing.assert_array_equal(f["g/y"][()], g["g/y"][()])
    res = run_lazyh5("rechunk", grouped_file, tmp_path / "o.h5", "--group", "g", "--dim", "nope")
    assert res.returncode == 2 and "no dimension 'nope'" in res.stderr


def test_bench_group_dim_and_batch_size(grouped_file):
    res = run_lazyh5(
        "bench", grouped_file, "--group", "g", "--x", "x", "--y", "y", "--dim", "t",
        "--batch-size", "16", "--max-samples", "512", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert (report["batch_size"], report["rows"]) == (16, 512)
    assert all(m["samples"] == 512 for m in report["methods"].values())


@pytest.mark.parametrize("flag", ["--progress", "--no-progress"])
def test_rechunk_progress_bar_on_a_terminal(lzf_feed_file, tmp_path, flag):
    # stderr is a terminal (a pseudo-terminal): the bar shows unless --no-progress
    leader, follower = pty.openpty()
    # 80 columns: a terminal of width 0 (a new pty's) gets empty bars
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "lazyh5.cli.main", "rechunk", str(lzf_feed_file),
             str(tmp_path / "p.h5"), "--for-training", flag],
            stdout=subprocess.PIPE, stderr=follower, timeout=120,
        )  # fmt: skip
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert proc.returncode == 0, seen
    assert (b"block" in seen) == (flag == "--progress"), seen
