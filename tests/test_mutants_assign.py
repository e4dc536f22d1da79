"""What an assignment that fails midway leaves on the dataset: its done marks.

An assignment of several blocks records, on the dataset, its blocks and which of them
are written; a process killed midway (tests/test_crash_safety.py) or a write that fails
leaves them. Here the write of one block fails (the file system refusing it), in each
of the three ways blocks are written: numpy values in slabs, lazy values block by
block, and lazy values that read the target, copied from their staging file.
"""

from __future__ import annotations

import json
import threading

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.write import assign as assign_module
from lazyh5.write.assign import DONE_MARKS, DONE_MARKS_LAYOUT

SHAPE, CHUNKS = (12, 10), (4, 3)
A, B = "sample", "v_dim_1"
BASE = np.arange(120, dtype="i4").reshape(SHAPE)


def _file(tmp_path):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=BASE, chunks=CHUNKS)
    return path


@pytest.fixture
def failing_write(monkeypatch):
    """Make the ``n``-th block written to the file fail, as a full disk would."""

    def fail_at(n: int) -> None:
        real = assign_module._Writer.write
        calls = []

        def write(self, region, block):
            calls.append(region)
            if len(calls) == n:
                raise OSError("no space left on device")
            real(self, region, block)

        monkeypatch.setattr(assign_module._Writer, "write", write)

    return fail_at


def _left(path):
    with h5py.File(path) as f:
        attrs = f["v"].attrs
        layout = json.loads(attrs[DONE_MARKS_LAYOUT]) if DONE_MARKS_LAYOUT in attrs else None
        done = attrs.get(DONE_MARKS)
        return layout, done, f["v"][()]


def _fail_assigning(path, budget, assign):
    """``assign(ds)`` on the file opened for writing, under ``budget``, failing as the
    full disk makes it (see ``failing_write``); what it left: :func:`_left`."""
    with lazyh5.set_options(memory_budget=budget):
        ds = lazyh5.open_dataset(path, mode="r+")
        with pytest.raises(OSError, match="no space"):
            assign(ds)
        ds.close()
    return _left(path)


def test_numpy_values_in_two_slabs_leave_the_mark_of_the_first(tmp_path, failing_write):
    path = _file(tmp_path)
    failing_write(2)

    def assign(ds):
        ds["v"].h5[3:5] = -np.ones((2, 10), "i4")

    layout, done, stored = _fail_assigning(path, "48B", assign)  # one row per slab
    assert layout == {"selection": [[3, 5, 1], [0, 10, 1]], "blocks": [[1, 1], [10]], "order": "C"}
    assert done.tolist() == [1, 0]
    expected = BASE.copy()
    expected[3] = -1
    np.testing.assert_array_equal(stored, expected)


@pytest.mark.parametrize(
    ("dtype", "key", "budget", "blocks", "done"),
    [
        # 640 B shared by 8 threads: 80 B, two rows of 10 int32 per slab
        ("i4", (), "640B", [[2] * 6, [10]], [1, 1, 1, 0, 0, 0]),
        # a column of bytes: 6 B, six 1-byte values per slab
        ("u1", (slice(None), 3), "48B", [[6, 6]], [1, 0]),
    ],
    ids=["rows", "bytes"],
)
def test_numpy_slabs_follow_the_memory_budget(
    tmp_path, failing_write, dtype, key, budget, blocks, done
):
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=BASE.astype(dtype), chunks=CHUNKS)
    failing_write(sum(done) + 1)

    def assign(ds):
        view = ds["v"][key] if key else ds["v"]
        view.h5[...] = np.zeros(view.shape, dtype)

    layout, marks, stored = _fail_assigning(path, budget, assign)
    assert layout["blocks"] == blocks and marks.tolist() == done
    expected = BASE.astype(dtype)
    rows = slice(0, sum(done) * blocks[0][0])
    expected[(rows, *key[1:])] = 0
    np.testing.assert_array_equal(stored, expected)


def test_numpy_values_in_one_slab_leave_no_marks(tmp_path, failing_write):
    path = _file(tmp_path)
    failing_write(1)

    def assign(ds):
        ds["v"].h5[3:5] = -1

    layout, done, stored = _fail_assigning(path, "1MiB", assign)
    assert layout is None and done is None  # one block: all or nothing to say
    np.testing.assert_array_equal(stored, BASE)


def test_numpy_slabs_of_a_view_with_a_dropped_axis(tmp_path, failing_write):
    path = _file(tmp_path)
    failing_write(3)

    def assign(ds):
        ds["v"].isel(v_dim_1=4).h5[::-3] = np.array([-1, -2, -3, -4], "i4")

    layout, done, stored = _fail_assigning(path, "48B", assign)
    # rows 11, 8, 5, 2 of column 4, one per slab: the first two are done
    assert layout == {"selection": [[11, -1, -3], 4], "blocks": [[1, 1, 1, 1]], "order": "C"}
    assert done.tolist() == [1, 1, 0, 0]
    expected = BASE.copy()
    expected[[11, 8], 4] = [-1, -2]
    np.testing.assert_array_equal(stored, expected)


def test_a_staged_copy_leaves_the_marks_of_the_blocks_copied(tmp_path, failing_write):
    path = _file(tmp_path)
    failing_write(4)

    def assign(ds):
        ds["v"].h5[...] = ds["v"][::-1] * 2  # reads rows other blocks write: staged first

    layout, done, stored = _fail_assigning(path, "48B", assign)
    assert layout == {
        "selection": [[0, 12, 1], [0, 10, 1]],
        "blocks": [[4, 4, 4], [3, 3, 3, 1]],
        "order": "C",
    }
    assert done.dtype == np.uint8 and done.tolist() == [1, 1, 1] + [0] * 9  # C order
    expected = BASE.copy()
    expected[:4, :9] = BASE[::-1][:4, :9] * 2
    np.testing.assert_array_equal(stored, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]  # staging file gone


def test_a_finished_staged_copy_leaves_no_marks(tmp_path):
    path = _file(tmp_path)
    with lazyh5.set_options(memory_budget="48B"):
        ds = lazyh5.open_dataset(path, mode="r+")
        ds["v"].h5[...] = ds["v"].isel(sample=slice(None, None, -1)) + 1
        ds.close()
    layout, done, stored = _left(path)
    assert layout is None and done is None
    np.testing.assert_array_equal(stored, BASE[::-1] + 1)


def test_staged_int64_values_keep_every_digit(tmp_path):
    path = tmp_path / "big.h5"
    big = 2**60 + np.arange(24, dtype="i8").reshape(12, 2)  # not exact as float64
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=big, chunks=(4, 2))
    with lazyh5.set_options(memory_budget="64B"):
        ds = lazyh5.open_dataset(path, mode="r+")
        ds["v"].h5[...] = ds["v"][::-1] + 1  # reads what it writes: staged
        ds.close()
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["v"][()], big[::-1] + 1)


class _Terminal:
    """A stderr that says it is a terminal, so progress bars are drawn (into ``text``)."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("progress", [True, False])
def test_progress_shows_the_blocks_of_staging_and_copying(tmp_path, monkeypatch, progress):
    path = _file(tmp_path)
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with lazyh5.set_options(memory_budget="48B"):
        ds = lazyh5.open_dataset(path, mode="r+")
        ds["v"].h5.assign(..., ds["v"][::-1] * 2, progress=progress)
        ds.close()
    monkeypatch.undo()
    np.testing.assert_array_equal(_left(path)[2], BASE[::-1] * 2)
    if not progress:
        assert terminal.text == ""
        return
    # a bar of 12 blocks computed into the staging file, then one of 12 copied
    lines = [line.strip() for line in terminal.text.split("\r") if line.strip()]
    assert lines[0] == "v ← w.h5 (staging):   0%|          | 0/12 [00:00<?, ?block/s]"
    assert "v ← w.h5:   0%|          | 0/12 [00:00<?, ?block/s]" in lines[1:]


def _staging_seen(tmp_path, path, target_key, value_of) -> tuple[bool, np.ndarray]:
    """Write ``value_of(v)`` through ``v.isel(target_key)``; whether a staging file
    existed while the value's blocks were computed, and the values stored."""
    seen = []

    def look(b):
        if b.size:  # not dask's call on an empty block to learn the output type
            seen.append(any(p.name.startswith(".lazyh5-stage-") for p in tmp_path.iterdir()))
        return b

    with lazyh5.set_options(memory_budget="48B"), dask.config.set(scheduler="sync"):
        # dask blocks of 2 rows and 1 column: each block reads exactly its part of a view
        ds = lazyh5.open_dataset(path, mode="r+", chunks={A: 2, B: 1})
        value = value_of(ds["v"])
        value = value.copy(data=value.data.map_blocks(look, meta=np.empty((0,) * value.ndim, "i4")))
        ds["v"].isel(target_key).h5[...] = value
        ds.close()
    assert seen and len(set(seen)) == 1
    return seen[0], _left(path)[2]


IN_PLACE = {
    # blockwise through a view with a dropped axis, or starting mid-chunk: in place
    "column": ({B: 4}, lambda v: v.isel({B: 4}) * 2, False),
    "offset-rows": ({A: slice(4, None)}, lambda v: v[4:] * 2, False),
    "offset-block": ({A: slice(6, None), B: slice(2, 8)}, lambda v: v[6:, 2:8] - 1, False),
    # reads what other blocks write (or may write): staged
    "stepped-target": ({A: slice(None, None, 2)}, lambda v: v[:6] + 1, True),
    "shifted-rows": ({A: slice(4, None)}, lambda v: v[:8] + 1, True),
    "next-column": ({B: 4}, lambda v: v.isel({B: 5}) + 1, True),
    "previous-column": ({B: 4}, lambda v: v.isel({B: 3}) + 1, True),
    "rows-before-its-block": (
        {A: slice(4, None)},
        lambda v: xr.concat([v[4:8], v[2:6]], A) + 1,
        True,
    ),
    "rows-before-the-target": (
        {A: slice(2, None)},
        lambda v: xr.concat([v[2:8], v[0:2], v[4:6]], A) + 1,
        True,
    ),
}


@pytest.mark.parametrize("case", IN_PLACE)
def test_values_are_written_in_place_only_when_no_block_reads_what_another_writes(tmp_path, case):
    target_key, value_of, staged = IN_PLACE[case]
    path = _file(tmp_path)
    v = xr.DataArray(BASE, dims=(A, B))  # numpy on the same views
    positions = xr.DataArray(np.arange(120).reshape(SHAPE), dims=(A, B))
    expected = BASE.copy()
    expected.flat[positions.isel(target_key).values] = value_of(v).values
    seen, stored = _staging_seen(tmp_path, path, target_key, value_of)
    np.testing.assert_array_equal(stored, expected)
    assert seen == staged


def test_where_blocks_are_computed_with_and_without_a_cluster(tmp_path):
    """A value that reads a file opened ``r+`` before a dask.distributed Client existed
    is computed in this process (its lock works here only); other values go to the
    cluster; without a Client the scheduler the user chose is kept."""
    distributed = pytest.importorskip("distributed")
    path = _file(tmp_path)
    threads = []

    def where(b):
        if b.size:
            threads.append(threading.current_thread().name)
        return b

    ds = lazyh5.open_dataset(path, mode="r+")  # before the Client: a local lock
    (tmp_path / "other").mkdir()
    other = lazyh5.open_dataset(_file(tmp_path / "other"))
    meta = np.empty((0, 0), "i4")
    with dask.config.set(scheduler="sync"):
        ds["v"].h5[...] = ds["v"].copy(data=ds["v"].data.map_blocks(where, meta=meta)) + 1
    assert threads and set(threads) == {threading.main_thread().name}
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        with distributed.get_task_stream(client) as stream:
            ds["v"].h5[...] = ds["v"] * 2  # reads the r+ file: computed here
        assert stream.data == []
        with distributed.get_task_stream(client) as stream:
            ds["v"].h5[...] = xr.DataArray(da.from_array(-BASE, chunks=(4, 5)), dims=(A, B))
        assert stream.data  # reads no file: computed on the cluster
        with distributed.get_task_stream(client) as stream:
            ds["v"].h5[...] = other["v"] * 3  # reads a file opened read-only: on the cluster
        assert stream.data
    ds.close()
    other.close()
    np.testing.assert_array_equal(_left(path)[2], BASE * 3)
