"""to_hdf5's resume and layout, pinned down by the mutants that survived the other tests.

Each case leaves a real partial file (a run that fails partway, as a killed one would)
and resumes it: with the same computation the result equals an uninterrupted run and
only the missing blocks are computed; with anything that changes the file's layout
(chunks, shape, dtype, dims, filters, group) the resume is refused and the partial file
is left as it was.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid

import dask
import dask.array as da
import fsspec
import h5py
import hdf5plugin
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.errors import InvalidArgumentError
from lazyh5.write.to_hdf5 import partial_path

ROWS, BLOCK = 640, 64  # 10 blocks of 64 rows


def _data(rows: int = ROWS, dtype: str = "f4", dim: str = "sample") -> xr.Dataset:
    x = da.arange(rows * 6, dtype=dtype, chunks=BLOCK * 6).reshape(rows, 6)
    return xr.Dataset({"v": ((dim, "f"), x * 3 + 1)})


def _fail_after(ds: xr.Dataset, blocks: int) -> xr.Dataset:
    """``ds`` whose variable ``v`` raises once ``blocks`` blocks were computed."""
    calls = []

    def count(b):
        if len(calls) >= blocks:
            raise RuntimeError("interrupted")
        calls.append(1)
        return b

    meta = np.empty((0, 0), ds["v"].dtype)  # no call on a dummy block to infer it
    return ds.assign(v=ds["v"].copy(data=ds["v"].data.map_blocks(count, meta=meta)))


def _interrupted(out, ds: xr.Dataset, **options) -> str:
    """Run to_hdf5 until it fails after 4 blocks; the partial file's sha256."""
    with dask.config.set(scheduler="sync"), pytest.raises(RuntimeError, match="interrupted"):
        lazyh5.to_hdf5(out, _fail_after(ds, 4), progress=False, **options)
    assert not out.exists() and os.path.exists(partial_path(out))
    return _sha(partial_path(out))


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _done_marks(out) -> int:
    with h5py.File(partial_path(out), "r") as f:
        return int(sum(f["_lazyh5_done"][k][()].sum() for k in f["_lazyh5_done"]))


FIRST = dict(hdf5_chunks=(BLOCK, 6), compression="gzip", compression_opts=4, shuffle=True)


@pytest.mark.parametrize(
    ("change", "data"),
    [
        ({"hdf5_chunks": (BLOCK // 2, 6)}, {}),  # same blocks, other HDF5 chunks
        ({"hdf5_chunks": (BLOCK, 3)}, {}),
        ({"compression": "lzf", "compression_opts": None}, {}),
        ({"compression_opts": 9}, {}),
        ({"shuffle": False}, {}),
        ({"group": "train"}, {}),
        ({}, {"rows": ROWS - BLOCK}),
        ({}, {"dtype": "f8"}),
        ({}, {"dim": "time"}),
    ],
    ids=str.split("chunks-rows chunks-cols codec level shuffle group shape dtype dims"),
)
def test_resume_refuses_a_partial_file_of_another_layout(tmp_path, change, data):
    out = tmp_path / "out.h5"
    before = _interrupted(out, _data(), **FIRST)
    with pytest.raises(
        InvalidArgumentError,
        match=r"different data \(variables, shapes, dtypes, chunks or filters differ\); "
        r"delete it or pass resume=False",
    ) as info:
        lazyh5.to_hdf5(out, _data(**data), progress=False, resume=True, **{**FIRST, **change})
    assert ".out.h5.lazyh5-partial" in str(info.value)
    assert _sha(partial_path(out)) == before and not out.exists()


def test_resume_refuses_other_plugin_options(tmp_path):
    out = tmp_path / "out.h5"
    first = dict(hdf5_chunks=(BLOCK, 6), compression=hdf5plugin.Blosc(clevel=1))
    before = _interrupted(out, _data(), **first)
    other = dict(hdf5_chunks=(BLOCK, 6), compression=hdf5plugin.Blosc(clevel=7))
    with pytest.raises(InvalidArgumentError, match="different data"):
        lazyh5.to_hdf5(out, _data(), progress=False, resume=True, **other)
    assert _sha(partial_path(out)) == before
    # the same filter and options resume it
    lazyh5.to_hdf5(out, _data(), progress=False, resume=True, **first)
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["v"][()], _data()["v"].values, strict=True)
        assert f["v"]._filters["32001"][4] == 1  # Blosc's level 1, as asked


@pytest.mark.parametrize("options", [FIRST, {"hdf5_chunks": (BLOCK, 6)}])
def test_resume_computes_only_the_missing_blocks(tmp_path, options):
    out = tmp_path / "out.h5"
    _interrupted(out, _data(), **options)
    done = _done_marks(out)
    assert 1 <= done <= 4
    computed = []

    def count(b):
        computed.append(b.shape[0])
        return b

    ds = _data()
    meta = np.empty((0, 0), "f4")
    resumed = ds.assign(v=ds["v"].copy(data=ds["v"].data.map_blocks(count, meta=meta)))
    with dask.config.set(scheduler="sync"):
        lazyh5.to_hdf5(out, resumed, progress=False, resume=True, **options)
    assert sum(computed) == ROWS - done * BLOCK
    assert not os.path.exists(partial_path(out))
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["v"][()], _data()["v"].values, strict=True)
        assert f["v"].chunks == options.get("hdf5_chunks", f["v"].chunks)
        assert f["v"].compression == options.get("compression")
        assert f["v"].shuffle == options.get("shuffle", False)


def test_resume_without_a_partial_file_writes_it_all(tmp_path):
    out = tmp_path / "out.h5"
    lazyh5.to_hdf5(out, _data(), progress=False, resume=True, hdf5_chunks=(BLOCK, 6))
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["v"][()], _data()["v"].values, strict=True)
        assert f["v"].chunks == (BLOCK, 6)


def test_a_complete_variable_then_an_interrupted_one_resume(tmp_path):
    """Variables done before the interruption are kept; a 1-D variable of several blocks
    and a scalar are resumed block by block too."""
    out = tmp_path / "out.h5"
    one_d = da.arange(ROWS, dtype="i8", chunks=BLOCK) * 5
    ds = xr.Dataset(
        {"count": ((), da.from_array(np.float64(2.5))), "first": (("sample",), one_d)}
    ).merge(_data())
    chunks = {"v": (BLOCK, 6), "first": (BLOCK,)}
    _interrupted(out, ds, hdf5_chunks=chunks)
    with h5py.File(partial_path(out), "r") as f:
        assert f["count"][()] == 2.5
        np.testing.assert_array_equal(f["first"][()], one_d.compute())
    lazyh5.to_hdf5(out, ds, progress=False, resume=True, hdf5_chunks=chunks)
    with h5py.File(out) as f:
        assert f["count"].shape == () and f["count"][()] == 2.5
        np.testing.assert_array_equal(f["first"][()], one_d.compute(), strict=True)
        np.testing.assert_array_equal(f["v"][()], _data()["v"].values, strict=True)


def test_resume_with_other_dask_blocks_gives_the_same_file(tmp_path):
    out = tmp_path / "out.h5"
    _interrupted(out, _data(), hdf5_chunks=(BLOCK // 2, 6))
    ds = _data()
    rechunked = ds.assign(v=ds["v"].chunk({"sample": BLOCK // 2}))
    lazyh5.to_hdf5(out, rechunked, progress=False, resume=True, hdf5_chunks=(BLOCK // 2, 6))
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["v"][()], ds["v"].values, strict=True)


def test_scalars_first_then_arrays(tmp_path):
    out = tmp_path / "s.h5"
    ds = xr.Dataset(
        {"a": ((), np.int32(7)), "b": ((), da.from_array(np.float32(1.5))), "c": ("n", [1, 2])}
    )
    lazyh5.to_hdf5(out, ds, progress=False)
    with h5py.File(out) as f:
        assert f["a"][()] == 7 and f["a"].dtype == "i4"
        assert f["b"][()] == 1.5 and f["b"].dtype == "f4"
        np.testing.assert_array_equal(f["c"][()], [1, 2])


def test_cf_encoding_coordinates_and_group_attributes(tmp_path):
    out = tmp_path / "cf.h5"
    n = 6
    times = np.array("2024-01-01", dtype="M8[ns]") + np.arange(n) * np.timedelta64(1, "h")
    temp = xr.DataArray(
        [1.0, np.nan, 3.0, 4.0, np.nan, 6.0], dims="time", attrs={"coordinates": "stale"}
    )
    temp.encoding = {"_FillValue": -999.0, "chunksizes": (3,), "zlib": True}
    ds = xr.Dataset(
        {"temp": temp, "plain": ("time", np.arange(n, dtype="f4"), {"coordinates": "old"})},
        coords={"time": times, "weight": ("time", np.linspace(0, 1, n))},
        attrs={"title": "cf", "skip": None},
    )
    ds["time"].encoding = {"units": "hours since 2024-01-01", "calendar": "standard"}
    lazyh5.to_hdf5(out, ds, group="g", progress=False)
    with h5py.File(out) as f:
        g = f["g"]
        assert dict(g.attrs) == {"title": "cf"} and "title" not in f.attrs
        np.testing.assert_array_equal(g["time"][()], np.arange(n))
        assert g["time"].attrs["units"] == "hours since 2024-01-01"
        assert g["time"].attrs["calendar"] == "standard"
        np.testing.assert_array_equal(g["temp"][()], [1, -999, 3, 4, -999, 6])
        assert g["temp"].attrs["_FillValue"] == -999.0
        assert "_FillValue" not in g["plain"].attrs  # no fill value added
        # the non-index coordinate, for each variable on its dims (stale values dropped)
        assert g["temp"].attrs["coordinates"] == "weight"
        assert g["plain"].attrs["coordinates"] == "weight"
        assert "coordinates" not in g["weight"].attrs
        assert g["temp"].compression is None  # the source's encoding is not a setting
    back = xr.open_dataset(out, engine="h5netcdf", group="g")
    expected = ds.copy()
    expected.attrs = {"title": "cf"}
    for name in ("temp", "plain"):
        expected[name].attrs = {}
    xr.testing.assert_identical(back, expected)


def test_resume_from_an_unreadable_or_unmarked_partial_file_starts_over(tmp_path):
    out = tmp_path / "out.h5"
    with open(partial_path(out), "wb") as f:
        f.write(b"not an HDF5 file at all" * 100)
    with pytest.warns(
        UserWarning, match=r"cannot resume from '.*\.out\.h5\.lazyh5-partial'.*starting over"
    ):
        lazyh5.to_hdf5(out, _data(), progress=False, resume=True)
    np.testing.assert_array_equal(lazyh5.open_dataset(out)["v"].values, _data()["v"].values)
    out2 = tmp_path / "out2.h5"
    with h5py.File(partial_path(out2), "w") as f:
        f.create_dataset("v", data=np.zeros((3, 3)))  # HDF5, but no marks at all
    lazyh5.to_hdf5(out2, _data(), progress=False, resume=True)
    np.testing.assert_array_equal(lazyh5.open_dataset(out2)["v"].values, _data()["v"].values)
    assert not os.path.exists(partial_path(out2))


def test_partial_file_sits_beside_the_target(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    assert partial_path("sub/x.h5") == str(tmp_path / "sub" / ".x.h5.lazyh5-partial")
    assert partial_path(tmp_path / "x.h5") == str(tmp_path / ".x.h5.lazyh5-partial")


def test_bad_calls_name_the_file_and_write_nothing(tmp_path):
    out = tmp_path / "o.h5"
    ds = _data()
    lazyh5.to_hdf5(out, ds, mode="x", progress=False)  # "x" is "w-"
    before = _sha(out)
    for mode in ("w-", "x"):
        with pytest.raises(FileExistsError, match=r"cannot write '.*o\.h5': it already exists"):
            lazyh5.to_hdf5(out, ds, mode=mode, progress=False)
    bad = [
        (dict(group="a//b"), r"cannot write '.*o\.h5': invalid group 'a//b'"),
        (dict(hdf5_chunks=(5,)), r"cannot write '.*o\.h5': hdf5_chunks \(5,\) for 'v'"),
        (dict(compression="nope"), r"cannot write '.*o\.h5': unknown compression 'nope'"),
    ]
    for options, match in bad:
        with pytest.raises(ValueError, match=match):
            lazyh5.to_hdf5(out, ds, mode="w", progress=False, **options)
    with pytest.raises(ValueError, match=r"cannot write '.*o\.h5': the dataset has no variables"):
        lazyh5.to_hdf5(out, xr.Dataset(), mode="w", progress=False)
    clash = xr.Dataset(
        {"v": (("sample", "f"), np.zeros((4, 2))), "sample": (("a", "b"), np.ones((2, 2)))}
    )
    with pytest.raises(
        lazyh5.errors.DimensionError, match=r"cannot create '.*o\.h5': dimension 'sample'"
    ):
        lazyh5.to_hdf5(out, clash, mode="w", progress=False)
    assert _sha(out) == before


def test_strings_two_coordinates_and_wrong_objects(tmp_path):
    out = tmp_path / "s.h5"
    ds = xr.Dataset(
        {
            "name": ("n", np.array(["ab", "c", "déf"])),
            "x": ("n", np.arange(3.0)),
            "solo": ("m", [1, 2], {"coordinates": "stale", "units": "m"}),
        },
        coords={"w1": ("n", [1, 2, 3]), "w2": ("n", [4, 5, 6])},
    )
    lazyh5.to_hdf5(out, ds, progress=False)
    with h5py.File(out) as f:
        assert h5py.check_string_dtype(f["name"].dtype) is not None
        assert [s.decode() for s in f["name"][()]] == ["ab", "c", "déf"]
        assert f["x"].attrs["coordinates"] == "w1 w2"
        assert dict(f["solo"].attrs).keys() == {"units", "DIMENSION_LIST"}
    back = xr.open_dataset(out, engine="h5netcdf")
    assert list(back["name"].values) == ["ab", "c", "déf"]
    assert set(back.coords) == {"w1", "w2"}
    with pytest.raises(TypeError, match=r"got a DataArray as the path") as info:
        lazyh5.to_hdf5(ds["x"], out, progress=False)
    assert "the path comes first, then the Dataset or DataArray to write" in str(info.value)
    with pytest.raises(TypeError, match=r"cannot write '.*o\.h5': expected a Dataset or DataArray"):
        lazyh5.to_hdf5(tmp_path / "o.h5", np.zeros(3), progress=False)


def test_a_file_that_appears_while_writing_is_not_replaced(tmp_path):
    out = tmp_path / "race.h5"

    def appear(b):
        if not out.exists():
            out.write_bytes(b"someone else's file")
        return b

    x = da.arange(128, chunks=64).map_blocks(appear, meta=np.empty(0, "i8"))
    for mode in ("w-", "x"):
        out.unlink(missing_ok=True)
        with pytest.raises(FileExistsError, match=r"cannot write '.*race\.h5': it appeared"):
            lazyh5.to_hdf5(out, xr.Dataset({"v": ("n", x)}), mode=mode, progress=False)
        assert out.read_bytes() == b"someone else's file"
        assert os.path.exists(partial_path(out))  # the work is kept
    lazyh5.to_hdf5(out, xr.Dataset({"v": ("n", x)}), mode="w", progress=False)
    np.testing.assert_array_equal(lazyh5.open_dataset(out)["v"].values, np.arange(128))


def test_resume_of_a_1d_variable_and_a_scalar_computes_only_what_is_missing(tmp_path):
    out = tmp_path / "one.h5"
    scalar_calls, rows = [], []

    def scalar(b):
        scalar_calls.append(1)
        return b

    def count(b):
        rows.append(len(b))
        return b

    def dataset(fail: bool) -> xr.Dataset:
        s = da.full((), 2.5, chunks=()).map_blocks(scalar, meta=np.empty((), "f8"))
        x = da.arange(ROWS, chunks=BLOCK).map_blocks(count, meta=np.empty(0, "i8"))
        ds = xr.Dataset({"s": ((), s), "x": ("n", x)})
        return _fail_after_1d(ds, 4) if fail else ds

    with dask.config.set(scheduler="sync"), pytest.raises(RuntimeError, match="interrupted"):
        lazyh5.to_hdf5(out, dataset(True), progress=False, hdf5_chunks={"x": (BLOCK,)})
    done = _done_marks(out) - 1  # the scalar's mark
    assert 1 <= done <= 4 and scalar_calls
    scalar_calls.clear()
    rows.clear()
    with dask.config.set(scheduler="sync"):
        lazyh5.to_hdf5(
            out, dataset(False), progress=False, resume=True, hdf5_chunks={"x": (BLOCK,)}
        )
    assert scalar_calls == [] and sum(rows) == ROWS - done * BLOCK
    with h5py.File(out) as f:
        assert f["s"][()] == 2.5
        np.testing.assert_array_equal(f["x"][()], np.arange(ROWS), strict=True)


def _fail_after_1d(ds: xr.Dataset, blocks: int) -> xr.Dataset:
    calls = []

    def fail(b):
        if len(calls) >= blocks:
            raise RuntimeError("interrupted")
        calls.append(1)
        return b

    return ds.assign(x=ds["x"].copy(data=ds["x"].data.map_blocks(fail, meta=np.empty(0, "i8"))))


def test_a_url_gets_the_file_every_option_makes_locally(tmp_path):
    """A URL (fsspec's in-memory file system here) is written through a local file with
    the same options, then uploaded; an existing object needs ``mode="w"``."""
    url = f"memory://lazyh5-tests/{uuid.uuid4().hex}/out.h5"
    ds = xr.Dataset({"x": (("s", "c"), np.arange(200.0).reshape(100, 2))}, attrs={"title": "t"})
    # not h5py's defaults (gzip level 4, no shuffle), so that each must be passed on
    options = dict(hdf5_chunks={"x": (10, 2)}, compression="gzip", compression_opts=7, shuffle=True)
    lazyh5.to_hdf5(url, ds, group="g", progress=False, **options)
    local = tmp_path / "local.h5"
    lazyh5.to_hdf5(local, ds, group="g", progress=False, **options)
    uploaded = fsspec.filesystem("memory").cat(url)
    with h5py.File(io.BytesIO(uploaded), "r") as f, h5py.File(local, "r") as g:
        for name in ("g/x", "g/s", "g/c"):
            got, want = f[name], g[name]
            assert (got.chunks, got.compression, got.compression_opts, got.shuffle) == (
                want.chunks,
                want.compression,
                want.compression_opts,
                want.shuffle,
            )
            np.testing.assert_array_equal(got[()], want[()])
        assert f["g"].attrs["title"] == "t"
        assert f["g/x"].chunks == (10, 2) and f["g/x"].compression_opts == 7
    with pytest.raises(lazyh5.errors.AlreadyExistsError, match="mode='w'"):
        lazyh5.to_hdf5(url, ds, progress=False)
    with pytest.raises(InvalidArgumentError, match=f"^cannot write '{url}': mode must be"):
        lazyh5.to_hdf5(url, ds, mode="a", progress=False)
    lazyh5.to_hdf5(url, ds * 2, mode="w", progress=False)
    with h5py.File(io.BytesIO(fsspec.filesystem("memory").cat(url)), "r") as f:
        np.testing.assert_array_equal(f["x"][()], ds["x"].values * 2)
    lazyh5.to_hdf5(f"file://{tmp_path / 'by-url.h5'}", ds, progress=False)
    with h5py.File(tmp_path / "by-url.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][()], ds["x"].values)
