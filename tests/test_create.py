"""lazyh5.create: dims survive (also for xarray's h5netcdf engine), chunks, compression."""

from __future__ import annotations

import os
import stat

import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.errors import DimensionError, InvalidArgumentError


def test_create_seed_layout_round_trip(tmp_path):
    path = tmp_path / "new.h5"
    ds = lazyh5.create(
        path,
        {"image": ((1000, 32, 32, 3), "f4"), "label": ((1000,), "i8")},
        dims={"image": ("sample", "y", "x", "channel")},
        attrs={"title": "plain"},
    )
    assert dict(ds.sizes) == {"sample": 1000, "y": 32, "x": 32, "channel": 3}
    assert ds.attrs["title"] == "plain"
    assert float(ds["image"].sum()) == 0.0
    with h5py.File(path) as f:
        assert f["image"].chunks[1:] == (32, 32, 3)  # whole rows per chunk
        f["label"][10:20] = np.arange(10)
    reopened = lazyh5.open_dataset(path)
    np.testing.assert_array_equal(reopened["label"][10:20].values, np.arange(10))
    ref = xr.open_dataset(path, engine="h5netcdf")
    assert ref["image"].dims == ("sample", "y", "x", "channel")
    assert ref["label"].dims == ("sample",)
    assert set(ref.variables) == {"image", "label"}


@pytest.mark.parametrize("compression", ["gzip", "lzf", 4, "blosc", "zstd", "lz4"])
def test_compression(tmp_path, compression):
    if compression in ("blosc", "zstd", "lz4"):  # the others are built into HDF5
        pytest.importorskip("hdf5plugin")
    path = tmp_path / "c.h5"
    ds = lazyh5.create(path, {"x": ((2000, 16), "f4")}, compression=compression, shuffle=True)
    ds.close()
    with h5py.File(path, "r+") as f:
        f["x"][...] = np.arange(32000, dtype="f4").reshape(2000, 16)
    back = lazyh5.open_dataset(path)
    np.testing.assert_array_equal(back["x"].values, np.arange(32000, dtype="f4").reshape(2000, 16))
    assert back["x"].encoding["lazyh5_filters"]


def test_create_refuses_existing_file_and_leaves_it(tmp_path, plain_file):
    before = plain_file.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        lazyh5.create(plain_file, {"x": ((3,), "f4")})
    assert plain_file.read_bytes() == before


def test_create_mode_w_replaces_and_a_adds(tmp_path):
    path = tmp_path / "m.h5"
    lazyh5.create(path, {"x": ((3,), "f4")}).close()
    lazyh5.create(path, {"y": ((4,), "f4")}, mode="w").close()
    assert set(lazyh5.open_dataset(path).data_vars) == {"y"}
    lazyh5.create(path, {"z": ((4,), "i4")}, mode="a").close()
    assert set(lazyh5.open_dataset(path).data_vars) == {"y", "z"}


@pytest.mark.parametrize(
    ("variables", "kwargs", "error", "match"),
    [
        ({}, {}, ValueError, "no variables"),
        ({"x": ((3, -1), "f4")}, {}, ValueError, "negative"),
        ({"x": ((3,), "not-a-dtype")}, {}, TypeError, "dtype"),
        ({"x": ((3, 4), "f4")}, {"dims": {"x": ("a",)}}, DimensionError, "axes"),
        ({"x": ((3,), "f4")}, {"dims": {"y": ("a",)}}, DimensionError, "not in variables"),
        ({"x": ((3,), "f4")}, {"compression": "snappy"}, ValueError, "unknown compression"),
        ({"x": ((3, 4), "f4")}, {"hdf5_chunks": (2,)}, ValueError, "chunks"),
        ({"x": (3, "f4", {}, 1)}, {}, ValueError, "shape, dtype"),
    ],
)
def test_create_bad_input_writes_nothing(tmp_path, variables, kwargs, error, match):
    path = tmp_path / "bad.h5"
    with pytest.raises(error, match=match):
        lazyh5.create(path, variables, **kwargs)
    assert not path.exists()
    assert os.listdir(tmp_path) == []  # no temporary file left behind either


def test_create_groups_returns_the_group(tmp_path):
    path = tmp_path / "g.h5"
    train = lazyh5.create(path, {"image": ((80, 4), "f4")}, group="train", fillvalue=1.5)
    test = lazyh5.create(path, {"image": ((20, 4), "f4")}, group="test", fillvalue=1.5, mode="a")
    assert isinstance(train, xr.Dataset) and train["image"].shape == (80, 4)
    assert float(test["image"].mean()) == 1.5
    tree = lazyh5.open_datatree(path)
    assert tree["train"]["image"].shape == (80, 4)
    assert float(tree["test"]["image"].mean()) == 1.5


def test_create_refuses_paths_as_variable_names(tmp_path):
    path = tmp_path / "g.h5"
    with pytest.raises(InvalidArgumentError, match="group="):
        lazyh5.create(path, {"train/image": ((80, 4), "f4")})
    assert not path.exists()


@pytest.mark.parametrize("value", [True, False, "rows"])
def test_create_refuses_old_hdf5_chunks_values(tmp_path, value):
    with pytest.raises(InvalidArgumentError, match="hdf5_chunks"):
        lazyh5.create(tmp_path / "c.h5", {"x": ((10, 4), "f4")}, hdf5_chunks=value)


def test_create_contiguous_and_empty(tmp_path):
    ds = lazyh5.create(
        tmp_path / "c.h5",
        {"x": ((10, 4), "f4"), "empty": ((0, 4), "f4")},
        hdf5_chunks={"x": None},
        compression={"empty": "gzip"},
    )
    assert ds["x"].encoding["contiguous"] and ds["empty"].encoding["contiguous"]


def test_create_coordinate_variable(tmp_path):
    path = tmp_path / "coord.h5"
    lazyh5.create(
        path, {"time": ((5,), "f8"), "temp": ((5, 2), "f4")}, dims={"temp": ("time", "s")}
    )
    with h5py.File(path, "r+") as f:
        f["time"][...] = np.arange(5) * 0.5
    ds = lazyh5.open_dataset(path)
    np.testing.assert_array_equal(ds["time"].values, np.arange(5) * 0.5)
    assert "time" in ds.coords
    ref = xr.open_dataset(path, engine="h5netcdf")
    np.testing.assert_array_equal(ref["time"].values, np.arange(5) * 0.5)


def test_new_files_get_the_usual_permissions(tmp_path):
    """Written under a private temporary name, the file ends up as open() would make it."""
    umask = os.umask(0o022)
    try:
        lazyh5.create(tmp_path / "perm.h5", {"x": ((4,), "f4")}).close()
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "perm.h5").st_mode) == 0o644
