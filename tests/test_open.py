"""open_dataset / xr.open_dataset(engine="lazyh5"): laziness, chunks, dtypes, attrs, groups."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.backend.entrypoint import Lazyh5BackendEntrypoint


def test_engine_is_registered(plain_file):
    assert "lazyh5" in xr.backends.list_engines()
    ds = xr.open_dataset(plain_file, engine="lazyh5", chunks={})
    assert isinstance(ds["image"].data, da.Array)
    np.testing.assert_array_equal(ds["label"].values, np.arange(1000) % 10)


def test_guess_can_open(tmp_path, plain_file):
    entry = Lazyh5BackendEntrypoint()
    assert entry.guess_can_open(plain_file)
    renamed = tmp_path / "noext"
    renamed.write_bytes(plain_file.read_bytes())
    assert entry.guess_can_open(renamed)  # by signature
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert not entry.guess_can_open(text)
    assert entry.guess_can_open("missing.nc")  # by suffix


def test_values_match_h5py(plain_file):
    ds = lazyh5.open_dataset(plain_file)
    with h5py.File(plain_file) as f:
        np.testing.assert_array_equal(ds["image"].values, f["image"][...])
        np.testing.assert_array_equal(ds["label"][10:20].values, f["label"][10:20])


def test_seed_dims_share_sample(plain_file):
    ds = lazyh5.open_dataset(plain_file)
    assert ds["image"].dims == ("sample", "image_dim_1", "image_dim_2", "image_dim_3")
    assert ds["label"].dims == ("sample",)
    train = ds.isel(sample=slice(0, 800))
    assert train["image"].shape[0] == train["label"].shape[0] == 800


def test_dask_chunks_are_whole_hdf5_chunks(plain_file):
    ds = lazyh5.open_dataset(plain_file)
    for name in ("image", "label"):
        hchunks = ds[name].encoding["chunksizes"]
        for axis_chunks, h in zip(ds[name].chunks, hchunks, strict=True):
            assert all(c % h == 0 for c in axis_chunks[:-1])
    small = lazyh5.open_dataset(plain_file, chunks={})
    assert small["image"].chunks[0] == (100,) * 10


@pytest.mark.parametrize("dtype", ["u1", "f4", "f8"])
@pytest.mark.parametrize("threads", [2, 16, 32])
def test_default_chunks_share_the_memory_budget_as_float64(tmp_path, dtype, threads):
    # A chunk holds budget / max(threads, 8) bytes once promoted to float64, whatever the
    # file's dtype: uint8 and float64 files get the same number of rows.
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("image", (200_000, 32, 32, 3), dtype, chunks=(64, 32, 32, 3))
    with dask.config.set(num_workers=threads), lazyh5.set_options(memory_budget="128MiB"):
        ds = lazyh5.open_dataset(path)
    rows = ds["image"].chunks[0][0]
    share = (128 << 20) // max(threads, 8)
    assert rows % 64 == 0
    assert share // 2 < rows * 32 * 32 * 3 * 8 <= share


def test_an_hdf5_chunk_bigger_than_the_share_is_kept_whole(tmp_path):
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("image", (4_000, 32, 32, 3), "f8", chunks=(1000, 32, 32, 3))
    with lazyh5.set_options(memory_budget="1MiB"):
        ds = lazyh5.open_dataset(path)
    assert ds["image"].chunks == ((1000,) * 4, (32,), (32,), (3,))


def test_user_chunks_follow_xarray_conventions(plain_file):
    # label's HDF5 chunks are 250 rows: xarray warns that 200 splits them.
    with pytest.warns(UserWarning, match="separate the stored chunks"):
        ds = lazyh5.open_dataset(plain_file, chunks={"sample": 200})
    assert ds["image"].chunks[0] == (200,) * 5
    auto = lazyh5.open_dataset(plain_file, chunks="auto")
    assert isinstance(auto["image"].data, da.Array)


def test_chunks_none_means_no_dask_as_in_xarray(plain_file):
    budget = lazyh5.open_dataset(plain_file)
    explicit = lazyh5.open_dataset(plain_file, chunks="budget")
    assert budget["image"].chunks == explicit["image"].chunks
    plain = lazyh5.open_dataset(plain_file, chunks=None)
    assert plain["image"].chunks is None and not isinstance(plain["image"].variable._data, da.Array)
    np.testing.assert_array_equal(plain["image"][3:5].values, budget["image"][3:5].values)
    tree = lazyh5.open_datatree(plain_file, chunks=None)
    assert tree["image"].chunks is None


def test_contiguous_dataset_gets_chunks(tmp_path):
    path = tmp_path / "contig.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(50_000.0))
    ds = lazyh5.open_dataset(path)
    assert isinstance(ds["x"].data, da.Array)
    assert ds["x"].encoding["contiguous"]
    assert float(ds["x"].sum()) == float(np.arange(50_000.0).sum())


def test_open_reads_no_data_on_huge_unwritten_dataset(tmp_path):
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", (1_000_000, 1_000_000), "f8", chunks=(1000, 1000), fillvalue=7.0)
    script = textwrap.dedent(
        f"""
        import lazyh5
        ds = lazyh5.open_dataset({str(path)!r})
        assert ds["x"].size == 10**12
        # a million dask chunks, none of them a task yet: opening does no per-chunk work
        graph = ds["x"].data.dask
        print(sum(len(layer) for layer in graph.layers.values() if layer.is_materialized()))
        # current RSS: ru_maxrss would include the forking parent's memory on Linux
        rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0])
        print(rss)
        print(float(ds["x"][5, 5]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    tasks, rss_kib = out.stdout.split()[:2]
    assert int(tasks) == 1  # the array itself
    assert int(rss_kib) < 600_000  # the interpreter with numpy/dask/xarray is ~200 MB
    assert out.stdout.split()[2] == "7.0"
    assert path.stat().st_size < 10 << 20  # and nothing was allocated by reading


def test_attrs_scalars_strings_and_dtypes(tmp_path):
    path = tmp_path / "types.h5"
    ints = ["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
    with h5py.File(path, "w") as f:
        for code in ints:
            f.create_dataset(f"v_{code}", data=np.arange(4).astype(code))
        f.create_dataset("flag", data=np.array([True, False, True, True]))
        f.create_dataset("fixed", data=np.array([b"ab", b"cd", b"e", b"f"]))
        f.create_dataset("vlen", data=["x", "yy", "zzz", "é"], dtype=h5py.string_dtype())
        f.create_dataset("scalar", data=3.5)
        f["v_f4"].attrs["units"] = "m"
        f["v_f4"].attrs["scale"] = np.array([1, 2])
        f.attrs["title"] = b"bytes title"
    ds = lazyh5.open_dataset(path)
    for code in ints:
        assert ds[f"v_{code}"].dtype == np.dtype(code)
        np.testing.assert_array_equal(ds[f"v_{code}"].values, np.arange(4).astype(code))
    assert ds["flag"].dtype == bool
    # fixed-length strings stay bytes, as h5netcdf gives them (xarray decodes them
    # when an _Encoding attribute says how)
    assert ds["fixed"].values.tolist() == [b"ab", b"cd", b"e", b"f"]
    assert ds["vlen"].values.tolist() == ["x", "yy", "zzz", "é"]
    assert ds["scalar"].ndim == 0 and float(ds["scalar"]) == 3.5
    assert ds["v_f4"].attrs["units"] == "m"
    np.testing.assert_array_equal(ds["v_f4"].attrs["scale"], [1, 2])
    assert ds.attrs["title"] == "bytes title"


def test_groups_and_datatree(tmp_path):
    path = tmp_path / "tree.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("meta", data=np.arange(3))
        f.create_dataset("train/image", data=np.ones((80, 4, 4)))
        f.create_dataset("train/label", data=np.zeros(80))
        f.create_dataset("test/image", data=np.ones((20, 4, 4)))
        f.create_dataset("test/deep/x", data=np.arange(5))
    train = lazyh5.open_dataset(path, group="train")
    assert train.sizes["sample"] == 80
    assert train["label"].dims == ("sample",)
    deep = lazyh5.open_dataset(path, group="/test/deep")
    np.testing.assert_array_equal(deep["x"].values, np.arange(5))
    tree = xr.open_datatree(path, engine="lazyh5")
    assert set(tree.children) == {"train", "test"}
    assert tree["train"]["image"].shape == (80, 4, 4)
    assert tree["test"]["deep"]["x"].shape == (5,)
    tree2 = lazyh5.open_datatree(path)
    assert isinstance(tree2["test"]["image"].data, da.Array)


def test_datatree_child_dims_do_not_clash_with_parent(tmp_path):
    path = tmp_path / "clash.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.ones((10, 2)))
        f.create_dataset("sub/x", data=np.ones((7, 2)))
    tree = lazyh5.open_datatree(path)
    assert tree["x"].sizes["sample"] == 10
    assert tree["sub"]["x"].shape == (7, 2)


def test_root_with_only_groups_warns(tmp_path):
    path = tmp_path / "groups.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a/x", data=np.arange(3))
    with pytest.warns(UserWarning, match="open_datatree"):
        ds = lazyh5.open_dataset(path)
    assert len(ds.data_vars) == 0


def test_mode_r_plus_is_writable(plain_file):
    ds = lazyh5.open_dataset(plain_file, mode="r+")
    from lazyh5.backend.store import H5Store

    f = H5Store(plain_file, "r+").acquire()
    assert f.mode == "r+"
    f["label"][0] = 42
    assert int(ds["label"][0]) == 42  # the same handle: reads see the write
    ds.close()


def test_pickle_round_trip(plain_file):
    ds = lazyh5.open_dataset(plain_file).isel(sample=slice(100, 300))
    clone = pickle.loads(pickle.dumps(ds))
    xr.testing.assert_identical(clone.compute(), ds.compute())


def test_netcdf4_style_file_keeps_dims_and_coords(tmp_path):
    path = tmp_path / "nc.h5"
    ref = xr.Dataset(
        {"temp": (("time", "station"), np.random.default_rng(1).random((6, 3)))},
        coords={"time": np.arange(6) * 10, "station": ["a", "b", "c"]},
        attrs={"source": "test"},
    )
    ref.to_netcdf(path, engine="h5netcdf")
    ds = lazyh5.open_dataset(path)
    assert ds["temp"].dims == ("time", "station")
    np.testing.assert_array_equal(ds["time"].values, ref["time"].values)
    assert ds["station"].values.tolist() == ["a", "b", "c"]
    xr.testing.assert_allclose(ds.compute(), ref)


def test_h5py_dimension_scales_are_honoured(tmp_path):
    path = tmp_path / "scales.h5"
    with h5py.File(path, "w") as f:
        data = f.create_dataset("data", data=np.zeros((4, 3)))
        t = f.create_dataset("t", data=np.array([0.0, 0.5, 1.0, 1.5]))
        t.make_scale("time")
        data.dims[0].attach_scale(t)
    ds = lazyh5.open_dataset(path)
    assert ds["data"].dims == ("time", "data_dim_1")
    np.testing.assert_array_equal(ds["time"].values, [0.0, 0.5, 1.0, 1.5])


def test_open_1000_datasets(tmp_path):
    # how long it takes is measured by benchmarks/open.py
    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as f:
        for i in range(1000):
            f.create_dataset(f"v{i:04d}", (100, 8), "f4", chunks=(50, 8), fillvalue=i)
    ds = lazyh5.open_dataset(path)
    assert len(ds.data_vars) == 1000
    assert float(ds["v0999"][99, 7]) == 999.0 and ds["v0500"].chunks == ((100,), (8,))


def test_open_datatree_group_dims_chunks_and_r_plus(tmp_path):
    path = tmp_path / "tree.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("top", data=np.arange(10.0))
        f.create_dataset("g/y", data=np.arange(100.0), chunks=(10,))
        f.create_dataset("g/sub/z", data=np.arange(100.0) * 2, chunks=(10,))
    tree = lazyh5.open_datatree(
        path, group="g", dims={"y": ("row",), "z": ("row",)}, chunks={"row": 50}, mode="r+"
    )
    assert "top" not in tree.dataset and set(tree.children) == {"sub"}  # from /g down
    y, z = tree["y"], tree["sub"]["z"]
    assert y.dims == z.dims == ("row",)
    assert y.chunks == z.chunks == ((50, 50),)
    y.h5[:5] = -1.0  # open for writing
    z.h5[95:] = -2.0
    tree.close()
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["g/y"][:6], [-1, -1, -1, -1, -1, 5])
        np.testing.assert_array_equal(f["g/sub/z"][94:], [188, -2, -2, -2, -2, -2])
