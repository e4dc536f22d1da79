"""Which file positions a view holds (``lazyh5.backend.positions``), checked against xarray.

Each view is built twice: on the lazily opened file (lazily indexed or dask, with
several chunkings) and on an in-memory DataArray whose coordinates ``row`` and
``col`` hold each value's file position. xarray carries those coordinates through
the same isel/concat/roll, so they are the positions the lazy view must report.
Views that do not map to positions (arithmetic, new axes, mixed data) are refused.
"""

from __future__ import annotations

import itertools
import re

import h5py
import numpy as np
import pytest
import xarray as xr
from xarray.core import indexing

import lazyh5
from lazyh5.backend.positions import Positions, StoredPositions, Untraceable, view_positions
from lazyh5.backend.view import find_array

SHAPE, CHUNKS = (12, 10), (4, 3)
A, B = "sample", "v_dim_1"


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "p.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("v", data=np.arange(120, dtype="i4").reshape(SHAPE), chunks=CHUNKS)
    return p


def _oracle() -> xr.DataArray:
    """Values whose coordinates are the file positions along each axis."""
    return xr.DataArray(
        np.zeros(SHAPE, "i4"),
        dims=(A, B),
        coords={"row": (A, np.arange(SHAPE[0])), "col": (B, np.arange(SHAPE[1]))},
    )


VIEWS = {
    "all": lambda v: v,
    "step": lambda v: v.isel({A: slice(1, 11, 2)}),
    "reversed-int": lambda v: v.isel({A: slice(None, None, -1), B: 3}),
    "list": lambda v: v.isel({A: [3, 1, 7]}),
    "list-one": lambda v: v.isel({A: [5], B: slice(2, 3)}),
    "list-even": lambda v: v.isel({A: [2, 5, 8, 11]}),
    "list-repeat": lambda v: v.isel({A: [4, 4, 4]}),
    "list-uneven": lambda v: v.isel({B: [0, 1, 3, 4]}),
    "empty": lambda v: v.isel({A: slice(5, 5)}),
    "mask": lambda v: v.isel({A: np.arange(12) % 3 == 1}),
    "numpy-int": lambda v: v.isel({A: np.int64(3), B: slice(None, None, 3)}),
    "int-then-step": lambda v: v.isel({A: 2}).isel({B: slice(None, None, 3)}),
    "ellipsis": lambda v: v[..., 2],
    "ellipsis-first": lambda v: v[2, ...],
    "ellipsis-middle": lambda v: v[1:3, ..., 4:6],
    "view-of-view": lambda v: v.isel({A: slice(1, None, 2)}).isel(
        {A: [4, 0, 2], B: slice(8, 1, -3)}
    ),
    "rechunked": lambda v: v.isel({A: slice(None, None, -1)}).chunk({A: 5, B: 7}),
    "list-rechunked": lambda v: v.isel({A: [3, 1, 7, 8, 0]}).chunk({A: 2}),
    "flip-then-list": lambda v: v.isel({A: slice(None, None, -1)}).isel({A: [3, 1, 7, 8, 0]}),
    "roll": lambda v: v.roll({A: 1}, roll_coords=True),
    "concat-rows": lambda v: xr.concat([v.isel({A: slice(0, 4)}), v.isel({A: slice(6, None)})], A),
    "concat-merged": lambda v: xr.concat([v.isel({A: [9]}), v.isel({A: slice(0, 3)})], A).chunk(
        {A: -1}
    ),
    "concat-int": lambda v: xr.concat(
        [v.isel({A: slice(0, 4), B: 2}), v.isel({A: slice(4, None), B: 2})], A
    ).chunk({A: -1}),
}
OPENED = {
    "lazy-indexed": {"chunks": None},
    "file-chunks": {"chunks": {}},
    "one-block": {"chunks": {A: -1, B: -1}},
    "small-blocks": {"chunks": {A: 2, B: 3}},
}


def _expected(view: xr.DataArray) -> list:
    return [
        view["row"].item() if view["row"].ndim == 0 else view["row"].values,
        view["col"].item() if view["col"].ndim == 0 else view["col"].values,
    ]


@pytest.mark.filterwarnings("ignore:The specified chunks separate")
@pytest.mark.parametrize("opened", OPENED)
@pytest.mark.parametrize("view", VIEWS)
def test_positions_of_a_view_are_the_file_positions_xarray_carries(path, view, opened):
    ds = lazyh5.open_dataset(path, **OPENED[opened])
    if OPENED[opened]["chunks"] is None and view.startswith(("concat", "rechunked", "roll")):
        ds = ds.chunk({})  # these need dask on a lazily indexed variable too
    lazy = VIEWS[view](ds["v"])
    got = view_positions(lazy.variable._data, find_array(ds["v"], "v"))
    want = _expected(VIEWS[view](_oracle()))
    assert len(got) == 2
    for g, w in zip(got, want, strict=True):
        if isinstance(w, int):
            assert type(g) is int and g == w
            continue
        assert isinstance(g, range | np.ndarray)
        np.testing.assert_array_equal(np.asarray(g, dtype=np.int64), w, strict=True)
        steps = set(np.diff(w).tolist())
        evenly = len(w) < 2 or (len(steps) == 1 and 0 not in steps)
        # evenly spaced positions come as a range (a slice of the file), others as int64
        assert isinstance(g, range) == evenly, (g, w)
        if isinstance(g, np.ndarray):
            assert g.dtype == np.int64
    # asked again (from the cache for dask views): the same answer
    again = view_positions(lazy.variable._data, find_array(ds["v"], "v"))
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(again, got, strict=True)
    )
    ds.close()


def _exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


OUTER = "blocks that are not an outer product of positions"
MERGED = "a concatenation of blocks from different positions"
UNTRACEABLE = {
    "arithmetic": (lambda v: v * 2, r"^TypeError: unsupported operand type\(s\) for \*"),
    "transposed": (lambda v: v.T, _exactly("numpy.transpose")),
    "new-axis": (lambda v: v.expand_dims("z"), _exactly("a new axis")),
    "pointwise": (
        lambda v: v.isel({A: xr.DataArray([1, 2], dims="z"), B: xr.DataArray([1, 2], dims="z")}),
        _exactly("AttributeError: 'Positions' object has no attribute 'transpose'"),
    ),
    "mapped-blocks": (
        lambda v: v.copy(data=v.data.map_blocks(np.negative)),
        _exactly("the data was converted to numpy values (computed)"),
    ),
    "other-columns": (
        lambda v: xr.concat([v.isel({B: slice(0, 3)}), v.isel({B: slice(5, 8)})], A),
        _exactly(OUTER),
    ),
    "other-columns-merged": (
        lambda v: xr.concat(
            [v.isel({A: [1], B: slice(0, 3)}), v.isel({A: [2], B: slice(5, 8)})], A
        ).chunk({A: -1}),
        _exactly(MERGED),
    ),
    "other-int-column": (
        lambda v: xr.concat([v.isel({A: slice(0, 4), B: 2}), v.isel({A: slice(4, None), B: 3})], A),
        _exactly("blocks from different positions of a dropped axis"),
    ),
    "other-int-column-merged": (
        lambda v: xr.concat(
            [v.isel({A: slice(0, 4), B: 2}), v.isel({A: slice(4, None), B: 3})], A
        ).chunk({A: -1}),
        _exactly(MERGED),
    ),
    "with-numpy-blocks": (
        lambda v: xr.concat(
            [v.isel({A: slice(0, 4)}), xr.zeros_like(v.isel({A: slice(4, None)})).compute()], A
        ),
        _exactly("the view's blocks are computed values"),
    ),
    "with-numpy-merged": (
        lambda v: xr.concat(
            [v.isel({A: slice(0, 4)}), xr.zeros_like(v.isel({A: slice(4, None)})).compute()], A
        ).chunk({A: -1}),
        _exactly("a concatenation with other data"),
    ),
    "different-axes-dropped": (
        lambda v: xr.concat([v.isel({A: 2}), v.isel({B: 3}).rename({A: B})], B),
        _exactly("blocks that drop different axes"),
    ),
    "shifted": (
        lambda v: v.shift({A: 1}),
        _exactly("AttributeError: 'Positions' object has no attribute 'astype'"),
    ),
}


@pytest.mark.parametrize("case", UNTRACEABLE)
def test_views_that_are_not_file_positions_are_refused(path, case):
    make, match = UNTRACEABLE[case]
    ds = lazyh5.open_dataset(path, chunks={A: 4, B: 3})
    with pytest.raises(Untraceable, match=match):
        view_positions(make(ds["v"]).variable._data, find_array(ds["v"], "v"))
    ds.close()


NOT_LAZY = _exactly("the view's data is not lazily indexed from the file")


def test_lazily_indexed_views_that_are_not_file_positions_are_refused(path):
    ds = lazyh5.open_dataset(path, chunks=None)
    arr = find_array(ds["v"], "v")
    pointwise = {A: xr.DataArray([1, 2], dims="z"), B: xr.DataArray([1, 2], dims="z")}
    with pytest.raises(Untraceable, match=_exactly("vectorized (pointwise) indexing")):
        view_positions(ds["v"].isel(pointwise).variable._data, arr)
    with pytest.raises(Untraceable, match=NOT_LAZY):
        view_positions(ds["v"].copy(deep=True).load().variable._data, arr)
    ds.close()


@pytest.mark.parametrize(
    ("chunks", "match"),
    [(None, NOT_LAZY), ({}, _exactly("the file's array is inlined into the graph's tasks"))],
    ids=["lazy-indexed", "dask"],
)
def test_a_view_of_another_dataset_is_refused(tmp_path, chunks, match):
    p = tmp_path / "two.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("v", data=np.zeros(SHAPE, "i4"), chunks=CHUNKS)
        f.create_dataset("w", data=np.zeros(SHAPE, "i4"), chunks=CHUNKS)
    ds = lazyh5.open_dataset(p, chunks=chunks)
    with pytest.raises(Untraceable, match=match):
        view_positions(ds["w"].isel({A: slice(2, 5)}).variable._data, find_array(ds["v"], "v"))
    ds.close()


def test_values_assigned_in_memory_keep_positions_but_not_stored_values(path):
    ds = lazyh5.open_dataset(path, chunks={})
    arr = find_array(ds["v"], "v")
    view = ds["v"].isel({A: slice(2, 9)})
    assert view_positions(view.variable._data, arr, stored=True) == [range(2, 9), range(10)]
    changed = view.copy(deep=True)
    changed[0] = 5
    assert view_positions(changed.variable._data, arr) == [range(2, 9), range(10)]
    with pytest.raises(Untraceable, match=_exactly("values assigned in memory")):
        view_positions(changed.variable._data, arr, stored=True)
    ds.close()


# What dask and xarray do to a block, done to Positions and to numpy's index grids.
FULL = (6, 5, 4)
KEYS = {
    "slice": (slice(1, 5, 2),),
    "int": (2,),
    "numpy-int-and-list": (np.int64(2), [3, 0]),
    "ellipsis-last": (Ellipsis, 1),
    "ellipsis-middle": (1, Ellipsis, slice(None, None, -1)),
    "ellipsis-alone": (Ellipsis,),
    "mask": (np.array([True, False, True, False, True, False]),),
    "uint-array": (slice(None), np.array([4, 1], "u2")),
    "basic-indexer": indexing.BasicIndexer((slice(2, None), 3, slice(None))),
    "outer-indexer": indexing.OuterIndexer((np.array([5, 0]), slice(None), np.array([1]))),
    "not-a-tuple": 3,
}


def _numpy_axes(key) -> list:
    """The positions ``key`` picks along each axis of FULL, each axis indexed on its own."""
    if isinstance(key, indexing.ExplicitIndexer):
        key = key.tuple
    key = key if isinstance(key, tuple) else (key,)
    if Ellipsis in [k if k is Ellipsis else None for k in key]:
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(FULL) - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (len(FULL) - len(key))
    return [np.arange(n)[k] for n, k in zip(FULL, key, strict=True)]


@pytest.mark.parametrize("key", KEYS)
def test_positions_index_like_numpy_on_each_axis(key):
    got = Positions.full(FULL)[KEYS[key]]
    want = _numpy_axes(KEYS[key])
    assert len(got.axes) == 3
    for g, w in zip(got.axes, want, strict=True):
        if np.ndim(w) == 0:
            assert type(g) is int and g == w
        else:
            np.testing.assert_array_equal(g, w, strict=True)
    shape = tuple(len(w) for w in want if np.ndim(w))
    assert (got.shape, got.ndim, got.size, len(got)) == (
        shape,
        len(shape),
        np.prod(shape),
        shape[0],
    )
    again = got[1:]  # positions of positions: a view of a view
    assert len(again) == shape[0] - 1


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ((None,), "a new axis"),
        ((slice(None), None), "a new axis"),
        ((0, 0, 0, 0), "a key of 4 entries on 3 axes"),
        ((np.zeros((2, 2), int),), "an index of shape (2, 2) and dtype int64"),
        ((np.array([0.5]),), "an index of shape (1,) and dtype float64"),
        ((True,), "an index of shape () and dtype bool"),
        (
            indexing.VectorizedIndexer((np.array([1]), np.array([1]), np.array([1]))),
            "vectorized (pointwise) indexing",
        ),
    ],
)
def test_positions_refuse_keys_that_are_not_positions(key, message):
    with pytest.raises(Untraceable, match=_exactly(message)):
        Positions.full(FULL)[key]


def test_positions_take_and_concatenate_like_numpy():
    full = Positions.full((6, 5))
    block = full[:, 2:5]
    taken = np.take(block, [4, 0, 4], axis=0)
    np.testing.assert_array_equal(taken.axes[0], [4, 0, 4])
    np.testing.assert_array_equal(taken.axes[1], [2, 3, 4])
    np.testing.assert_array_equal(np.take(block, np.array([2]), axis=1).axes[1], [4])
    joined = np.concatenate([block[:2], block[4:]])  # numpy's default axis: 0
    np.testing.assert_array_equal(joined.axes[0], [0, 1, 4, 5])
    np.testing.assert_array_equal(joined.axes[1], [2, 3, 4])
    joined = np.concatenate([block[1:3, :1], block[1:3, 2:]], axis=1)
    np.testing.assert_array_equal(joined.axes[0], [1, 2])
    np.testing.assert_array_equal(joined.axes[1], [2, 4])
    column = full[:, 3]  # the file's second axis dropped: axis 0 is still the first
    joined = np.concatenate([column[:2], column[3:]], axis=0)
    assert joined.axes[1] == 3
    np.testing.assert_array_equal(joined.axes[0], [0, 1, 3, 4, 5])
    row = full[2]  # the first dropped: the block's axis 0 is the file's second
    joined = np.concatenate([row[:2], row[3:]], axis=0)
    assert joined.axes[0] == 2
    np.testing.assert_array_equal(joined.axes[1], [0, 1, 3, 4])
    copied = block.copy()
    assert copied.axes is not block.axes
    assert all(np.array_equal(a, b) for a, b in zip(copied.axes, block.axes, strict=True))
    block[0] = 5  # an assignment in memory moves nothing
    np.testing.assert_array_equal(block.axes[0], np.arange(6))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: np.take(p, [1]), "numpy.take without an axis"),
        (lambda p: np.take(p, [1], axis=0, out=np.empty((1, 5))), "numpy.take without an axis"),
        (lambda p: np.concatenate([p[2], p[3]]), MERGED),
        (lambda p: np.concatenate([p[:, 1:], p[:, :4]]), MERGED),
        (lambda p: np.concatenate([p, np.zeros((1, 5))]), "a concatenation with other data"),
        (
            lambda p: np.concatenate([p, p], out=np.empty((12, 5))),
            "a concatenation with other data",
        ),
        (lambda p: np.sum(p), "numpy.sum"),
        (lambda p: np.asarray(p), "the data was converted to numpy values (computed)"),
        (lambda p: StoredPositions(p.axes).__setitem__(0, 1), "values assigned in memory"),
    ],
    ids=[
        "take-flat",
        "take-out",
        "other-int",
        "other-positions",
        "numpy",
        "out",
        "sum",
        "asarray",
        "stored",
    ],
)
def test_positions_refuse_what_they_cannot_follow(call, message):
    with pytest.raises(Untraceable, match=_exactly(message)):
        call(Positions.full((6, 5)))


def test_positions_kept_for_views_asked_again_stay_bounded(path):
    from lazyh5.backend import positions

    ds = lazyh5.open_dataset(path, chunks={})
    arr = find_array(ds["v"], "v")
    first = ds["v"].isel({A: slice(0, 1)})
    assert view_positions(first.variable._data, arr)[0] == range(0, 1)
    views = itertools.product(range(1, 13), range(1, 11), (1, 2), (1, 2))
    for a, b, sa, sb in itertools.islice(views, 1, positions._CACHE_SIZE + 40):  # not first
        view = ds["v"].isel({A: slice(0, a, sa), B: slice(0, b, sb)})
        got = view_positions(view.variable._data, arr)
        assert got == [range(0, a, sa), range(0, b, sb)]
        assert len(positions._CACHE) <= positions._CACHE_SIZE
    # the first view's positions were dropped to make room, and are found again
    assert (first.data.name, False) not in positions._CACHE
    assert view_positions(first.variable._data, arr)[0] == range(0, 1)
    ds.close()
