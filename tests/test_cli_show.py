"""`lazyh5 show`: PNGs of image stacks and 1-D data, reading only the requested rows."""

from __future__ import annotations

import subprocess

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5.cli.show import parse_index
from tests._process import run_lazyh5


def _show(*args: object) -> subprocess.CompletedProcess:
    return run_lazyh5("show", *args)


def _png_size(path) -> tuple[int, int]:
    import matplotlib.image

    img = matplotlib.image.imread(path)
    return img.shape[1], img.shape[0]


def test_show_image_grid(plain_file, tmp_path):
    pytest.importorskip("matplotlib")  # draws the PNG
    out = tmp_path / "grid.png"
    res = _show(str(plain_file), "image", "--index", "0:8", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "images, 8 rows" in res.stdout
    width, height = _png_size(out)
    assert width > height > 100  # one row of 8 thumbnails


def test_show_1d_line_and_histogram(plain_file, tmp_path):
    pytest.importorskip("matplotlib")  # draws the PNG
    out = tmp_path / "label.png"
    res = _show(str(plain_file), "label", "--index", "5,6,7", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "line, 3 rows" in res.stdout
    assert _png_size(out) == (1000, 320)


def test_show_errors(plain_file, tmp_path):
    res = _show(str(plain_file), "nope")
    assert res.returncode == 2 and "no variable 'nope'" in res.stderr
    res = _show(str(plain_file), "label", "--index", "5000")
    assert res.returncode == 2 and "out of range" in res.stderr


def test_parse_index():
    assert parse_index(None, 100, 16) == slice(0, 16)
    assert parse_index("2:10:2", 100, 16) == slice(2, 10, 2)
    assert parse_index("1,-1", 10, 16) == [1, 9]
    with pytest.raises(ValueError, match="out of range"):
        parse_index("10", 10, 16)
    for bad in ("a:b", "1,x", "1:2:3:4"):
        with pytest.raises(lazyh5.Lazyh5Error, match="expected START:STOP"):
            parse_index(bad, 10, 16)


def test_show_reads_only_requested_rows(tmp_path):
    pytest.importorskip("matplotlib")  # draws the PNG
    # Rows outside the selection are in a chunk whose bytes we destroy: still fine.
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(200.0), chunks=(100,), compression="gzip")
        offset = f["x"].id.get_chunk_info(1).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\0" * 64)
    res = _show(str(path), "x", "--index", "0:50", "-o", str(tmp_path / "x.png"))
    assert res.returncode == 0, res.stderr
