"""to_hdf5's resume and layout, pinned down by the mutants that survived the other tests.

Each case leaves a real partial file (a run that fails partway, as a killed one would)
and resumes it: with the same computation the result equals an uninterrupted run and
only the missing blocks are computed; with anything that changes the file's layout
(chunks, shape, dtype, dims, filters, group) the resume is refused and the partial file
is left as it was.
"""

from __future__ import annotations

import hashlib
import os

import dask
import dask.array as da
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
    with pytest.raises(InvalidArgumentError, match="different data") as info:
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
