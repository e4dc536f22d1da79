"""The layout of new datasets (``lazyh5.write.layout``): every refusal word for word,
through ``lazyh5.create`` on real files, and nothing left behind by a refused call."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.errors import AlreadyExistsError, DimensionError, InvalidArgumentError

PLUGINS = "['blosc', 'blosc2', 'lz4', 'zstd']"


def _exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def _refusals(path) -> list:
    where = f"cannot create '{path}'"
    group = "; expected a path like 'train' or 'train/images'"
    chunks = (
        "{}: hdf5_chunks={} for 'x'; expected 'auto' (whole rows of about 1 MiB), None "
        "(contiguous), a tuple of chunk lengths, or {{name: value}}"
    )
    compression = (
        "{}: unknown compression {}; expected 'gzip', 'lzf', a gzip level 0-9, or one of "
        + PLUGINS
        + " (with hdf5plugin installed)"
    )
    return [
        (dict(group="a//b"), f"{where}: invalid group 'a//b'{group}"),
        (dict(group="a/.hidden"), f"{where}: invalid group 'a/.hidden'{group}"),
        (dict(hdf5_chunks="rows"), chunks.format(where, "'rows'")),
        (dict(hdf5_chunks=4), chunks.format(where, "4")),
        (dict(hdf5_chunks={"x": 4}), chunks.format(where, "4")),
        (
            dict(hdf5_chunks=(5,)),
            f"{where}: hdf5_chunks (5,) for 'x' have 1 axes, the shape (10, 4) has 2",
        ),
        (dict(compression="snappy"), compression.format(where, "'snappy'")),
        (dict(compression=True), compression.format(where, "True")),
    ]


def test_bad_layouts_are_refused_word_for_word(tmp_path):
    path = tmp_path / "new.h5"
    for kwargs, message in _refusals(path):
        with pytest.raises(InvalidArgumentError, match=_exactly(message)):
            lazyh5.create(path, {"x": ((10, 4), "f4")}, **kwargs)
        assert not path.exists()


def test_datasets_that_exist_or_clash_are_refused_word_for_word(tmp_path):
    path = tmp_path / "new.h5"
    lazyh5.create(path, {"x": ((10, 4), "f4")}, group="g").close()
    exists = "cannot create '{}' in '{}': it already exists; use mode='w' to start a new file"
    with pytest.raises(AlreadyExistsError, match=_exactly(exists.format("g/x", path))):
        lazyh5.create(path, {"x": ((10, 4), "f4")}, group="/g/", mode="a")
    lazyh5.create(path, {"x": ((3,), "f4")}, mode="a").close()
    with pytest.raises(AlreadyExistsError, match=_exactly(exists.format("x", path))):
        lazyh5.create(path, {"x": ((3,), "f4")}, mode="a")
    clash = (
        "cannot create '{}': dimension '{}' (length {}) of '{}' clashes with the existing "
        "object '{}'"
    )
    with pytest.raises(
        DimensionError, match=_exactly(clash.format(path, "x_dim_1", 5, "g/y", "/g/x_dim_1"))
    ):
        lazyh5.create(
            path, {"y": ((10, 5), "f4")}, group="g", mode="a", dims={"y": ("s", "x_dim_1")}
        )


def test_a_dimension_named_like_another_variable_is_refused_word_for_word(tmp_path):
    path = tmp_path / "clash.h5"
    ds = xr.Dataset({"sample": (("other",), np.arange(3.0)), "x": (("sample",), np.arange(5.0))})
    message = (
        f"cannot create '{path}': dimension 'sample' (length 5) clashes with the existing "
        "object '/sample'"
    )
    with pytest.raises(DimensionError, match=_exactly(message)):
        lazyh5.to_hdf5(path, ds, progress=False)
    assert not path.exists()
    grouped = tmp_path / "grouped.h5"
    with pytest.raises(
        DimensionError,
        match=_exactly(
            message.replace(str(path), str(grouped)).replace("'/sample'", "'/g/sample'")
        ),
    ):
        lazyh5.to_hdf5(grouped, ds, group="g", progress=False)


def test_variables_missing_from_a_mapping_get_the_defaults(tmp_path):
    path = tmp_path / "m.h5"
    lazyh5.create(
        path,
        {"x": ((100, 4), "f4"), "y": ((100, 4), "f4")},
        hdf5_chunks={"x": (10, 4)},
        compression={"x": "gzip"},
        shuffle={"x": True},
    ).close()
    with h5py.File(path) as f:
        assert (f["x"].chunks, f["x"].compression, f["x"].shuffle) == ((10, 4), "gzip", True)
        # "auto": whole rows of about 1 MiB (all 100 here); no filter
        assert (f["y"].chunks, f["y"].compression, f["y"].shuffle) == ((100, 4), None, False)


def test_dimension_scales_follow_netcdf4(tmp_path):
    """netCDF-4's layout: a coordinate variable is its dimension's scale; other
    dimensions get a float32 scale named "This is a netCDF dimension but not a netCDF
    variable." with the padded length, numbered from 0 in the order of first use; an
    existing dataset of the dimension's name and length becomes its scale."""
    netCDF4 = pytest.importorskip("netCDF4")
    path = tmp_path / "nc.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("d", data=np.arange(4.0))  # a plain dataset, not yet a scale
    dims = {"x": ("t", "c"), "z": ("c", "d"), "e": ("empty",), "t": ("t",)}
    variables = {"x": ((3, 2), "f4"), "z": ((2, 4), "f8"), "e": ((0,), "f8"), "t": ((3,), "i8")}
    lazyh5.create(path, variables, dims=dims, mode="a").close()
    phony = "This is a netCDF dimension but not a netCDF variable."
    with h5py.File(path) as f:
        scales = {
            k: (f[k].dtype, f[k].attrs["NAME"].decode(), f[k].attrs.get("_Netcdf4Dimid"))
            for k in ("t", "c", "d", "empty")
        }
    assert scales == {
        "t": (np.dtype("i8"), "t", None),
        "c": (np.dtype("f4"), phony + "         2", 0),
        "empty": (np.dtype("f4"), phony, 2),
        "d": (np.dtype("f8"), "d", 1),
    }
    with netCDF4.Dataset(path) as n:
        assert {k: len(v) for k, v in n.dimensions.items()} == {"c": 2, "empty": 0, "d": 4, "t": 3}
        assert {k: v.dimensions for k, v in n.variables.items()} == {
            "d": ("d",),
            "e": ("empty",),
            "t": ("t",),
            "x": ("t", "c"),
            "z": ("c", "d"),
        }


def test_per_variable_options_and_auto_chunks(tmp_path):
    from lazyh5.backend.chunking import row_chunks

    path = tmp_path / "o.h5"
    lazyh5.create(
        path,
        {"x": ((100_000, 4), "f4"), "y": ((100_000, 4), "u1")},
        compression={"x": 6},  # a gzip level (not h5py's default, 4)
        fillvalue={"x": 7.0},
    ).close()
    with h5py.File(path) as f:
        assert (f["x"].compression, f["x"].compression_opts, f["x"].fillvalue) == ("gzip", 6, 7)
        assert (f["y"].compression, f["y"].fillvalue) == (None, 0)
        # "auto": whole rows of about 1 MiB of each variable's own values
        assert f["x"].chunks == row_chunks((100_000, 4), "f4") != f["y"].chunks
        assert f["y"].chunks == row_chunks((100_000, 4), "u1")


def test_to_hdf5_keeps_the_source_chunks_down_to_one_row(tmp_path):
    source = tmp_path / "s.h5"
    with h5py.File(source, "w") as f:
        f.create_dataset("v", data=np.zeros((6, 4), "f4"), chunks=(1, 4))
    out = tmp_path / "o.h5"
    with lazyh5.open_dataset(source) as ds:
        lazyh5.to_hdf5(out, ds, progress=False)
    with h5py.File(out) as f:
        assert f["v"].chunks == (1, 4)


@pytest.mark.parametrize(("opts", "clevel"), [(7, 7), (None, 5)], ids=["level", "default"])
def test_plugin_compression_and_its_level_reach_the_file(tmp_path, opts, clevel):
    pytest.importorskip("hdf5plugin")
    path = tmp_path / "b.h5"
    lazyh5.create(
        path, {"x": ((1000, 4), "f4")}, compression="Blosc", compression_opts=opts
    ).close()
    with h5py.File(path) as f:
        filters = f["x"].id.get_create_plist()
        found = {
            filters.get_filter(i)[0]: filters.get_filter(i)[2]
            for i in range(filters.get_nfilters())
        }
    assert list(found) == [32001]  # Blosc's registered filter id
    assert found[32001][4] == clevel  # Blosc's options: (..., clevel, shuffle, compressor)


def test_group_names_lose_only_their_slashes(tmp_path):
    path = tmp_path / "x.h5"
    lazyh5.create(path, {"x": ((3,), "f4")}, group="/Xg/gX/").close()
    with h5py.File(path) as f:
        assert "Xg/gX/x" in f
    ds = xr.Dataset({"sample": (("other",), np.arange(3.0)), "x": (("sample",), np.arange(5.0))})
    other = tmp_path / "y.h5"
    message = (
        f"cannot create '{other}': dimension 'sample' (length 5) clashes with the existing "
        "object '/Xg/gX/sample'"
    )
    with pytest.raises(DimensionError, match=_exactly(message)):
        lazyh5.to_hdf5(other, ds, group="/Xg/gX/", progress=False)


@pytest.mark.parametrize("how", ["create", "append", "to_hdf5"])
def test_options_only_hdf5_checks_are_refused_before_writing(tmp_path, monkeypatch, how):
    """A gzip level of 99 is refused naming the variable (in its group), before anything
    is written, by a trial in memory that leaves no file behind (not even here)."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "x.h5"
    bad = {"compression": "gzip", "compression_opts": 99}
    if how == "append":
        lazyh5.create(path, {"a": ((4,), "f4")}, group="g").close()
    before = sorted(p.name for p in tmp_path.iterdir())
    message = f"cannot create 'g/x' in '{path}': GZIP setting must be an integer from 0-9, not 99"
    with pytest.raises(InvalidArgumentError, match=_exactly(message)):
        if how == "to_hdf5":
            ds = xr.Dataset({"x": (("s",), np.arange(4.0))})
            lazyh5.to_hdf5(path, ds, group="g", progress=False, **bad)
        else:
            mode = "a" if how == "append" else "w-"
            lazyh5.create(path, {"x": ((4,), "f4")}, group="g", mode=mode, **bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    if how == "append":
        with h5py.File(path) as f:
            assert "x" not in f["g"] and "a" in f["g"]
