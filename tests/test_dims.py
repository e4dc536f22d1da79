"""Dimension naming: dims=, dimension scales, the default rule and its guarantees."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.backend.dims import assign_dims, sample_length
from lazyh5.errors import DimensionError, ObjectNotFoundError


def test_dims_argument_names_axes(plain_file):
    ds = lazyh5.open_dataset(plain_file, dims={"image": ("sample", "y", "x", "channel")})
    assert ds["image"].dims == ("sample", "y", "x", "channel")
    assert ds["label"].dims == ("sample",)
    assert dict(ds.sizes) == {"sample": 1000, "y": 32, "x": 32, "channel": 3}


@pytest.mark.parametrize(
    ("dims", "error", "match"),
    [
        ({"image": ("sample", "y")}, DimensionError, "2 name.*4 axes"),
        ({"image": ("a", "a", "b", "c")}, DimensionError, "repeats"),
        ({"nope": ("a",)}, ObjectNotFoundError, "no such dataset"),
        ({"label": ("y",), "image": ("s", "y", "x", "c")}, DimensionError, "length"),
    ],
)
def test_bad_dims_are_clear(plain_file, dims, error, match):
    with pytest.raises(error, match=match) as info:
        lazyh5.open_dataset(plain_file, dims=dims)
    assert "plain.h5" in str(info.value)


def test_sample_is_the_leading_length_of_the_largest_dataset(tmp_path):
    path = tmp_path / "mixed.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("image", (500, 8, 8), "f4")
        f.create_dataset("label", (500,), "i8")
        f.create_dataset("classes", data=np.array([b"cat", b"dog"]))
        f.create_dataset("flags", (2,), "i1")
        f.create_dataset("other", (7, 8), "f4")
    ds = lazyh5.open_dataset(path)
    assert ds["image"].dims[0] == ds["label"].dims[0] == "sample"
    assert ds["classes"].dims == ("classes_dim_0",)
    assert ds["other"].dims == ("other_dim_0", "other_dim_1")
    # axes of different lengths never share a name
    for name in ds.dims:
        lengths = {ds[v].sizes[name] for v in ds.data_vars if name in ds[v].dims}
        assert len(lengths) == 1


def test_no_position_coordinates_and_sel_as_in_xarray(plain_file):
    ds = lazyh5.open_dataset(plain_file)
    # xarray creates no coordinate for a dimension the file gives no values for.
    assert not ds.coords and not ds.indexes
    view = ds.isel(sample=slice(100, 200, 3))
    assert "sample" not in view.coords
    np.testing.assert_array_equal(view["label"].values, ds["label"].values[100:200:3])
    # .sel on a dimension without coordinates is positional, exactly as in xarray
    plain = xr.Dataset({"label": ("sample", ds["label"].values)})
    for sel in ([5, 7], slice(3, 6), 4):
        got = ds[["label"]].drop_attrs().sel(sample=sel).load()
        xr.testing.assert_identical(got, plain.sel(sample=sel))


def test_sample_length_rule():
    assert sample_length({"a": (10, 5), "b": (10,), "c": (3, 100)}) == 3
    assert sample_length({"a": (10, 5), "b": (12, 5)}) == 12
    assert sample_length({"s": ()}) is None


def test_assign_dims_default_names():
    dims = assign_dims("f.h5", {"image": (4, 2, 2), "label": (4,)}, {}, None)
    assert dims == {"image": ("sample", "image_dim_1", "image_dim_2"), "label": ("sample",)}


def test_datatree_dims_apply_in_every_group(tmp_path):
    path = tmp_path / "tree.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("train/image", (80, 4, 4), "f4")
        f.create_dataset("test/image", (20, 4, 4), "f4")
        f.create_dataset("test/label", (20,), "i8")
    tree = lazyh5.open_datatree(path, dims={"image": ("sample", "y", "x")})
    assert tree["train"]["image"].dims == ("sample", "y", "x")
    assert tree["test"]["image"].dims == ("sample", "y", "x")
    assert tree["test"]["label"].dims == ("sample",)
    tree = xr.open_datatree(path, engine="lazyh5", dims={"label": ("row",)})
    assert tree["test"]["label"].dims == ("row",)


def test_datatree_dims_naming_no_dataset_are_clear(tmp_path):
    path = tmp_path / "tree.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("train/image", (80, 4), "f4")
    with pytest.raises(ObjectNotFoundError, match=r"\['imgae'\].*tree\.h5"):
        lazyh5.open_datatree(path, dims={"imgae": ("sample", "y")})
