"""Elementwise functions of a file's rows (``astype``, ``/ 255``...) fed without dask:
the rows read directly, the functions run by numpy; every other graph through dask."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.feed.elementwise import mapped
from lazyh5.feed.loader import BatchLoader

N = 1500


@pytest.fixture
def images(tmp_path):
    """uint8 images (64-row chunks) and labels that give each row's index."""
    rng = np.random.default_rng(3)
    path = tmp_path / "u8.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "image", data=rng.integers(0, 256, (N, 6, 5, 3), dtype=np.uint8), chunks=(64, 6, 5, 3)
        )
        f.create_dataset("label", data=np.arange(N), chunks=(64,))
        v = f.create_dataset("scaled", data=rng.integers(0, 9, (N, 4), dtype=np.int16))
        v.attrs["scale_factor"] = 0.5
        m = f.create_dataset("masked", data=rng.random((N, 4)).astype("f4"), chunks=(64, 4))
        m.attrs["_FillValue"] = np.float32(m[0, 0])  # some values read as NaN
    return path


def _fast(ds):
    """Functions of the file's rows the loader computes with numpy."""
    x = ds["image"]
    return {
        "normalised": x.astype("f4") / 255,
        "chain": ((x.astype("f4") - 128) * 2).clip(-100, 100),
        "where": xr.where(x > 100, x, 0),
        "twice": x + x,
        "ufunc": np.sqrt(x),
        "compare": x >= 128,
        "view": x.isel(sample=slice(70, 1400)).astype("f8") / 3,
    }


def _dask(ds):
    """Functions dask must compute: a reduction, an opaque function, decoded values."""
    x = ds["image"]
    return {
        "reduction": x - x.mean(),
        "map_blocks": x.copy(data=x.data.map_blocks(lambda b: b // 2)),
        "scale_factor": ds["scaled"] * 2,
        "fill_value": ds["masked"] + 1,
        "array constant": x * np.arange(3, dtype="u1"),
    }


def test_which_variables_are_fed_as_functions_of_file_rows(images):
    ds = lazyh5.open_dataset(images)
    for name, var in _fast(ds).items():
        found = mapped(var, "sample")
        assert found is not None, name
        assert found.base.dtype == np.uint8 and found.base.shape[1:] == (6, 5, 3)
    for name, var in _dask(ds).items():
        assert mapped(var, "sample") is None, name
    assert mapped(ds["image"], "sample") is None  # a plain view: read directly


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("kind", ["fast", "dask"])
def test_functions_of_file_rows_feed_the_values_dask_computes(images, shuffle, kind):
    ds = lazyh5.open_dataset(images, chunks={"sample": 128})  # no bigger than a block
    for name, var in (_fast if kind == "fast" else _dask)(ds).items():
        want = var.values
        first = 70 if name == "view" else 0
        data = ds.isel(sample=slice(first, first + len(want))).assign(x=var)
        loader = BatchLoader(
            data, "x", "label", batch_size=50, shuffle=shuffle, seed=2, block_size="100KiB"
        )
        seen = []
        for epoch in range(2):
            for x, y in loader.batches(epoch):
                assert x.dtype == want.dtype, name
                np.testing.assert_array_equal(x, want[y - first], err_msg=name)
                seen.append(y)
        assert sorted(np.concatenate(seen).tolist()) == sorted(
            list(range(first, first + len(want))) * 2
        )


def test_blocks_follow_the_file_chunks_of_the_input(images):
    ds = lazyh5.open_dataset(images, chunks={"sample": 320})
    loader = BatchLoader(
        ds.assign(image=ds["image"].astype("f4") / 255), "image", block_size="20KiB"
    )
    assert (loader.plan.starts[1:] % 64 == 0).all()
    assert (loader.plan.sizes <= 192).all()  # not whole dask chunks of 320 rows


def test_random_batches_read_directly_match_the_stream(images):
    ds = lazyh5.open_dataset(images)
    data = ds.assign(image=ds["image"].astype("f4") / 255)
    loader = BatchLoader(data, "image", "label", batch_size=40, seed=4, block_size="50KiB")
    stream = list(loader.batches(0))
    for i in (7, 0, len(stream) - 1, 3):
        x, y = loader._read_batch(0, i)
        np.testing.assert_array_equal(y, stream[i][1])
        np.testing.assert_array_equal(x, stream[i][0])


@pytest.mark.parametrize("shuffle", [False, True])
def test_compressed_input_rows_are_decoded_then_computed(tmp_path, shuffle):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 16, (700, 4, 4), dtype=np.uint8)  # compressible
    path = tmp_path / "gzip.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image, chunks=(32, 4, 4), compression="gzip")
        f.create_dataset("label", data=np.arange(700), chunks=(32,))
    ds = lazyh5.open_dataset(path)
    var = ds["image"].astype("f4") / 15
    assert mapped(var, "sample") is not None
    loader = BatchLoader(
        ds.assign(image=var),
        "image",
        "label",
        batch_size=64,
        shuffle=shuffle,
        seed=1,
        block_size="8KiB",
    )
    seen = []
    for x, y in loader:
        np.testing.assert_array_equal(x, image[y].astype("f4") / 15)
        seen.append(y)
    assert sorted(np.concatenate(seen).tolist()) == list(range(700))


@pytest.mark.parametrize("shuffle", [False, True])
def test_elementwise_variables_run_no_dask_task(images, shuffle):
    """Fed from the file's rows: dask's scheduler runs nothing; an opaque transform of the
    same rows still runs its dask tasks."""
    from dask.callbacks import Callback

    class Count(Callback):
        def __init__(self):
            super().__init__()
            self.tasks = 0

        def _pretask(self, key, dsk, state):
            self.tasks += 1

    ds = lazyh5.open_dataset(images)
    for var, dask_tasks in ((_fast(ds)["chain"], False), (_dask(ds)["map_blocks"], True)):
        loader = BatchLoader(ds.assign(x=var), "x", "label", shuffle=shuffle, seed=0)
        with Count() as count:
            rows = sum(len(y) for _, y in loader)
        assert rows == N and (count.tasks > 0) == dask_tasks
