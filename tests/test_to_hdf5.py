"""lazyh5.to_hdf5: streamed, labeled, atomic and resumable writes of lazy results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.write.to_hdf5 import partial_path


@pytest.fixture
def raw(tmp_path):
    path = tmp_path / "raw.h5"
    ds = lazyh5.create(
        path,
        {"image": ((700, 4, 4, 3), "u1"), "label": ((700,), "i8")},
        dims={"image": ("sample", "y", "x", "channel")},
        hdf5_chunks={"image": (64, 4, 4, 3), "label": (64,)},
    )
    rng = np.random.default_rng(0)
    ds["image"].h5[:] = rng.integers(0, 256, (700, 4, 4, 3), dtype="u1")
    ds["label"].h5[:] = np.arange(700) % 10
    return lazyh5.open_dataset(path)


def test_normalise_roundtrip_labeled(raw, tmp_path):
    x = raw["image"].astype("f4") / 255.0
    out_ds = xr.Dataset(
        {"image": (x - x.mean()) / x.std(), "label": raw["label"]}, attrs={"title": "norm"}
    )
    out_ds["image"].attrs["units"] = "z-score"
    out = tmp_path / "norm.h5"
    with lazyh5.set_options(memory_budget="16KiB"):
        lazyh5.to_hdf5(out, out_ds, progress=False)
    ref = raw["image"].values.astype("f4") / 255.0
    ref = (ref - ref.mean()) / ref.std()
    back = lazyh5.open_dataset(out)
    assert back["image"].dims == ("sample", "y", "x", "channel")
    assert back.attrs["title"] == "norm" and back["image"].attrs["units"] == "z-score"
    np.testing.assert_allclose(back["image"].values, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(back["label"].values, np.arange(700) % 10)
    assert back["label"].encoding["chunksizes"] == (64,)  # source HDF5 chunks kept
    nc = xr.open_dataset(out, engine="h5netcdf")
    assert nc["image"].dims == ("sample", "y", "x", "channel")
    assert "sample" not in nc.coords  # positions 0…n-1 are a plain dimension
    assert not os.path.exists(partial_path(out))
    # no _FillValue is added, so the result can be written through as is
    back.close()
    nc.close()
    rw = lazyh5.open_dataset(out, mode="r+")
    rw["image"].h5[0] = 0.0
    assert (rw["image"][0].values == 0).all()


def test_coords_views_groups_and_dataarrays(raw, tmp_path):
    view = raw.isel(sample=slice(100, 300, 2))
    view = view.assign_coords(
        weight=("sample", np.linspace(0, 1, view.sizes["sample"])),
        channel=["r", "g", "b"],
    )
    out = tmp_path / "view.h5"
    lazyh5.to_hdf5(out, view, group="train", progress=False, compression="gzip")
    back = lazyh5.open_dataset(out, group="train")
    # The view had no coordinate on `sample`, so the copy has none either.
    assert "sample" not in back.coords and back.sizes["sample"] == 100
    np.testing.assert_array_equal(back["image"].values, view["image"].values)
    assert list(back["channel"].values) == ["r", "g", "b"]
    nc = xr.open_dataset(out, engine="h5netcdf", group="train")
    np.testing.assert_allclose(nc["weight"].values, view["weight"].values)
    assert "weight" in nc.coords
    with h5py.File(out) as f:
        assert f["train/image"].compression == "gzip"

    arr = (raw["label"] * 2).rename(None)
    lazyh5.to_hdf5(tmp_path / "arr.h5", arr, progress=False)
    np.testing.assert_array_equal(
        lazyh5.open_dataset(tmp_path / "arr.h5")["data"].values, raw["label"].values * 2
    )


def test_modes(raw, tmp_path):
    out = tmp_path / "o.h5"
    lazyh5.to_hdf5(out, raw["label"], progress=False)
    with pytest.raises(FileExistsError, match=r"o\.h5"):
        lazyh5.to_hdf5(out, raw["label"], progress=False)
    lazyh5.to_hdf5(out, raw["label"] + 1, mode="w", progress=False)
    assert lazyh5.open_dataset(out)["label"].values[0] == 1
    with pytest.raises(ValueError, match="mode"):
        lazyh5.to_hdf5(out, raw["label"], mode="a", progress=False)


def test_failure_leaves_no_finished_file(raw, tmp_path):
    def boom(block):
        if block[0, 0, 0, 0] >= 0 and boom.calls > 3:
            raise RuntimeError("boom")
        boom.calls += 1
        return block

    boom.calls = 0
    x = raw["image"].copy(data=raw["image"].data.rechunk((64, 4, 4, 3)).map_blocks(boom))
    out = tmp_path / "fail.h5"
    with dask.config.set(scheduler="sync"), pytest.raises(RuntimeError, match="boom"):
        lazyh5.to_hdf5(out, x, progress=False)
    assert not out.exists() and os.path.exists(partial_path(out))
    # resume computes the rest and gives what an uninterrupted run gives
    lazyh5.to_hdf5(out, raw["image"], progress=False, resume=True)
    np.testing.assert_array_equal(lazyh5.open_dataset(out)["image"].values, raw["image"].values)


_CHILD = """
import itertools, threading, numpy as np, xarray as xr, dask, dask.array as da, lazyh5
calls = itertools.count(1)
def stall(b):
    # after 12 blocks (some of them written) the writer waits to be killed
    if next(calls) > 12:
        threading.Event().wait()
    return b
x = da.arange(64 * 40 * 16, dtype="f4", chunks=64 * 40 * 16).reshape(64 * 40, 16)
x = x.rechunk((64, 16)).map_blocks(stall) * 2
with dask.config.set(scheduler="sync"):
    lazyh5.to_hdf5({path!r}, xr.DataArray(x, dims=("sample", "f"), name="v"),
                   hdf5_chunks=(64, 16), progress=False)
"""


def _expected():
    x = da.arange(64 * 40 * 16, dtype="f4").reshape(64 * 40, 16).rechunk((64, 16)) * 2
    return xr.DataArray(x, dims=("sample", "f"), name="v")


def test_sigkill_then_resume(tmp_path):
    out = tmp_path / "killed.h5"
    tmp = partial_path(out)
    code = textwrap.dedent(_CHILD).format(path=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code])
    done = 0
    try:
        # Each flush puts the marks of the blocks written before it on disk. Wait for
        # 3 (dask's order writes 8 of the 12 blocks the writer computes first), however long
        # the writer takes to get there.
        deadline = time.monotonic() + 120
        while done < 3:
            assert proc.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline, f"only {done} blocks marked done"
            try:  # the writer holds the file: peek without HDF5's lock
                with h5py.File(tmp, "r", locking=False) as f:
                    done = int(f["_lazyh5_done/0"][()].sum())
            except (OSError, KeyError):
                pass  # not laid out yet
            time.sleep(0.01)  # polling interval
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 3 <= done < 12
    assert not out.exists(), "an interrupted run must not leave a finished-looking file"
    with h5py.File(tmp, "r") as f:
        marked = int(f["_lazyh5_done/0"][()].sum())

    calls = []

    def count(b):
        if b.shape == (64, 16):  # not dask's calls on tiny arrays to learn the result type
            calls.append(1)
        return b

    x = _expected()
    resumed = x.copy(data=x.data.map_blocks(count))
    lazyh5.to_hdf5(out, resumed, hdf5_chunks=(64, 16), progress=False, resume=True)
    assert len(calls) == 40 - marked  # only the missing blocks were computed
    assert not os.path.exists(tmp)

    ref = tmp_path / "ref.h5"
    lazyh5.to_hdf5(ref, x, hdf5_chunks=(64, 16), progress=False)
    a, b = lazyh5.open_dataset(out), lazyh5.open_dataset(ref)
    xr.testing.assert_identical(a.load(), b.load())


def test_resume_refuses_other_data(raw, tmp_path):
    out = tmp_path / "r.h5"
    with h5py.File(partial_path(out), "w") as f:
        f.create_group("_lazyh5_done").attrs["fingerprint"] = "something else"
    with pytest.raises(ValueError, match="different data"):
        lazyh5.to_hdf5(out, raw["label"], progress=False, resume=True)
    # without resume a stale partial file is simply replaced
    lazyh5.to_hdf5(out, raw["label"], progress=False)
    assert out.exists()


def test_resume_after_a_kill_during_layout_starts_over(raw, tmp_path):
    out = tmp_path / "early.h5"
    with h5py.File(partial_path(out), "w") as f:
        f.create_group("_lazyh5_done")  # no fingerprint yet: layout was not finished
    lazyh5.to_hdf5(out, raw["label"], progress=False, resume=True)
    np.testing.assert_array_equal(lazyh5.open_dataset(out)["label"].values, raw["label"].values)


def test_shuffle_filter_for_all_or_some_variables_and_kept_by_rechunk(tmp_path):
    from lazyh5.cli.main import main

    src = tmp_path / "src.h5"
    rng = np.random.default_rng(0)
    with h5py.File(src, "w") as f:
        f.create_dataset(
            "a", data=rng.random((500, 6)), chunks=(50, 6), compression="gzip", shuffle=True
        )
        f.create_dataset("b", data=np.arange(500), chunks=(100,), compression="gzip")
    ds = lazyh5.open_dataset(src)
    lazyh5.to_hdf5(tmp_path / "all.h5", ds, compression="gzip", shuffle=True, progress=False)
    lazyh5.to_hdf5(
        tmp_path / "some.h5", ds, compression="gzip", shuffle={"a": True}, progress=False
    )
    assert main(["rechunk", str(src), str(tmp_path / "re.h5"), "--no-progress"]) == 0
    with h5py.File(tmp_path / "all.h5") as f:
        assert f["a"].shuffle and f["b"].shuffle
    for name in ("some.h5", "re.h5"):
        with h5py.File(tmp_path / name) as f, h5py.File(src) as g:
            assert f["a"].shuffle and not f["b"].shuffle, name
            assert f["a"].compression == "gzip", name
            np.testing.assert_array_equal(f["a"][:], g["a"][:])
            np.testing.assert_array_equal(f["b"][:], g["b"][:])


def test_resume_refuses_other_filters(raw, tmp_path):
    """A partial file started with one compression is not finished with another."""
    from lazyh5.write import to_hdf5 as impl

    out = tmp_path / "f.h5"
    ds = raw["label"].to_dataset()
    variables = impl._prepare(ds)
    layouts = {
        n: impl._layout(str(out), n, v, ds, compression="gzip") for n, v in variables.items()
    }
    with h5py.File(partial_path(out), "w") as f:  # as left by a killed gzip run
        f.create_group("_lazyh5_done").attrs["fingerprint"] = impl._fingerprint(layouts)
    with pytest.raises(ValueError, match="filters differ"):
        lazyh5.to_hdf5(out, ds, compression="lzf", progress=False, resume=True)


def test_old_argument_order_and_chunk_values_are_refused(raw, tmp_path):
    out = tmp_path / "o.h5"
    with pytest.raises(TypeError, match="path comes first"):
        lazyh5.to_hdf5(raw["label"], out, progress=False)
    with pytest.raises(ValueError, match="hdf5_chunks"):
        lazyh5.to_hdf5(out, raw["label"], hdf5_chunks=True, progress=False)
    with pytest.raises(ValueError, match="hdf5_chunks"):
        lazyh5.to_hdf5(out, raw["label"], hdf5_chunks=False, progress=False)
    assert not out.exists() and not os.path.exists(partial_path(out))


def test_hdf5_chunks_none_is_contiguous(raw, tmp_path):
    out = tmp_path / "c.h5"
    lazyh5.to_hdf5(out, raw["label"], hdf5_chunks=None, progress=False)
    with h5py.File(out) as f:
        assert f["label"].chunks is None


def test_blocks_in_flight_stay_bounded(tmp_path):
    """Each block is written and dropped before many more are computed: the blocks alive
    when a new one is made are counted through weak references."""
    made: list[weakref.ref] = []
    peak = [0]
    lock = threading.Lock()

    def make(block_info=None):
        block = np.full((64, 16), block_info[None]["chunk-location"][0], "f4")
        with lock:
            peak[0] = max(peak[0], sum(ref() is not None for ref in made))
            made.append(weakref.ref(block))
        return block

    x = da.map_blocks(make, chunks=((64,) * 40, (16,)), dtype="f4")
    out = tmp_path / "bounded.h5"
    with dask.config.set(scheduler="threads", num_workers=2):
        lazyh5.to_hdf5(
            out,
            xr.DataArray(x, dims=("sample", "f"), name="v"),
            hdf5_chunks=(64, 16),
            progress=False,
        )
    assert len(made) == 40  # each block computed once
    assert peak[0] <= 4, peak[0]  # the 2 threads' blocks, each maybe one being written
    with h5py.File(out) as f:
        np.testing.assert_array_equal(f["v"][:, 0], np.repeat(np.arange(40, dtype="f4"), 64))


def _fails_after_3_blocks(var):
    """``var`` in 64-row dask blocks whose fourth computed block raises "boom"."""
    calls = 0

    def boom(block):
        nonlocal calls
        calls += 1
        if calls > 3:
            raise RuntimeError("boom")
        return block

    return var.copy(data=var.data.rechunk(64).map_blocks(boom))


def test_resume_refuses_other_hdf5_chunks(raw, tmp_path):
    """A partial file started with one HDF5 chunk shape is not finished with another."""

    x = _fails_after_3_blocks(raw["label"])
    out = tmp_path / "chunks.h5"
    with dask.config.set(scheduler="sync"), pytest.raises(RuntimeError, match="boom"):
        lazyh5.to_hdf5(out, x, hdf5_chunks=(64,), progress=False)
    assert os.path.exists(partial_path(out))
    with pytest.raises(ValueError, match="different data"):
        lazyh5.to_hdf5(out, raw["label"], hdf5_chunks=(128,), progress=False, resume=True)
    lazyh5.to_hdf5(out, raw["label"], hdf5_chunks=(64,), progress=False, resume=True)
    with h5py.File(out) as f:
        assert f["label"].chunks == (64,)
        np.testing.assert_array_equal(f["label"][()], np.arange(700) % 10)


def test_hdf5_chunks_and_compression_per_variable(raw, tmp_path):
    out = tmp_path / "per.h5"
    lazyh5.to_hdf5(
        out,
        raw,
        hdf5_chunks={"image": (100, 4, 4, 3), "label": None},
        compression={"image": "gzip", "label": None},
        compression_opts={"image": 7},
        progress=False,
    )
    with h5py.File(out) as f:
        assert f["image"].chunks == (100, 4, 4, 3) and f["label"].chunks is None
        assert f["image"].compression == "gzip" and f["image"].compression_opts == 7
        assert f["label"].compression is None
        np.testing.assert_array_equal(f["image"][()], raw["image"].values)
        np.testing.assert_array_equal(f["label"][()], raw["label"].values)
    lazyh5.to_hdf5(tmp_path / "all.h5", raw, compression="gzip", compression_opts=2, progress=False)
    with h5py.File(tmp_path / "all.h5") as f:
        assert f["image"].compression_opts == f["label"].compression_opts == 2


def test_mode_x_progress_and_resume_without_a_partial_file(raw, tmp_path, capsys):
    out = tmp_path / "x.h5"
    lazyh5.to_hdf5(out, raw["label"], mode="x", progress=True, resume=True)  # nothing to resume
    np.testing.assert_array_equal(lazyh5.open_dataset(out)["label"].values, raw["label"].values)
    assert capsys.readouterr().err == ""  # stderr is not a terminal here: no bar
    with pytest.raises(FileExistsError, match=r"x\.h5"):
        lazyh5.to_hdf5(out, raw["label"] + 1, mode="x", progress=False)
    assert lazyh5.open_dataset(out)["label"].values[1] == 1  # untouched


def test_resume_from_an_unreadable_partial_file_starts_over(raw, tmp_path):
    out = tmp_path / "u.h5"
    with open(partial_path(out), "wb") as fh:
        fh.write(b"not an HDF5 file")
    with pytest.warns(UserWarning, match="starting over"):
        lazyh5.to_hdf5(out, raw["label"], progress=False, resume=True)
    np.testing.assert_array_equal(lazyh5.open_dataset(out)["label"].values, raw["label"].values)
    assert not os.path.exists(partial_path(out))


@pytest.mark.parametrize(
    "other",
    [lambda x: x[:600], lambda x: x.astype("i4"), lambda x: x.rename("other")],
    ids=["shape", "dtype", "name"],
)
def test_resume_refuses_other_shape_dtype_or_variables(raw, tmp_path, other):
    label = raw["label"]
    out = tmp_path / "o.h5"
    failing = _fails_after_3_blocks(label)
    with dask.config.set(scheduler="sync"), pytest.raises(RuntimeError, match="boom"):
        lazyh5.to_hdf5(out, failing, hdf5_chunks=(64,), progress=False)
    before = Path(partial_path(out)).read_bytes()
    with pytest.raises(ValueError, match="different data"):
        lazyh5.to_hdf5(out, other(label), hdf5_chunks=(64,), progress=False, resume=True)
    assert Path(partial_path(out)).read_bytes() == before  # kept as it was
