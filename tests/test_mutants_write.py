"""Write-through regions, pinned down by the mutants that survived the other tests.

A table of views (slices with steps, reversed, index arrays, integers, views of views)
times write keys, each written through ``.h5[...]`` on a real file and compared, value
by value, with numpy doing the same on the file's values (read back with h5py). The
views are lazily indexed (``chunks=None``) or dask arrays; the values are numpy or
lazy, and lazy values that read the target itself (in place) are checked too.
"""

from __future__ import annotations

import itertools
import json

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.errors import InvalidIndexError, UnmappableViewError
from lazyh5.write import assign

SHAPE, CHUNKS = (12, 10), (4, 3)
BASE = np.arange(120, dtype="i4").reshape(SHAPE)
A, B = "sample", "v_dim_1"  # the dims lazyh5 names a plain h5py dataset's axes


def _file(tmp_path, name="w.h5"):
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=BASE, chunks=CHUNKS)
        f.create_dataset("other", data=np.arange(5))
    return path


def _stored(path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f["v"][()]


def _outer(a: np.ndarray, key: tuple) -> np.ndarray:
    """``a[key]`` with each axis indexed on its own (xarray's outer indexing)."""
    key = key + (slice(None),) * (a.ndim - len(key))
    for axis in reversed(range(a.ndim)):
        a = a[(slice(None),) * axis + (key[axis],)]
    return a


# Views of v (dims A, B), as isel keys; a list is applied in turn (a view of a view).
VIEWS = {
    "all": [{}],
    "step2": [{A: slice(1, 11, 2)}],
    "reversed": [{A: slice(None, None, -1)}],
    "steps-both": [{A: slice(10, 0, -3), B: slice(2, 9, 2)}],
    "list-rows": [{A: [7, 2, 5, 11], B: slice(1, None)}],
    "int-col": [{B: 4, A: slice(2, 12, 3)}],
    "view-of-view": [{A: slice(1, None, 2)}, {A: slice(None, None, -1), B: slice(1, 8, 3)}],
    "offset-step": [{A: slice(3, None)}, {A: slice(1, None, 3)}],
}
# Write keys (on the view's first axis, or its last with `...`).
KEYS = {
    "everything": (Ellipsis,),
    "every-second": (slice(1, None, 2),),
    "last": (-1,),
    "list": ([2, 0],),
    "backwards": (slice(None, None, -2),),
    "last-axis-0": (Ellipsis, 0),
}


def _positions(view_keys: list[dict]) -> tuple[np.ndarray, tuple[str, ...]]:
    """File positions (flat indices) the view shows, and its dims."""
    pos, dims = np.arange(BASE.size).reshape(SHAPE), (A, B)
    for key in view_keys:
        pos = _outer(pos, tuple(key.get(d, slice(None)) for d in dims))
        dims = tuple(d for d in dims if not isinstance(key.get(d), int))
    return pos, dims


@pytest.mark.parametrize("chunks", [None, {}], ids=["lazy-indexed", "dask"])
@pytest.mark.parametrize("view", VIEWS)
def test_writes_through_views_land_where_numpy_puts_them(tmp_path, chunks, view):
    path = _file(tmp_path)
    for key_name, key in KEYS.items():
        ds = lazyh5.open_dataset(path, mode="r+", chunks=chunks)
        v = ds["v"]
        for k in VIEWS[view]:
            v = v.isel(k)
        pos, _ = _positions(VIEWS[view])
        if pos.ndim == 1 and len(key) == 2:
            key = (0,)  # `..., 0` on a 1-D view: its one axis
        sel = pos[key]
        value = -(1 + np.arange(np.size(sel), dtype="i4")).reshape(np.shape(sel))
        expected = _stored(path)
        expected.flat[sel] = value
        v.h5[key] = value
        ds.close()
        np.testing.assert_array_equal(_stored(path), expected, err_msg=f"{view} {key_name}")


@pytest.mark.parametrize("view", ["step2", "reversed", "steps-both", "view-of-view"])
def test_views_read_what_the_file_holds_at_their_positions(tmp_path, view):
    path = _file(tmp_path)
    pos, _ = _positions(VIEWS[view])
    for chunks in (None, {}):
        v = lazyh5.open_dataset(path, chunks=chunks)["v"]
        for k in VIEWS[view]:
            v = v.isel(k)
        np.testing.assert_array_equal(v.values, BASE.flat[pos], strict=True)


@pytest.mark.parametrize("budget", ["64B", "1MiB"])
@pytest.mark.parametrize(
    ("view", "value"),
    [
        ("all", lambda v: v[::-1] * 2),  # flipped: reads rows other blocks write
        ("all", lambda v: v.shift({A: 1}, fill_value=-5)),  # shifted
        ("all", lambda v: v - v.mean().astype("i4")),  # a reduction over all blocks
        ("all", lambda v: v * 3 + 1),  # blockwise: in place
        ("step2", lambda v: v * 3 + 1),  # blockwise, through a view with a step
        ("offset-step", lambda v: v[::-1] + 1),
        ("list-rows", lambda v: v * 2),
    ],
    ids=["flip", "shift", "reduction", "blockwise", "blockwise-step", "flip-step", "list"],
)
def test_lazy_values_that_read_the_target_give_numpy_results(tmp_path, view, value, budget):
    path = _file(tmp_path)
    with lazyh5.set_options(memory_budget=budget):
        ds = lazyh5.open_dataset(path, mode="r+")
        v = ds["v"]
        for k in VIEWS[view]:
            v = v.isel(k)
        pos, _ = _positions(VIEWS[view])
        new = value(v)
        expected = BASE.copy()
        expected.flat[pos] = value(v.compute()).values  # computed from the old values
        v.h5[...] = new
        ds.close()
    np.testing.assert_array_equal(_stored(path), expected)
    with h5py.File(path) as f:  # no marks left once done, other data untouched
        assert not [a for a in f["v"].attrs if a.startswith("_lazyh5_assign")]
        np.testing.assert_array_equal(f["other"][()], np.arange(5))


@pytest.mark.parametrize("budget", ["64B", "1MiB"])
def test_numpy_values_in_slabs_and_broadcast(tmp_path, budget):
    path = _file(tmp_path)
    with lazyh5.set_options(memory_budget=budget):
        ds = lazyh5.open_dataset(path, mode="r+")
        ds["v"].h5[2:11] = np.arange(10, dtype="i4") * -1  # one row, broadcast
        ds["v"].h5[0] = 7  # a Python int
        ds["v"].isel({B: 3}).h5[...] = np.int16(-9)
    expected = BASE.copy()
    expected[2:11] = np.arange(10) * -1
    expected[0] = 7
    expected[:, 3] = -9
    np.testing.assert_array_equal(_stored(path), expected)


def _assign_failing(path) -> None:
    """``v.h5[...] = -v`` in 12 blocks (4x3), one at a time; the 4th block fails."""
    calls = []

    def boom(b):
        if len(calls) == 3:
            raise RuntimeError("boom")
        calls.append(1)
        return b

    with lazyh5.set_options(memory_budget="48B"):
        ds = lazyh5.open_dataset(path, mode="r+")
        value = da.from_array(-BASE, chunks=CHUNKS).map_blocks(boom, meta=np.empty((0, 0), "i4"))
        with dask.config.set(scheduler="sync"), pytest.raises(RuntimeError, match="boom"):
            ds["v"].h5[...] = value
        ds.close()


def test_a_failed_lazy_assignment_leaves_marks_of_the_blocks_written(tmp_path):
    path = _file(tmp_path)
    _assign_failing(path)
    with h5py.File(path) as f:
        layout = json.loads(f["v"].attrs["_lazyh5_assign_blocks"])
        done = f["v"].attrs["_lazyh5_assign_done"]
        stored = f["v"][()]
    assert layout["blocks"] == [[4, 4, 4], [3, 3, 3, 1]] and layout["order"] == "C"
    assert layout["selection"] == [[0, 12, 1], [0, 10, 1]]
    assert done.dtype == np.uint8 and done.shape == (12,) and 2 <= done.sum() <= 3
    # every marked block holds its new values
    for flat in np.flatnonzero(done):
        i, j = np.unravel_index(flat, (3, 4))
        region = np.s_[4 * i : 4 * i + 4, 3 * j : 3 * j + 3]
        np.testing.assert_array_equal(stored[region], -BASE[region])
    assert ((stored == BASE) | (stored == -BASE)).all()


@pytest.mark.parametrize(
    ("key", "error", "match"),
    [
        ((slice(None), slice(None), 0), InvalidIndexError, "3 entries"),
        ((12,), InvalidIndexError, "out of bounds"),
        ((-13,), InvalidIndexError, "out of bounds"),
        (([0, 12],), InvalidIndexError, "out of bounds"),
        (([-13],), InvalidIndexError, "out of bounds"),
        ((np.ones(11, bool),), InvalidIndexError, "length 12"),
        ((np.zeros((2, 2), int),), InvalidIndexError, "1-D integer"),
        ((Ellipsis, Ellipsis), InvalidIndexError, "more than one"),
        (({"c": 0},), Exception, "no dimension"),
        ((1.5,), InvalidIndexError, "expected an int"),
    ],
)
def test_bad_write_keys_are_refused_before_any_write(tmp_path, key, error, match):
    path = _file(tmp_path)
    ds = lazyh5.open_dataset(path, mode="r+")
    with pytest.raises(error, match=match):
        ds["v"].h5[key[0] if isinstance(key[0], dict) else key] = 0
    ds.close()
    np.testing.assert_array_equal(_stored(path), BASE)


def test_boolean_masks_and_negative_indices(tmp_path):
    path = _file(tmp_path)
    ds = lazyh5.open_dataset(path, mode="r+")
    mask = np.arange(12) % 5 == 1
    ds["v"].h5[mask, -1] = -1
    ds["v"].h5[[-1, -12], 0] = -2
    ds["v"].h5[{B: -2}] = -3
    ds["v"].isel({A: slice(None, None, -1)}).h5[-1, 1] = -4  # the file's first row
    ds.close()
    expected = BASE.copy()
    expected[mask, -1] = -1
    expected[[-1, -12], 0] = -2
    expected[:, -2] = -3
    expected[0, 1] = -4
    np.testing.assert_array_equal(_stored(path), expected)


def test_views_that_repeat_positions_are_refused(tmp_path):
    path = _file(tmp_path)
    ds = lazyh5.open_dataset(path, mode="r+")
    with pytest.raises(UnmappableViewError, match="repeat"):
        ds["v"].isel({A: [1, 2, 1]}).h5[...] = 0
    ds.close()
    np.testing.assert_array_equal(_stored(path), BASE)


def test_every_key_combination_on_a_stepped_dask_view(tmp_path):
    """Composition of a view's step with every sub-slice, exhaustively (small)."""
    path = _file(tmp_path)
    ds = lazyh5.open_dataset(path, mode="r+", chunks={})
    view = ds["v"].isel({A: slice(11, None, -2), B: slice(1, None, 3)})  # rows 11,9,..,1
    pos, _ = _positions([{A: slice(11, None, -2), B: slice(1, None, 3)}])
    expected = BASE.copy()
    value = -1
    for start, step in itertools.product([None, 1, -2], [1, 2, -1]):
        key = (slice(start, None, step), slice(None, None, step))
        expected.flat[pos[key]] = value
        view.h5[key] = value
        value -= 1
    ds.close()
    np.testing.assert_array_equal(_stored(path), expected)


def test_a_lazily_indexed_view_of_the_target_as_value_is_staged(tmp_path):
    path = _file(tmp_path)
    with lazyh5.set_options(memory_budget="64B"):
        ds = lazyh5.open_dataset(path, mode="r+", chunks=None)
        flipped = ds["v"].isel({A: slice(None, None, -1)}).chunk({A: 4}) * 2
        ds["v"].h5[...] = flipped
        ds.close()
    np.testing.assert_array_equal(_stored(path), BASE[::-1] * 2)


def test_staging_happens_in_a_hidden_file_beside_the_target(tmp_path):
    path = _file(tmp_path)
    seen = []

    def look(b):
        if b.size:  # not dask's call on an empty block to learn the output type
            seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return b

    with lazyh5.set_options(memory_budget="64B"):
        ds = lazyh5.open_dataset(path, mode="r+")
        value = (
            ds["v"][::-1, :1].copy(
                data=ds["v"][::-1, :1].data.map_blocks(look, meta=np.empty((0, 0), "i4"))
            )
            + 1
        )
        ds["v"].isel({B: [0]}).h5[...] = value  # one column: staged (reads what it writes)
        ds.close()
    assert seen and all(
        len(names) == 2 and names[0].startswith(".lazyh5-stage-") and names[0].endswith(".h5")
        for names in seen
    ), seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.h5"]
    expected = BASE.copy()
    expected[:, 0] = BASE[::-1, 0] + 1
    np.testing.assert_array_equal(_stored(path), expected)


def test_marks_of_a_failed_assignment_through_an_index_array(tmp_path):
    path = _file(tmp_path)
    calls = []

    def boom(b):
        if len(calls) == 2:
            raise RuntimeError("boom")
        calls.append(1)
        return b

    with lazyh5.set_options(memory_budget="48B"):
        ds = lazyh5.open_dataset(path, mode="r+")
        target = ds["v"].isel({A: [9, 1, 5, 3, 7, 11, 0, 2]})
        value = da.from_array(-BASE[:8], chunks=(4, 3)).map_blocks(
            boom, meta=np.empty((0, 0), "i4")
        )
        with dask.config.set(scheduler="sync"), pytest.raises(RuntimeError, match="boom"):
            target.h5[...] = value
        ds.close()
    with h5py.File(path) as f:
        layout = json.loads(f["v"].attrs["_lazyh5_assign_blocks"])
    assert layout["selection"] == [{"positions": 8}, [0, 10, 1]]
    assert layout["blocks"] == [[4, 4], [3, 3, 3, 1]]  # 8 positions: whole blocks of 4


def test_repeated_positions_the_last_value_wins_as_in_numpy(tmp_path):
    path = _file(tmp_path)
    rng = np.random.default_rng(0)
    key = rng.permutation(np.repeat(np.arange(12), 25))  # 300 writes to 12 rows
    value = np.arange(300 * 10, dtype="i4").reshape(300, 10)
    ds = lazyh5.open_dataset(path, mode="r+")
    ds["v"].h5[key] = value
    ds.close()
    expected = BASE.copy()
    expected[key] = value  # numpy: the last write of each row wins
    np.testing.assert_array_equal(_stored(path), expected)


def test_lazy_blocks_through_an_offset_view_cover_whole_file_chunks(tmp_path):
    path = _file(tmp_path)
    calls = []

    def boom(b):
        if len(calls) == 1:
            raise RuntimeError("boom")
        calls.append(1)
        return b

    with lazyh5.set_options(memory_budget="48B"):
        ds = lazyh5.open_dataset(path, mode="r+")
        target = ds["v"].isel({A: slice(2, None), B: slice(None, None, 2)})
        value = da.zeros((10, 5), "i4", chunks=2).map_blocks(boom, meta=np.empty((0, 0), "i4"))
        with dask.config.set(scheduler="sync"), pytest.raises(RuntimeError, match="boom"):
            target.h5[...] = value
        ds.close()
    with h5py.File(path) as f:
        layout = json.loads(f["v"].attrs["_lazyh5_assign_blocks"])
    # rows 2-3 end the first 4-row chunk; every later block is whole chunks
    assert layout["blocks"] == [[2, 4, 4], [3, 2]]
    assert layout["selection"] == [[2, 12, 1], [0, 10, 2]]


def test_values_are_checked_before_anything_is_written(tmp_path):
    path = _file(tmp_path)
    ds = lazyh5.open_dataset(path, mode="r+")
    v = ds["v"]
    cases = [
        (
            ds,
            TypeError,
            r"cannot write to 'v' \(/v\) in '.*w\.h5': expected an array, got a Dataset",
        ),
        (
            xr.DataArray(np.zeros((12, 10, 2), "i4"), dims=(A, B, "extra")),
            lazyh5.errors.DimensionError,
            r"the value has dimension\(s\) \['extra'\] that the selection",
        ),
        (2**31, ValueError, r"cannot write 2147483648 to 'v'.*out of range for int32"),
        (-(2**31) - 1, ValueError, r"out of range for int32 \[-2147483648, 2147483647\]"),
        (1.5, TypeError, r"float64 values to 'v'.*convert explicitly with .astype\('int32'\)"),
        (np.zeros((3, 3), "i4"), ValueError, r"shape \(3, 3\) to 'v'.*expected a shape that"),
    ]
    for value, error, match in cases:
        with pytest.raises(error, match=match):
            v.h5[...] = value
    v.h5[0] = 2**31 - 1  # the limits themselves fit
    v.h5[1] = -(2**31)
    v.h5[2] = np.int64(5)
    # a value without one of the selection's dims is broadcast along it
    v.h5[3:5] = xr.DataArray(np.array([-7, -8], "i4"), dims=A)
    v.h5[5:7] = xr.DataArray(-np.arange(10, dtype="i4"), dims=B)
    # given in another dimension order: matched by name
    v.h5[7:9] = xr.DataArray(np.full((10, 2), -3, "i4"), dims=(B, A))
    ds.close()
    expected = BASE.copy()
    expected[0], expected[1], expected[2] = 2**31 - 1, -(2**31), 5
    expected[3:5] = np.array([[-7], [-8]])
    expected[5:7] = -np.arange(10)
    expected[7:9] = -3
    np.testing.assert_array_equal(_stored(path), expected)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_wider_integers_are_cast_as_numpy_casts_them(tmp_path, lazy):
    """int64 values past int32's range, written to an int32 dataset, wrap as they do when
    numpy (or xarray in memory) assigns them; HDF5's own conversion would clamp them."""
    path = _file(tmp_path)
    values = np.arange(12, dtype="i8")[:, None] * (2**31 - 3) + np.arange(10)
    want = values.astype("i4")
    assert not np.array_equal(want, np.clip(values, -(2**31), 2**31 - 1))
    ds = lazyh5.open_dataset(path, mode="r+")
    ds["v"].h5[...] = da.from_array(values, chunks=(5, 4)) if lazy else values
    ds.close()
    np.testing.assert_array_equal(_stored(path), want)


@pytest.mark.parametrize(("limit", "marked"), [(12, True), (11, False)])
def test_done_marks_up_to_their_limit_of_blocks(tmp_path, monkeypatch, limit, marked):
    """Marks are kept for assignments of up to ``_MAX_MARKED_BLOCKS`` blocks (12 here)."""
    monkeypatch.setattr(assign, "_MAX_MARKED_BLOCKS", limit)
    path = _file(tmp_path)
    _assign_failing(path)
    with h5py.File(path) as f:
        assert ("_lazyh5_assign_done" in f["v"].attrs) == marked


def test_a_block_reading_rows_another_block_writes_is_staged(tmp_path):
    """Block 1 (rows 4..8) reads rows 0..4 only, which no other block reads but block 0
    writes: not in place, whatever order the blocks run in."""
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=BASE, chunks=(4, 10))
    staged = []

    def look(b):
        if b.size:
            staged.append(any(p.name.startswith(".lazyh5-stage-") for p in tmp_path.iterdir()))
        return b

    with lazyh5.set_options(memory_budget="160B"):
        ds = lazyh5.open_dataset(path, mode="r+", chunks={})
        x = ds["v"].data
        zeros = da.zeros((4, 10), dtype=x.dtype, chunks=(4, 10))
        value = da.concatenate([zeros, x[0:4], x[8:12]]).map_blocks(look, dtype=x.dtype)
        ds["v"].h5[...] = value
        ds.close()
    assert staged and all(staged), staged
    np.testing.assert_array_equal(_stored(path), np.concatenate([0 * BASE[:4], BASE[:4], BASE[8:]]))


@pytest.mark.parametrize("dtype", ["u1", "i1", "u8", "i8"])
def test_index_arrays_of_any_integer_dtype_on_a_long_axis(tmp_path, dtype):
    """Negative positions wrap by the axis length (300, more than int8 holds); uint64
    positions stay integers (numpy would promote uint64 and int64 to float64)."""
    path = tmp_path / "long.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.arange(300, dtype="i4"), chunks=(64,))
    rows = np.array([100, 3, -1, -128] if dtype[0] == "i" else [250, 3, 255], dtype=dtype)
    ds = lazyh5.open_dataset(path, mode="r+")
    ds["v"].h5[rows] = -np.arange(1, len(rows) + 1, dtype="i4")
    ds.close()
    want = np.arange(300, dtype="i4")
    want[rows.astype(np.int64)] = -np.arange(1, len(rows) + 1, dtype="i4")
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["v"][()], want)
