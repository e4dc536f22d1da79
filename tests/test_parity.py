"""Parity with ``engine="h5netcdf"`` on netCDF4 files, and nothing of lazyh5's leaking.

Files are generated here by netCDF4-python (netCDF-C's conventions: numeric attributes
as 1-element arrays, ``_Unsigned``, float32 packing, char arrays with ``_Encoding``,
``_nc4_non_coord_`` names, unlimited dimensions, groups) and by h5netcdf; each is opened
with both engines under every decoder option xarray passes to a backend, and must
compare identical, encoding included. No file may change by being opened or read.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import lazyh5
from lazyh5.backend.entrypoint import Lazyh5BackendEntrypoint

# Datasets dropped here hold files open until collected (tests/test_soak.py counts them).
pytestmark = pytest.mark.usefixtures("close_leftover_files")

pytest.importorskip("h5netcdf")  # every test compares with engine="h5netcdf"


def _netcdf4():
    """The netCDF4 module (the tests of netCDF-C's files skip without it).

    Importing netCDF4 points HDF5_PLUGIN_PATH at its bundled filters; other tests' child
    processes must not inherit that (they test what happens without a filter).
    """
    plugin_path = os.environ.get("HDF5_PLUGIN_PATH")
    module = pytest.importorskip("netCDF4")
    if plugin_path is None:
        os.environ.pop("HDF5_PLUGIN_PATH", None)
    else:
        os.environ["HDF5_PLUGIN_PATH"] = plugin_path
    return module


# The encoding keys xarray's writers read.
ENCODING_KEYS = (
    "dtype",
    "_FillValue",
    "scale_factor",
    "add_offset",
    "units",
    "calendar",
    "chunksizes",
    "contiguous",
    "zlib",
    "complevel",
    "shuffle",
    "fletcher32",
    "source",
    "original_shape",
)
DECODER_OPTIONS = [
    {},
    {"decode_cf": False},
    {"mask_and_scale": False},
    {"decode_times": False},
    {"decode_timedelta": False},
    {"decode_times": xr.coders.CFDatetimeCoder(use_cftime=True)},
    {"concat_characters": False},
    {"decode_coords": False},
    {"decode_coords": "all"},
    {"drop_variables": ["sm", "name"]},
    {"drop_variables": ["time", "lat", "x"]},
    {"chunks": None},
    {"chunks": {}},
    {"chunks": {"x": 2}},
]


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _netcdf_c_file(path) -> None:
    """A file written by netCDF-C with the conventions satellite products use."""
    netCDF4 = _netcdf4()
    with netCDF4.Dataset(path, "w") as f:
        f.title = "written by netCDF-C"
        f.version = np.int32(3)  # stored as a 1-element array
        f.bounds = np.array([1.5, 2.5])
        f.createDimension("time", None)  # unlimited
        f.createDimension("x", 3)
        f.createDimension("nchar", 4)
        f.createDimension("lat", 2)
        t = f.createVariable("time", "f8", ("time",))
        t.units, t.calendar = "days since 2000-01-01", "standard"
        t[:] = [0, 1, 2]
        dt = f.createVariable("wait", "i4", ("time",))
        dt.units = "seconds"
        dt[:] = [1, 2, 3]
        # GOES-16/SMAP style: unsigned int16 with a fill value, packed with float32
        sm = f.createVariable("sm", "i2", ("time", "x"), fill_value=-1, zlib=True, complevel=2)
        sm.setncattr("_Unsigned", "true")
        sm.scale_factor, sm.add_offset = np.float32(0.01), np.float32(1.0)
        sm.set_auto_maskandscale(False)
        sm[:] = np.array([[1, -1, 3], [4, 5, 6], [7, 8, -2]], "i2")
        packed = f.createVariable("packed", "i2", ("x",))
        packed.scale_factor = np.float32(0.5)
        packed.set_auto_maskandscale(False)
        packed[:] = [1, 2, 3]
        name = f.createVariable("name", "S1", ("x", "nchar"))
        name._Encoding = "utf-8"
        name.set_auto_chartostring(False)
        name[:] = netCDF4.stringtochar(np.array(["ab", "cde", "f"], "S4"))
        f.createVariable("vlen", str, ("x",))[:] = np.array(["u", "vv", "www"], object)
        # a char-array coordinate (a 2-D dimension scale named by its first dimension)
        code = f.createVariable("x", "S1", ("x", "nchar"))
        code[:] = netCDF4.stringtochar(np.array(["a", "b", "c"], "S4"))
        # named like a dimension it does not start with: stored as _nc4_non_coord_lat
        f.createVariable("lat", "f4", ("x", "lat"))[:] = np.arange(6).reshape(3, 2)
        f.createVariable("u8", "u1", ("x",), fill_value=255)[:] = [1, 2, 255]
        g = f.createGroup("sub")
        g.createDimension("y", 2)
        g.note = np.int64(7)
        g.createVariable("y", "i4", ("y",))[:] = [5, 6]
        g.createVariable("w", "f4", ("y", "x"), fill_value=np.float32(-9))[:] = np.ones((2, 3))
        g.createGroup("deeper").createVariable("z", "f8", ("y",))[:] = [1, 2]


def _h5netcdf_file(path) -> None:
    ds = xr.Dataset(
        {
            "t": (("time", "x"), np.arange(12, dtype="f4").reshape(4, 3), {"units": "K"}),
            "s": ("x", np.array(["a", "bb", "ccc"], dtype=object)),
            "fixed": ("x", np.array([b"a", b"bb", b"ccc"])),
            "i": ("time", np.array([1, 2, np.nan, 4], "f4")),
        },
        coords={
            "time": pd.date_range("2000-01-01", periods=4),
            "x": [10, 20, 30],
            "label": ("x", ["p", "q", "r"]),
        },
        attrs={"title": "written by h5netcdf", "n": 3},
    )
    ds["i"].encoding = {"dtype": "i2", "_FillValue": np.int16(-1), "scale_factor": 0.5}
    ds["t"].encoding = {"zlib": True, "complevel": 4, "chunksizes": (2, 3), "shuffle": True}
    ds.to_netcdf(path, engine="h5netcdf", unlimited_dims=["time"])
    sub = xr.Dataset({"w": (("y", "x"), np.ones((2, 3), "f4"))}, coords={"y": [5, 6]})
    sub.to_netcdf(path, engine="h5netcdf", group="sub", mode="a")
    xr.Dataset({"z": ("y", [1.0, 2.0])}).to_netcdf(
        path, engine="h5netcdf", group="sub/deeper", mode="a"
    )


@pytest.fixture(scope="module", params=["netcdf_c", "h5netcdf"])
def netcdf_file(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("parity") / f"{request.param}.nc"
    (_netcdf_c_file if request.param == "netcdf_c" else _h5netcdf_file)(path)
    return path


def assert_same_as_h5netcdf(actual: xr.Dataset, expected: xr.Dataset) -> None:
    xr.testing.assert_identical(actual, expected)
    assert actual.encoding.get("unlimited_dims") == expected.encoding.get("unlimited_dims")
    for name, var in expected.variables.items():
        got = actual[name].encoding
        for key in ENCODING_KEYS:
            assert repr(got.get(key)) == repr(var.encoding.get(key)), (name, key)


def _options_id(options: dict) -> str:
    # the same in every process (a coder's repr holds its address): tools that run tests
    # by id in another process, such as the mutation runs, find them
    return re.sub(r" at 0x[0-9a-f]+", "", repr(options))


@pytest.mark.parametrize("options", DECODER_OPTIONS, ids=_options_id)
def test_identical_to_h5netcdf_for_every_decoder_option(netcdf_file, options):
    before = _sha(netcdf_file)
    with (
        xr.open_dataset(netcdf_file, engine="h5netcdf", **options) as expected,
        xr.open_dataset(netcdf_file, engine="lazyh5", **options) as actual,
    ):
        assert_same_as_h5netcdf(actual.load(), expected.load())
    assert _sha(netcdf_file) == before


def test_lazyh5_open_dataset_gives_the_same_content_dask_backed(netcdf_file):
    with (
        xr.open_dataset(netcdf_file, engine="h5netcdf") as expected,
        lazyh5.open_dataset(netcdf_file) as actual,
    ):
        assert all(v.chunks for v in actual.data_vars.values())
        xr.testing.assert_identical(actual.load(), expected.load())


def test_netcdf_c_conventions_decoded_as_h5netcdf(tmp_path):
    path = tmp_path / "c.nc"
    _netcdf_c_file(path)
    ds = xr.open_dataset(path, engine="lazyh5")
    assert ds.attrs["version"] == 3 and np.ndim(ds.attrs["version"]) == 0
    assert ds["sm"].dtype == np.float32  # int16 packed with a float32 scale_factor
    # -1 is the fill value (65535 unsigned); -2 is 65534 unsigned, a value
    np.testing.assert_allclose(ds["sm"].values[0], [1.01, np.nan, 1.03], rtol=1e-6)
    np.testing.assert_allclose(ds["sm"].values[2, 2], 1 + 65534 * 0.01, rtol=1e-6)
    assert ds["packed"].dtype == np.float32
    assert ds["name"].values.tolist() == ["ab", "cde", "f"]  # _Encoding + concat_characters
    assert ds["x"].dims == ("x",) and ds["x"].values.tolist() == [b"a", b"b", b"c"]
    assert ds["lat"].dims == ("x", "lat")  # _nc4_non_coord_lat renamed back
    assert ds.encoding["unlimited_dims"] == {"time"}
    assert ds["sm"].encoding["zlib"] is True and ds["sm"].encoding["complevel"] == 2


def test_unsigned_with_fill_value_repro(tmp_path):
    # once a TypeError "unhashable type: 'numpy.ndarray'" at open
    path = tmp_path / "r1.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("sm", data=np.array([5, -1, 7], "i2"))
        d.attrs["_FillValue"] = np.array([-1], "i2")
        d.attrs["_Unsigned"] = "true"
    np.testing.assert_array_equal(lazyh5.open_dataset(path)["sm"].values, [5.0, np.nan, 7.0])
    expected = xr.open_dataset(path, engine="h5netcdf", phony_dims="sort")
    actual = xr.open_dataset(path, engine="lazyh5").rename(sample="phony_dim_0")
    xr.testing.assert_identical(actual, expected)


@pytest.mark.parametrize("options", [{}, {"decode_cf": False}, {"chunks": {}}], ids=repr)
def test_groups_identical_to_h5netcdf(netcdf_file, options):
    before = _sha(netcdf_file)
    expected = xr.open_datatree(netcdf_file, engine="h5netcdf", **options)
    actual = xr.open_datatree(netcdf_file, engine="lazyh5", **options)
    xr.testing.assert_identical(actual, expected)
    groups = xr.open_groups(netcdf_file, engine="lazyh5", **options)
    reference = xr.open_groups(netcdf_file, engine="h5netcdf", **options)
    assert list(groups) == list(reference)
    for path, ds in reference.items():
        xr.testing.assert_identical(groups[path], ds)
    sub = xr.open_datatree(netcdf_file, engine="lazyh5", group="sub", **options)
    xr.testing.assert_identical(
        sub, xr.open_datatree(netcdf_file, engine="h5netcdf", group="sub", **options)
    )
    assert _sha(netcdf_file) == before


def _layout(path) -> dict:
    """Everything h5py sees in a file but object addresses (dimension references)."""
    out = {}

    def visit(name, obj):
        attrs = {
            k: repr(v)
            for k, v in obj.attrs.items()
            if k not in ("DIMENSION_LIST", "REFERENCE_LIST", "_NCProperties")
        }
        if isinstance(obj, h5py.Dataset):
            out[name] = (obj.shape, obj.dtype.str, obj.chunks, obj.compression, obj.maxshape, attrs)
        else:
            out[name] = attrs

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        out["/"] = {k: repr(v) for k, v in f.attrs.items() if k != "_NCProperties"}
    return out


def test_copies_are_what_h5netcdf_would_write(netcdf_file, tmp_path):
    ours, theirs = tmp_path / "ours.nc", tmp_path / "theirs.nc"
    with (
        xr.open_dataset(netcdf_file, engine="lazyh5") as a,
        xr.open_dataset(netcdf_file, engine="h5netcdf") as b,
    ):
        a.to_netcdf(ours, engine="h5netcdf")
        b.to_netcdf(theirs, engine="h5netcdf")
    assert _layout(ours) == _layout(theirs)


def test_zarr_copies_are_what_h5netcdf_would_write(netcdf_file, tmp_path):
    pytest.importorskip("zarr")
    with (
        xr.open_dataset(netcdf_file, engine="lazyh5") as a,
        xr.open_dataset(netcdf_file, engine="h5netcdf") as b,
    ):
        a.drop_vars(["s", "vlen"], errors="ignore").to_zarr(tmp_path / "ours.zarr")
        b.drop_vars(["s", "vlen"], errors="ignore").to_zarr(tmp_path / "theirs.zarr")
    xr.testing.assert_identical(
        xr.open_zarr(tmp_path / "ours.zarr").load(), xr.open_zarr(tmp_path / "theirs.zarr").load()
    )


@pytest.fixture
def shards(tmp_path):
    """Training shards without a coordinate on the split dimension (a reported failure)."""
    full = xr.Dataset({"b": ("n", np.arange(10))})
    paths = []
    for i, k in enumerate((0, 4, 8)):
        paths.append(tmp_path / f"s{i}.nc")
        full.isel(n=slice(k, k + 4)).to_netcdf(paths[-1], engine="h5netcdf")
    return paths


@pytest.mark.parametrize(
    "options",
    [{}, {"combine": "by_coords"}, {"parallel": True}, {"combine": "nested", "concat_dim": "n"}],
    ids=repr,
)
def test_open_mfdataset_as_h5netcdf_never_fewer_rows(shards, options):
    try:
        expected = xr.open_mfdataset(shards, engine="h5netcdf", **options).load()
    except ValueError as err:  # h5netcdf refuses: lazyh5 must refuse as well
        with pytest.raises(type(err)):
            xr.open_mfdataset(shards, engine="lazyh5", **options)
        return
    actual = xr.open_mfdataset(shards, engine="lazyh5", **options).load()
    xr.testing.assert_identical(actual, expected)
    assert actual.sizes["n"] == 10 and actual["b"].values.tolist() == list(range(10))


def test_nested_shards_select_like_xarray(shards):
    ds = xr.open_mfdataset(shards, engine="lazyh5", combine="nested", concat_dim="n")
    assert "n" not in ds.indexes  # no repeated 0..3 position labels
    assert int(ds.sel(n=2)["b"]) == 2  # positional, as xarray does without coordinates


def test_guess_can_open(tmp_path):
    entry = Lazyh5BackendEntrypoint()
    assert entry.supports_groups
    nc3 = tmp_path / "classic.nc"
    xr.Dataset({"v": ("x", [1, 2])}).to_netcdf(nc3, engine="scipy")
    assert not entry.guess_can_open(nc3)  # netCDF3 is not HDF5, whatever its suffix
    odd = tmp_path / "data.bin"
    with h5py.File(odd, "w") as f:
        f["x"] = [1]
    assert entry.guess_can_open(odd)  # the HDF5 signature, whatever the suffix
    assert entry.guess_can_open(tmp_path / "not-yet-there.h5")  # suffix, unchecked
    assert not entry.guess_can_open(tmp_path / "not-yet-there.txt")
    assert "lazyh5" in xr.backends.list_engines()


def test_groupby_with_the_documented_one_line_fix(tmp_path):
    # docs/index.md: grouping by a lazy variable needs its values (xarray's rule for
    # chunked arrays); `.compute()` on the labels is the one-line fix.
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(20.0).reshape(10, 2)
        f["label"] = np.arange(10) % 3
    ds = lazyh5.open_dataset(path)
    with pytest.raises(ValueError, match="labels"):
        ds.groupby("label").mean()
    got = ds.groupby(ds["label"].compute()).mean()
    expected = xr.open_dataset(path, engine="lazyh5").load().groupby("label").mean()
    xr.testing.assert_allclose(got.load(), expected)


@pytest.mark.parametrize("options", [{}, {"concat_characters": False}, {"decode_cf": False}])
def test_string_coordinates_keep_their_dims(tmp_path, options):
    path = tmp_path / "stations.nc"
    ds = xr.Dataset({"v": ("station", [1.0, 2.0])}, coords={"station": ["ab", "cdé"]})
    ds["station"].encoding = {"dtype": "S1"}  # a char array with _Encoding, as netCDF-C
    ds.to_netcdf(path, engine="h5netcdf")
    actual = xr.open_dataset(path, engine="lazyh5", **options).load()
    xr.testing.assert_identical(actual, xr.open_dataset(path, engine="h5netcdf", **options))
    assert actual["station"].dims[0] == "station"
