"""What an assignment that fails midway leaves on the dataset: its done marks.

An assignment of several blocks records, on the dataset, its blocks and which of them
are written; a process killed midway (tests/test_crash_safety.py) or a write that fails
leaves them. Here the write of one block fails (the file system refusing it), in each
of the three ways blocks are written: numpy values in slabs, lazy values block by
block, and lazy values that read the target, copied from their staging file.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5.write import assign as assign_module
from lazyh5.write.assign import DONE_MARKS, DONE_MARKS_LAYOUT

SHAPE, CHUNKS = (12, 10), (4, 3)
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


def test_numpy_values_in_two_slabs_leave_the_mark_of_the_first(tmp_path, failing_write):
    path = _file(tmp_path)
    failing_write(2)
    with lazyh5.set_options(memory_budget="48B"):  # one row per slab
        ds = lazyh5.open_dataset(path, mode="r+")
        with pytest.raises(OSError, match="no space"):
            ds["v"].h5[3:5] = -np.ones((2, 10), "i4")
        ds.close()
    layout, done, stored = _left(path)
    assert layout == {"selection": [[3, 5, 1], [0, 10, 1]], "blocks": [[1, 1], [10]], "order": "C"}
    assert done.tolist() == [1, 0]
    expected = BASE.copy()
    expected[3] = -1
    np.testing.assert_array_equal(stored, expected)


def test_numpy_values_in_one_slab_leave_no_marks(tmp_path, failing_write):
    path = _file(tmp_path)
    failing_write(1)
    with lazyh5.set_options(memory_budget="1MiB"):
        ds = lazyh5.open_dataset(path, mode="r+")
        with pytest.raises(OSError, match="no space"):
            ds["v"].h5[3:5] = -1
        ds.close()
    layout, done, stored = _left(path)
    assert layout is None and done is None  # one block: all or nothing to say
    np.testing.assert_array_equal(stored, BASE)


def test_numpy_slabs_of_a_view_with_a_dropped_axis(tmp_path, failing_write):
    path = _file(tmp_path)
    failing_write(3)
    with lazyh5.set_options(memory_budget="48B"):
        ds = lazyh5.open_dataset(path, mode="r+")
        with pytest.raises(OSError, match="no space"):
            ds["v"].isel(v_dim_1=4).h5[::-3] = np.array([-1, -2, -3, -4], "i4")
        ds.close()
    layout, done, stored = _left(path)
    # rows 11, 8, 5, 2 of column 4, one per slab: the first two are done
    assert layout == {"selection": [[11, -1, -3], 4], "blocks": [[1, 1, 1, 1]], "order": "C"}
    assert done.tolist() == [1, 1, 0, 0]
    expected = BASE.copy()
    expected[[11, 8], 4] = [-1, -2]
    np.testing.assert_array_equal(stored, expected)


def test_a_staged_copy_leaves_the_marks_of_the_blocks_copied(tmp_path, failing_write):
    path = _file(tmp_path)
    failing_write(4)
    with lazyh5.set_options(memory_budget="48B"):
        ds = lazyh5.open_dataset(path, mode="r+")
        flipped = ds["v"][::-1] * 2  # reads rows other blocks write: staged first
        with pytest.raises(OSError, match="no space"):
            ds["v"].h5[...] = flipped
        ds.close()
    layout, done, stored = _left(path)
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
