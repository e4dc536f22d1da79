"""Which file positions a view holds (``lazyh5.backend.positions``), checked against xarray.

Each view is built twice: on the lazily opened file (lazily indexed or dask, with
several chunkings) and on an in-memory DataArray whose coordinates ``row`` and
``col`` hold each value's file position. xarray carries those coordinates through
the same isel/concat/roll, so they are the positions the lazy view must report.
Views that do not map to positions (arithmetic, new axes, mixed data) are refused.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.backend.positions import Untraceable, view_positions
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


UNTRACEABLE = {
    "arithmetic": (lambda v: v * 2, "Positions"),
    "transposed": (lambda v: v.T, "numpy.transpose"),
    "new-axis": (lambda v: v.expand_dims("z"), "a new axis"),
    "pointwise": (
        lambda v: v.isel({A: xr.DataArray([1, 2], dims="z"), B: xr.DataArray([1, 2], dims="z")}),
        "AttributeError",
    ),
    "mapped-blocks": (lambda v: v.copy(data=v.data.map_blocks(np.negative)), "converted to numpy"),
    "other-columns": (
        lambda v: xr.concat([v.isel({B: slice(0, 3)}), v.isel({B: slice(5, 8)})], A),
        "not an outer product",
    ),
    "other-columns-merged": (
        lambda v: xr.concat(
            [v.isel({A: [1], B: slice(0, 3)}), v.isel({A: [2], B: slice(5, 8)})], A
        ).chunk({A: -1}),
        "a concatenation of blocks from different positions",
    ),
    "other-int-column": (
        lambda v: xr.concat([v.isel({A: slice(0, 4), B: 2}), v.isel({A: slice(4, None), B: 3})], A),
        "different positions of a dropped axis",
    ),
    "other-int-column-merged": (
        lambda v: xr.concat(
            [v.isel({A: slice(0, 4), B: 2}), v.isel({A: slice(4, None), B: 3})], A
        ).chunk({A: -1}),
        "a concatenation of blocks from different positions",
    ),
    "with-numpy-blocks": (
        lambda v: xr.concat(
            [v.isel({A: slice(0, 4)}), xr.zeros_like(v.isel({A: slice(4, None)})).compute()], A
        ),
        "computed values",
    ),
    "with-numpy-merged": (
        lambda v: xr.concat(
            [v.isel({A: slice(0, 4)}), xr.zeros_like(v.isel({A: slice(4, None)})).compute()], A
        ).chunk({A: -1}),
        "a concatenation with other data",
    ),
    "shifted": (lambda v: v.shift({A: 1}), "astype"),
}


@pytest.mark.parametrize("case", UNTRACEABLE)
def test_views_that_are_not_file_positions_are_refused(path, case):
    make, match = UNTRACEABLE[case]
    ds = lazyh5.open_dataset(path, chunks={A: 4, B: 3})
    with pytest.raises(Untraceable, match=match):
        view_positions(make(ds["v"]).variable._data, find_array(ds["v"], "v"))
    ds.close()


def test_lazily_indexed_views_that_are_not_file_positions_are_refused(path):
    ds = lazyh5.open_dataset(path, chunks=None)
    arr = find_array(ds["v"], "v")
    pointwise = {A: xr.DataArray([1, 2], dims="z"), B: xr.DataArray([1, 2], dims="z")}
    with pytest.raises(Untraceable, match="vectorized"):
        view_positions(ds["v"].isel(pointwise).variable._data, arr)
    with pytest.raises(Untraceable, match="not lazily indexed from the file"):
        view_positions(ds["v"].copy(deep=True).load().variable._data, arr)
    ds.close()


@pytest.mark.parametrize("chunks", [None, {}], ids=["lazy-indexed", "dask"])
def test_a_view_of_another_dataset_is_refused(tmp_path, chunks):
    p = tmp_path / "two.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("v", data=np.zeros(SHAPE, "i4"), chunks=CHUNKS)
        f.create_dataset("w", data=np.zeros(SHAPE, "i4"), chunks=CHUNKS)
    ds = lazyh5.open_dataset(p, chunks=chunks)
    with pytest.raises(Untraceable):
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
    with pytest.raises(Untraceable, match="assigned in memory"):
        view_positions(changed.variable._data, arr, stored=True)
    ds.close()
