"""`lazyh5 info` as a user runs it: a subprocess on real files."""

from __future__ import annotations

import json

import h5py
import numpy as np

import lazyh5
from tests._process import run_lazyh5


def test_info_human_readable(tmp_path):
    path = tmp_path / "d.h5"
    ds = lazyh5.create(
        path,
        {"image": ((500, 8, 8, 3), "f4"), "label": ((500,), "i8")},
        dims={"image": ("sample", "y", "x", "channel")},
        compression="gzip",
        compression_opts=4,
        attrs={"title": "demo"},
    )
    ds.close()  # the r+ handle holds HDF5's write lock; other processes wait for it
    meta = lazyh5.create(path, {"names": ((4,), "S8")}, group="meta", compression="gzip", mode="a")
    meta.close()
    out = run_lazyh5("info", str(path))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "image" in text and "(500, 8, 8, 3)" in text
    assert "dims ('sample', 'y', 'x', 'channel')" in text or "dims (sample, y, x, channel)" in text
    assert "gzip(4)" in text
    assert "/meta" in text
    assert "@title = 'demo'" in text


def test_info_json(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(100.0), chunks=(10,), compression="lzf")
        f["x"].attrs["units"] = "m"
        f["ext"] = h5py.ExternalLink("other.h5", "/y")
    out = run_lazyh5("info", str(path), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    x = info["groups"]["/"]["datasets"]["x"]
    assert x["shape"] == [100] and x["dims"] == ["sample"] and x["chunks"] == [10]
    assert x["compression"] == "lzf"
    assert x["logical_bytes"] == 800 and x["stored_bytes"] > 0
    assert x["attrs"] == {"units": "m"}
    assert "external link" in info["groups"]["/"]["links"]["ext"]  # listed, not followed


def test_info_errors_are_one_line(tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("not hdf5")
    out = run_lazyh5("info", str(bad))
    assert out.returncode == 2
    assert "not an HDF5 file" in out.stderr and "Traceback" not in out.stderr
