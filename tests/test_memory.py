"""Memory bounded by lazyh5's budget, and index lists that read only the rows they select.

Peak memory is measured in fresh processes (``VmHWM`` minus the resident size once
the file is open); bytes read are the process's ``rchar`` from ``/proc/self/io``, which
counts every byte h5py's reads return, page cache included.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import dask
import dask.array.optimization
import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5

MiB = 1 << 20


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    # 20,000 uint8 images (60 MiB) in lazyh5.create's default chunks (341 rows, 1 MiB).
    path = tmp_path_factory.mktemp("mem") / "images.h5"
    ds = lazyh5.create(
        path,
        {"image": ((20_000, 32, 32, 3), "u1"), "label": ((20_000,), "i8")},
        dims={"image": ("sample", "y", "x", "channel")},
    )
    rng = np.random.default_rng(0)
    ds["image"].h5[:] = rng.integers(0, 256, (20_000, 32, 32, 3), dtype=np.uint8)
    ds["label"].h5[:] = np.arange(20_000) % 10
    ds.close()
    return path


@pytest.fixture(scope="module")
def reference(images) -> dict[str, np.ndarray]:
    with h5py.File(images, "r") as f:
        return {"image": f["image"][()], "label": f["label"][()]}


INDEXES = {
    "sorted": np.array([3, 900, 901, 5000, 12_345, 19_999]),
    "unsorted": np.array([19_999, 3, 12_345, 900, 5000]),
    "repeated": np.array([7, 7, 15_000, 7, 2]),
    "negative": np.array([-1, -20_000, 10]),
    "one": np.array([4242]),
}


@pytest.mark.parametrize("name", INDEXES)
def test_index_lists_give_numpy_values(images, reference, name):
    idx = INDEXES[name]
    ds = lazyh5.open_dataset(images)
    np.testing.assert_array_equal(ds["image"].isel(sample=idx).values, reference["image"][idx])
    np.testing.assert_array_equal(ds["label"][idx].values, reference["label"][idx])
    both = ds.isel(sample=idx, x=np.array([0, 31, 5]))
    np.testing.assert_array_equal(both["image"].values, reference["image"][idx][:, :, [0, 31, 5]])
    scaled = (ds["image"].isel(sample=idx) / 2).values  # a transform after the take
    np.testing.assert_array_equal(scaled, reference["image"][idx] / 2)
    before = (ds["image"] / 2).isel(sample=idx).values  # and one before it
    np.testing.assert_array_equal(before, reference["image"][idx] / 2)


def test_a_chunk_needed_whole_elsewhere_is_read_once_whole(images, reference):
    ds = lazyh5.open_dataset(images)
    idx = np.array([1, 2, 3000])
    x = ds["image"].data
    picked, total = dask.compute(x[idx], x[:4000].sum())  # both use the first chunks
    np.testing.assert_array_equal(picked, reference["image"][idx])
    assert total == reference["image"][:4000].sum()


def test_compressed_rows_by_index(tmp_path):
    path = tmp_path / "gz.h5"
    data = np.arange(5000 * 12, dtype="f4").reshape(5000, 12)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(100, 12), compression="gzip")
    idx = np.array([4999, 0, 2500, 2501, 77])
    got = lazyh5.open_dataset(path)["x"][idx].values
    np.testing.assert_array_equal(got, data[idx])


def test_random_rows_read_a_few_hdf5_chunks_not_whole_dask_chunks(images, reference):
    with lazyh5.set_options(memory_budget="512MiB"):
        ds = lazyh5.open_dataset(images)
    hdf5_chunk = 341 * 32 * 32 * 3
    assert ds["image"].chunks[0][0] == 8 * 341  # dask chunks span several HDF5 chunks
    idx = np.sort(np.random.default_rng(3).choice(20_000, 10, replace=False))

    def bytes_read() -> tuple[int, np.ndarray]:
        start = _rchar()
        values = ds["image"].isel(sample=idx).values
        return _rchar() - start, values

    fused, values = bytes_read()
    np.testing.assert_array_equal(values, reference["image"][idx])
    assert fused <= len(idx) * hdf5_chunk * 1.5
    # dask's own optimisation alone reads each dask chunk whole: the pass is what differs.
    with dask.config.set(array_optimize=dask.array.optimization.optimize):
        whole, values = bytes_read()
    np.testing.assert_array_equal(values, reference["image"][idx])
    assert whole > 3 * fused


_PEAK = """
import json, sys
import dask
dask.config.set(num_workers=int(sys.argv[3]), scheduler="threads")
import lazyh5

def rss():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) * 1024

ds = lazyh5.open_dataset(sys.argv[1])
base = rss()
if sys.argv[2] == "mean":
    float((ds["image"] / 255).mean())
else:
    out = ds.assign(image=((ds["image"] / 255 - 0.5) / 0.25).astype("f2"))
    lazyh5.to_hdf5(sys.argv[1] + ".f2.h5", out, progress=False)
# VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's size at fork.
with open("/proc/self/status") as f:
    peak = int(f.read().split("VmHWM:")[1].split()[0]) * 1024
print(json.dumps({"peak": peak - base, "rows": ds["image"].chunks[0][0]}))
"""


@pytest.fixture(scope="module")
def big_images(tmp_path_factory) -> Path:
    # 200 MB of uint8 images: before the budget, one default dask chunk held 43,648 rows
    # (128 MiB stored, 1 GiB as float64), and this file's mean peaked over 1 GiB.
    path = tmp_path_factory.mktemp("mem") / "big.h5"
    n = 65_000
    ds = lazyh5.create(path, {"image": ((n, 32, 32, 3), "u1")})
    block = np.random.default_rng(0).integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)
    for a in range(0, n, 5000):
        ds["image"].h5[a : a + 5000] = block[: n - a]
    ds.close()
    return path


@pytest.mark.slow
@pytest.mark.parametrize("call", ["mean", "to_hdf5"])
def test_peak_memory_stays_within_a_few_budgets_at_8_threads(big_images, call):
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(big_images), call, "8"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    budget = lazyh5.options.memory_budget()
    assert got["rows"] * 32 * 32 * 3 * 8 <= budget // 8  # a chunk as float64: 1/8 budget
    assert got["peak"] < 4 * budget, f"peak {got['peak'] / MiB:.0f} MiB"


@pytest.mark.parametrize("transform", ["scale", "float32", "normalise"])
def test_a_loader_over_a_transformed_dataset_computes_each_chunk_once(images, transform):
    # Default dask chunks are no bigger than a default loader block, so BatchLoader has
    # no reason to warn that blocks recompute chunks.
    ds = lazyh5.open_dataset(images)
    image = {
        "scale": ds["image"] / 255,
        "float32": (ds["image"] / 255).astype("f4"),
        "normalise": (ds["image"] - ds["image"].mean()) / 64.0,
    }[transform]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = lazyh5.BatchLoader(
            ds.assign(image=image), "image", "label", batch_size=64, shuffle=False
        )
        first = next(iter(loader))
    np.testing.assert_allclose(first[0][0], image[0].values)


def test_set_options_rejects_bad_sizes():
    with pytest.raises(lazyh5.Lazyh5Error, match="memory_budget must be a size"):
        lazyh5.set_options(memory_budget="lots")
    with pytest.raises(ValueError, match="positive"):
        lazyh5.set_options(memory_budget=0)


def test_xarray_engine_reads_by_index_too(images, reference):
    # xr.open_dataset(engine="lazyh5", chunks={}) graphs go through the same pass.
    ds = xr.open_dataset(images, engine="lazyh5", chunks={})
    idx = np.array([19_000, 5, 6])
    np.testing.assert_array_equal(ds["image"][idx].values, reference["image"][idx])
