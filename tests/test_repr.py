"""What IPython/Jupyter users see: storage in reprs, tab completion, loader reprs."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "images.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("image", (600, 8, 8, 3), "u1", chunks=(100, 8, 8, 3), compression="lzf")
        f.create_dataset("label", data=np.arange(600) % 10, chunks=(300,), compression="gzip")
        f.create_dataset("flat", data=np.zeros(600, "f4"))  # contiguous
    return p


def test_storage_is_in_encoding_and_the_h5_accessor_reprs_never_in_attrs(path):
    ds = lazyh5.open_dataset(path)
    assert ds["image"].encoding["lazyh5_storage"] == "chunks (100, 8, 8, 3) of 18.75 kiB, lzf"
    assert ds["label"].encoding["lazyh5_storage"] == "chunks (300,) of 2.34 kiB, gzip(4)"
    assert ds["flat"].encoding["lazyh5_storage"] == "contiguous, not chunked"
    assert all(not v.attrs for v in ds.variables.values())
    assert "chunks (100, 8, 8, 3) of 18.75 kiB, lzf" in ds["image"].h5._repr_html_()
    assert "chunks (300,) of 2.34 kiB, gzip(4)" in repr(ds["label"].h5)
    assert "lazyh5_storage" not in repr(ds["image"])


@pytest.mark.parametrize("engine", ["h5netcdf", "zarr"])
def test_copies_carry_nothing_lazyh5_invented(path, tmp_path, engine):
    pytest.importorskip(engine)
    out = tmp_path / f"copy.{engine}"
    ds = lazyh5.open_dataset(path)
    if engine == "zarr":
        ds.to_zarr(out)
        back = xr.open_zarr(out)
    else:
        ds.to_netcdf(out, engine=engine)
        back = xr.open_dataset(out, engine=engine)
    assert not back.coords
    assert all(not v.attrs for v in back.variables.values())
    xr.testing.assert_equal(back.load(), ds.load())


def test_an_attribute_of_the_same_name_in_the_file_wins(tmp_path):
    p = tmp_path / "a.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=np.arange(4)).attrs["hdf5_storage"] = "mine"
    # nothing of lazyh5's own is mixed into attributes, so the file's own stay as they are
    assert lazyh5.open_dataset(p)["x"].attrs == {"hdf5_storage": "mine"}


def test_h5_accessor_repr_names_file_path_storage_and_dask_chunks(path):
    ds = lazyh5.open_dataset(path)
    text = repr(ds.h5)
    for expected in (str(path), "/image", "/label", "lzf", "gzip(4)", "dask chunks sample: 600"):
        assert expected in text
    view = ds.isel(sample=slice(10, 20))
    assert "sample: 10" in repr(view["image"].h5)
    html = ds.h5._repr_html_()
    assert html.startswith("<table>") and html.count("<tr>") == 1 + 3
    assert "not from a file" in repr((ds["image"] * 2).h5)


def test_tab_completion_lists_variables(path):
    ds = lazyh5.open_dataset(path)
    assert {"image", "label", "flat"} <= set(ds._ipython_key_completions_())
    assert {"image", "label"} <= set(dir(ds))


def test_batch_loader_repr_says_file_rows_batches_shuffle_and_blocks(path):
    loader = lazyh5.BatchLoader(
        lazyh5.open_dataset(path), "image", "label", batch_size=32, start=100, seed=3
    )
    text = repr(loader)
    for expected in (
        str(path),
        "rows 100:600",
        "500 rows",
        "16 batches of 32",
        "shuffle=True",
        "seed=3",
        "2 in flight",
    ):
        assert expected in text, (expected, text)
