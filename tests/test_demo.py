"""``lazyh5 demo``: the end-to-end run on a tiny data set, its size option and its data."""

from __future__ import annotations

import os
import re

import h5py
import numpy as np
import pytest

from lazyh5.cli.demo import SIZES, parse_size
from lazyh5.demo.images import CLASSES, synthetic_images
from tests._process import run_lazyh5


@pytest.mark.parametrize(
    ("spec", "n"),
    [
        ("tiny", 1_000),
        ("large", 350_000),
        ("Small", 20_000),
        ("5000", 5_000),
        ("50k", 50_000),
        ("1.5M", 1_500_000),
        ("20_000", 20_000),
        ("120,000", 120_000),
    ],
)
def test_parse_size(spec, n):
    assert parse_size(spec) == n


@pytest.mark.parametrize("spec", ["huge", "", "-5", "99", "1e5", "k"])
def test_parse_size_refuses(spec):
    with pytest.raises(ValueError, match="--size"):
        parse_size(spec)


def test_default_is_at_least_a_gigabyte():
    assert SIZES["large"] * 32 * 32 * 3 >= 1e9


def test_synthetic_images_are_noisy_shapes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(CLASSES)), 50)
    images = synthetic_images(labels, rng)
    assert images.shape == (500, 32, 32, 3) and images.dtype == np.uint8
    assert 100 < images.mean() < 155 and images.std() > 40  # bright and dark, both used
    # stripes change along one axis only, checkers along both
    dx = np.abs(np.diff(images.astype(float), axis=2)).mean(axis=(1, 2, 3))
    dy = np.abs(np.diff(images.astype(float), axis=1)).mean(axis=(1, 2, 3))
    by = {c: (dx[labels == i].mean(), dy[labels == i].mean()) for i, c in enumerate(CLASSES)}
    assert by["v-stripes"][0] > 1.5 * by["v-stripes"][1]
    assert by["h-stripes"][1] > 1.5 * by["h-stripes"][0]
    assert min(by["checker"]) > 1.5 * max(by["disc"])


@pytest.mark.keras
def test_demo_tiny_end_to_end(tmp_path):
    pytest.importorskip("keras")
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "demo"
    args = ["demo", "--size", "tiny", "--epochs", "1", "--out", str(out_dir)]
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    proc = run_lazyh5(*args, timeout=180, env={"KERAS_BACKEND": backend})
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    for step in ("== 1. create", "== 2. open", "== 3. preprocess", "== 4. train", "== 5. draw"):
        assert step in out
    assert "labels 0..9" in out and "disc, square, ring" in out  # the assigned slice
    for figure in ("MB/s", "images/s", "samples/s", "validation accuracy", "peak memory"):
        assert figure in out
    assert re.search(r"total time\s+[\d.]+ s", out)
    # TensorFlow's start-up chatter is filtered out; real warnings would still show.
    assert "oneDNN" not in proc.stderr and "absl::InitializeLog" not in proc.stderr

    with h5py.File(out_dir / "images.h5") as f:
        assert f["image"].shape == (1000, 32, 32, 3) and f["image"].dtype == np.uint8
        assert list(f["label"][10:20]) == list(range(10))
    with h5py.File(out_dir / "images_float16.h5") as f:
        image = f["image"][:]
        assert image.dtype == np.float16 and abs(image.astype(float).mean()) < 0.05
        assert abs(image.astype(float).std() - 1) < 0.05
    png = (out_dir / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 1000 and height >= 500


def test_demo_without_training(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from lazyh5.cli.main import main

    assert main(["demo", "--size", "300", "--no-train", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "training skipped" in out
    assert (tmp_path / "summary.png").exists()


def test_demo_refuses_a_bad_size(tmp_path, capsys):
    from lazyh5.cli.main import main

    assert main(["demo", "--size", "lots", "--out", str(tmp_path)]) == 2
    assert "--size 'lots'" in capsys.readouterr().err
