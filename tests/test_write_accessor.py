"""Write-through assignment with the ``.h5`` accessor, on real files and real dask."""

from __future__ import annotations

import tempfile
from pathlib import Path

import dask
import dask.array as da
import h5py
import hypothesis.strategies as st
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings

import lazyh5
from lazyh5.backend.store import H5Store
from lazyh5.errors import ReadOnlyError, UnmappableViewError, UnsupportedDtypeError

N, W = 23, 5


def _make(path: Path, n: int = N, w: int = W) -> xr.Dataset:
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=rng.random((n, w)), chunks=(min(4, n), w))
        f.create_dataset("label", data=np.arange(n, dtype="f8"), chunks=(min(8, n),))
        f.create_dataset("count", data=np.arange(n, dtype="i4"), chunks=(min(8, n),))
    return lazyh5.open_dataset(path, mode="r+", dims={"x": ("sample", "col")})


def _file_bytes(path: Path) -> dict[str, bytes]:
    # The shared r+ handle: the same one the dataset writes through.
    f = H5Store(path, "r+").acquire()
    return {k: f[k][()].tobytes() for k in f if isinstance(f[k], h5py.Dataset)}


@pytest.fixture
def ds(tmp_path):
    return _make(tmp_path / "data.h5")


def test_brief_forms(tmp_path):
    path = tmp_path / "img.h5"
    ds = lazyh5.create(
        path,
        {"image": ((300, 4, 4, 3), "f4"), "label": ((300,), "f8")},
        dims={"image": ("sample", "y", "x", "channel")},
        hdf5_chunks={"image": (64, 4, 4, 3), "label": (64,)},
    )
    img = np.full((4, 4, 3), 2.0, "f4")
    ds["label"].h5[0] = 3.0
    ds["label"].h5[10:20] = np.arange(10.0)
    ds["image"].h5[5] = img
    ds["image"].h5[6] = 1  # scalar broadcast
    ds["image"].h5.loc[{"sample": 7}] = img * 2
    ds.isel(sample=slice(100, 200))["label"].h5[0:5] = 1.0
    expected = np.zeros(300)
    expected[0], expected[10:20], expected[100:105] = 3.0, np.arange(10.0), 1.0
    np.testing.assert_array_equal(ds["label"].values, expected)  # same ds sees writes
    fresh = lazyh5.open_dataset(path)
    np.testing.assert_array_equal(fresh["label"].values, expected)
    assert (fresh["image"][5].values == 2).all() and (fresh["image"][6].values == 1).all()
    assert (fresh["image"][7].values == 4).all() and (fresh["image"][8].values == 0).all()


def test_views_with_steps_arrays_and_scalars(ds, tmp_path):
    ref = ds["x"].values.copy()
    ds.isel(sample=slice(20, 2, -3))["x"].h5[1:3, 0] = [7.0, 8.0]
    ref[20:2:-3][1:3, 0] = [7.0, 8.0]
    ds.isel(sample=[9, 3, 15])["x"].h5[[2, 0], 1:] = 5.0
    ref[[15, 9], 1:] = 5.0
    ds.isel(sample=4)["x"].h5[::2] = -1.0
    ref[4, ::2] = -1.0
    ds["x"].h5[{"col": 4}] = np.arange(N, dtype="f8")
    ref[:, 4] = np.arange(N)
    ds["x"].h5[np.arange(N) % 5 == 0, ...] = 0.5
    ref[np.arange(N) % 5 == 0] = 0.5
    np.testing.assert_array_equal(ds["x"].values, ref)
    np.testing.assert_array_equal(lazyh5.open_dataset(tmp_path / "data.h5")["x"].values, ref)


def test_loc_with_real_coordinates(tmp_path):
    path = tmp_path / "nc.h5"
    lazyh5.create(path, {"time": ((6,), "f8"), "v": ((6,), "f4")}, dims={"v": ("time",)})
    with h5py.File(path, "r+") as f:
        f["time"][...] = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    ds = lazyh5.open_dataset(path, mode="r+")
    ds["v"].h5.loc[30.0] = 1.0
    ds.sel(time=[60.0, 20.0])["v"].h5[:] = [6.0, 2.0]
    ds.sel(time=slice(40.0, 50.0))["v"].h5.loc[{"time": 50.0}] = 5.0
    np.testing.assert_array_equal(ds["v"].values, [0, 2, 1, 0, 5, 6])


def test_repeated_coordinate_values_refused(tmp_path):
    path = tmp_path / "dup.h5"
    lazyh5.create(path, {"time": ((4,), "f8"), "v": ((4,), "f4")}, dims={"v": ("time",)})
    with h5py.File(path, "r+") as f:
        f["time"][...] = [1.0, 1.0, 2.0, 3.0]
    ds = lazyh5.open_dataset(path, mode="r+")
    with pytest.raises(UnmappableViewError, match="repeated values"):
        ds["v"].h5.loc[{"time": 1.0}] = 1.0
    # Positions come from the view's data, not its labels: repeats do not matter.
    ds.isel(time=slice(2, 4))["v"].h5[0] = 5.0
    np.testing.assert_array_equal(lazyh5.open_dataset(path)["v"].values, [0, 0, 5, 0])


def test_dataset_accessor(ds):
    ds.h5[{"sample": slice(0, 3)}] = {"label": -1.0, "count": 7}
    assert ds["label"].values[:4].tolist() == [-1, -1, -1, 3]
    assert ds["count"].values[:4].tolist() == [7, 7, 7, 3]


# ---------------------------------------------------------------- lazy right-hand sides


def test_lazy_normalise_in_place_with_lazy_reductions(tmp_path):
    path = tmp_path / "big.h5"
    ds = _make(path, n=400, w=6)
    ref = ds["x"].values.copy()
    x = ds["x"]
    mean, std = x.mean(), x.std()  # lazy reductions over the very variable we overwrite
    with lazyh5.set_options(memory_budget="1KiB"), dask.config.set(scheduler="threads"):
        ds = lazyh5.open_dataset(path, mode="r+", dims={"x": ("sample", "col")})
        x = ds["x"]
        assert x.data.numblocks[0] > 10  # many blocks, so a naive store would clobber
        x.h5.assign(slice(None), (x - x.mean()) / x.std(), progress=False)
    del mean, std
    got = lazyh5.open_dataset(path)["x"].values
    np.testing.assert_allclose(got, (ref - ref.mean()) / ref.std(), rtol=1e-12)


def test_lazy_reversed_self_read(tmp_path):
    path = tmp_path / "rev.h5"
    ds = _make(path, n=64)
    ref = ds["x"].values.copy()
    with lazyh5.set_options(memory_budget="200B"):
        ds = lazyh5.open_dataset(path, mode="r+", dims={"x": ("sample", "col")})
        ds["x"].h5[:] = ds["x"].data[::-1]  # reads blocks it will overwrite
    np.testing.assert_array_equal(lazyh5.open_dataset(path)["x"].values, ref[::-1])


def test_lazy_from_other_variable_into_view(ds):
    ref = ds["x"].values.copy()
    view = ds.isel(sample=slice(1, None, 2))
    view["x"].h5[:, 0] = view["label"] * 2 + 1  # xarray expression aligned by dims
    ref[1::2, 0] = np.arange(N)[1::2] * 2 + 1
    np.testing.assert_array_equal(ds["x"].values, ref)


def test_lazy_from_other_file_streams_blocks(tmp_path):
    src = _make(tmp_path / "src.h5", n=50)
    dst = _make(tmp_path / "dst.h5", n=50)
    dst["x"].h5[:] = np.sqrt(src["x"])
    np.testing.assert_allclose(dst["x"].values, np.sqrt(src["x"].values))


# ---------------------------------------------------------------- property-based


@st.composite
def _cases(draw):
    n, w = draw(st.integers(1, 12)), draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["none", "slice", "array", "int"]))
    if kind == "slice":
        step = draw(st.sampled_from([1, 2, 3, -1, -2]))
        view = slice(
            draw(st.none() | st.integers(-n, n)), draw(st.none() | st.integers(-n, n)), step
        )
    elif kind == "array":
        view = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    elif kind == "int":
        view = draw(st.integers(0, n - 1))
    else:
        view = slice(None)
    vn = len(np.arange(n)[view]) if not isinstance(view, int) else None

    def axis_key(m):
        if m == 0:
            return slice(None)
        return draw(
            st.integers(-m, m - 1)
            | st.builds(
                slice,
                st.none() | st.integers(-m, m),
                st.none() | st.integers(-m, m),
                st.sampled_from([None, 1, 2, -1, -3]),
            )
            | st.lists(st.integers(0, m - 1), min_size=1, max_size=m, unique=True)
        )

    key = (axis_key(w),) if vn is None else (axis_key(vn), axis_key(w))
    value_kind = draw(st.sampled_from(["scalar", "numpy", "dask"]))
    return n, w, view, key, value_kind


def _sel(m: int, k):
    out = np.arange(m)[k]
    return np.atleast_1d(out), np.ndim(out) == 0


# 150 examples: enough that the fixed examples of the "ci" profile (tests/conftest.py)
# include a stepped view written through with a stepped key.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_cases())
def test_assignment_matches_numpy(case):
    n, w, view, key, value_kind = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.h5"
        ds = _make(path, n=n, w=w)
        ref = ds["x"].values.copy()
        rows_view = np.arange(n)[view]
        v = ds.isel(sample=view)["x"]
        if np.ndim(rows_view) == 0:
            rows, rdrop = np.array([rows_view]), True
            cols, cdrop = _sel(w, key[0])
        else:
            r, rdrop = _sel(len(rows_view), key[0])
            rows = rows_view[r]
            cols, cdrop = _sel(w, key[1])
        shape = tuple(len(a) for a, drop in ((rows, rdrop), (cols, cdrop)) if not drop)
        value = 42.0 if value_kind == "scalar" else np.random.default_rng(0).random(shape)
        # a lazy value goes through the block-by-block path (rechunked to file blocks)
        v.h5[key] = da.from_array(value, chunks=2) if value_kind == "dask" else value
        ref[np.ix_(rows, cols)] = np.broadcast_to(value, shape).reshape(len(rows), len(cols))
        np.testing.assert_array_equal(ds["x"].values, ref)
        ds.close()


# ---------------------------------------------------------------- errors leave the file as it was


def _computed(ds):
    ds["x"].pipe(lambda a: a + 1).h5[0] = 1.0


def _transposed(ds):
    ds["x"].T.h5[0] = 1.0


def _concatenated(ds):
    xr.concat([ds["x"], ds["x"].rename("y")], dim="sample").h5[0] = 1.0


def _concat_other_vars(ds):
    a = ds["label"].isel(sample=slice(0, 5))
    b = ds["count"].isel(sample=slice(10, 15)).astype("f8")
    b.encoding = dict(a.encoding)
    xr.concat([a, b], dim="sample").h5[0] = 1.0


def _loaded(ds):
    ds["x"].load().h5[0] = 1.0


ERRORS = [
    ("unsafe cast", lambda ds: ds["count"].h5.__setitem__(slice(0, 3), 1.5), TypeError),
    ("unsafe array cast", lambda ds: ds["count"].h5.__setitem__(0, np.float32(2)), TypeError),
    ("complex into float", lambda ds: ds["label"].h5.__setitem__(0, 1j), TypeError),
    ("int overflow", lambda ds: ds["count"].h5.__setitem__(0, 2**40), ValueError),
    ("shape", lambda ds: ds["x"].h5.__setitem__(slice(0, 3), np.ones((2, W))), ValueError),
    (
        "lazy shape",
        lambda ds: ds["label"].h5.__setitem__(slice(0, 3), ds["label"].data),
        ValueError,
    ),
    ("out of bounds int", lambda ds: ds["label"].h5.__setitem__(N, 1.0), IndexError),
    ("out of bounds array", lambda ds: ds["label"].h5.__setitem__([0, N + 3], 1.0), IndexError),
    ("too many indices", lambda ds: ds["label"].h5.__setitem__((0, 0), 1.0), IndexError),
    ("bad mask length", lambda ds: ds["label"].h5.__setitem__(np.ones(3, bool), 1.0), IndexError),
    ("unknown loc label", lambda ds: ds["label"].h5.loc.__setitem__(10**6, 1.0), KeyError),
    ("computed expression", _computed, UnmappableViewError),
    ("transposed", _transposed, UnmappableViewError),
    ("concatenated", _concatenated, UnmappableViewError),
    ("concatenated vars", _concat_other_vars, UnmappableViewError),
    ("loaded", _loaded, UnmappableViewError),
    (
        "dataset accessor validates all first",
        lambda ds: ds.h5.__setitem__({"sample": 0}, {"label": 1.0, "count": 1.5}),
        TypeError,
    ),
]


@pytest.mark.parametrize(("what", "action", "error"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_leave_file_unchanged(tmp_path, what, action, error):
    path = tmp_path / "data.h5"
    ds = _make(path)
    before = _file_bytes(path)
    with pytest.raises(error) as info:
        action(ds)
    # Errors name the file, except for an expression that has lost its link to it.
    assert "data.h5" in str(info.value) or what == "computed expression"
    assert _file_bytes(path) == before


def test_read_only_file(tmp_path):
    path = tmp_path / "data.h5"
    _make(path).close()
    ro = lazyh5.open_dataset(path)
    with pytest.raises(ReadOnlyError, match=r"cannot write to 'label' in .*data.h5: .*mode='r\+'"):
        ro["label"].h5[0] = 3.0
    assert lazyh5.open_dataset(path)["label"].values[0] == 0


def test_cf_encoded_variable_refused(tmp_path):
    path = tmp_path / "cf.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("t", data=np.arange(5, dtype="i2"))
        d.attrs["scale_factor"] = 0.5
    ds = lazyh5.open_dataset(path, mode="r+")
    with pytest.raises(UnsupportedDtypeError, match="scale_factor"):
        ds["t"].h5[0] = 1.0
    raw = lazyh5.open_dataset(tmp_path / "cf.h5", mode="r+", decode_cf=False)
    raw["t"].h5[0] = 9
    assert raw["t"].values[0] == 9


def test_in_place_only_when_each_block_reads_its_own_region(tmp_path):
    from lazyh5.backend.view import target_of
    from lazyh5.write.assign import _aligned_chunks, _file_blocks, _in_place_safe
    from lazyh5.write.graph import precompute_shared

    path = tmp_path / "safe.h5"
    _make(path, n=64).close()
    with lazyh5.set_options(memory_budget="200B"):
        ds = lazyh5.open_dataset(path, mode="r+", dims={"x": ("sample", "col")})
        x = ds["x"]
        target = target_of(x).select(slice(None))

        def lazy(value):
            arr = value.data.rechunk(_aligned_chunks(target, _file_blocks(target)))
            return precompute_shared(arr)

        assert _in_place_safe(lazy((x - x.mean()) / x.std()), target)
        assert not _in_place_safe(lazy(x[::-1].variable), target)
        assert not _in_place_safe(lazy(x.shift(sample=1).variable), target)
        assert not _in_place_safe(lazy(x.rolling(sample=3, center=True).mean().variable), target)


def test_view_without_dask_is_not_loaded_and_maps(tmp_path):
    path = tmp_path / "nodask.h5"
    _make(path).close()
    ds = xr.open_dataset(path, engine="lazyh5", mode="r+")  # lazily indexed, no dask
    ds.isel(sample=slice(2, 12, 3))["label"].h5[[0, 2]] = -5.0
    ds.close()
    np.testing.assert_array_equal(
        np.flatnonzero(lazyh5.open_dataset(path)["label"].values == -5.0), [2, 8]
    )


def test_views_map_back_without_any_coordinate(tmp_path):
    # lazyh5 adds no position coordinates: views trace back through their data alone.
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros((40, 6)), chunks=(7, 4))
    ref = np.zeros((40, 6))
    ds = lazyh5.open_dataset(path, mode="r+")
    assert not ds.coords
    view = ds.isel(sample=slice(5, 35, 2)).isel(x_dim_1=[4, 1])
    view["x"].h5[1:3] = [[1.0, 2.0], [3.0, 4.0]]
    ref[5:35:2][1:3][:, [4, 1]] = [[1.0, 2.0], [3.0, 4.0]]
    # xarray's lazily indexed variables (no dask) map back through their key
    lazy = xr.open_dataset(path, engine="lazyh5", mode="r+")
    lazy.isel(sample=[30, 3], x_dim_1=0)["x"].h5[...] = [8.0, 9.0]
    ref[[30, 3], 0] = [8.0, 9.0]
    # and so do lazily indexed variables chunked afterwards
    lazy.isel(sample=slice(10, 12)).chunk()["x"].h5[:, 5] = 7.0
    ref[10:12, 5] = 7.0
    # an in-memory assignment changes the Dataset, not the file, and moves no rows
    ds["x"][0] = 5.0
    ds["x"].h5[-1] = 6.0
    ref[-1] = 6.0
    np.testing.assert_array_equal(lazyh5.open_dataset(path)["x"].values, ref)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x.isel(sample=xr.DataArray([1, 2]), x_dim_1=xr.DataArray([0, 1])),
        lambda x: x.copy(data=x.data * 2),
        lambda x: x.isel(sample=[3, 3]),
        lambda x: xr.concat([x.isel(sample=[1, 2]), x.isel(sample=[2])], "sample"),
    ],
    ids=["pointwise", "arithmetic", "repeated", "concatenated"],
)
def test_views_that_are_not_positions_of_the_file_are_refused(tmp_path, make):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros((10, 3)))
    x = lazyh5.open_dataset(path, mode="r+")["x"]
    before = _file_bytes(path)
    with pytest.raises(UnmappableViewError, match=r"plain\.h5"):
        make(x).h5[...] = 1.0
    assert _file_bytes(path) == before


# ---------------------------------------------------------------- .assign() methods


def test_assign_methods_write_like_setitem(tmp_path):
    ds = _make(tmp_path / "a.h5", n=20)
    ref = {n: ds[n].values.copy() for n in ("x", "label", "count")}
    ds.h5.assign({"sample": slice(2, 5)}, {"label": -1.0, "count": 7}, progress=False)
    ref["label"][2:5], ref["count"][2:5] = -1.0, 7
    ds["x"].h5.assign((slice(0, 20, 3), 1), 0.5, progress=False)
    ref["x"][0:20:3, 1] = 0.5
    with_coords = ds.assign_coords(sample=np.arange(20) * 10)
    with_coords["x"].h5.loc.assign({"sample": 70, "col": 0}, 9.0, progress=False)
    labels = slice(100, 120)  # labels, so both ends included: rows 10, 11, 12
    with_coords["count"].h5.loc.assign(labels, np.array([1, 2, 3], "i4"), progress=False)
    ref["x"][7, 0] = 9.0
    ref["count"][10:13] = [1, 2, 3]
    ds.close()
    with h5py.File(tmp_path / "a.h5") as f:
        for name, values in ref.items():
            np.testing.assert_array_equal(f[name][()], values, err_msg=name)
