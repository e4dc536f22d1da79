"""Every refusal of a write through a view, word for word, and the file left as it was.

The messages are what a user reads when a write cannot happen: each names the
variable, its path and file, and says what to do instead. Each case here is a real
view of a real file, refused before anything is written.
"""

from __future__ import annotations

import re

import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.errors import (
    InvalidIndexError,
    ObjectNotFoundError,
    ReadOnlyError,
    UnmappableViewError,
    UnsupportedDtypeError,
)

A, B = "sample", "v_dim_1"
BASE = np.arange(120, dtype="i4").reshape(12, 10)


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "w.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("v", data=BASE, chunks=(4, 3))
        f.create_dataset("w", data=BASE, chunks=(4, 3))
        f.create_dataset("cells", shape=(12,), dtype=np.dtype(("i4", (2,))))
        f.create_dataset("t", data=np.zeros(12, "i2")).attrs["scale_factor"] = 0.5
        f.create_dataset("f", data=np.zeros(12, "f4")).attrs["_FillValue"] = np.float32(np.nan)
        f.create_dataset("g", data=np.zeros(12, "f4")).attrs["_FillValue"] = np.float32(-1)
    return p


def _label(path, name="v") -> str:
    return f"'{name}' (/{name}) in '{path}'"


def _key(path) -> list:
    """(write, the error, its exact message) for writes through ``ds["v"]``."""
    v = f"cannot write to {_label(path)}"
    where = v + ": index {!r} along '{}'"
    dims = "('sample', 'v_dim_1')"
    return [
        ({"c": 0, "d": 1}, ObjectNotFoundError, f"{v}: no dimension(s) ['c', 'd'] in {dims}"),
        ((Ellipsis, 0, Ellipsis), InvalidIndexError, f"{v}: more than one '...' in the key"),
        (
            (0, 0, 0),
            InvalidIndexError,
            f"{v}: key has 3 entries but the view has 2 dimension(s) {dims}",
        ),
        (
            (12,),
            InvalidIndexError,
            where.format(12, A) + " is out of bounds; expected -12 <= index < 12",
        ),
        (
            (0, -11),
            InvalidIndexError,
            where.format(-11, B) + " is out of bounds; expected -10 <= index < 10",
        ),
        (
            (np.ones(5, bool),),
            InvalidIndexError,
            where.format(np.ones(5, bool), A) + ": a boolean mask must have length 12",
        ),
        (
            (np.zeros((1, 1), int),),
            InvalidIndexError,
            where.format(np.zeros((1, 1), int), A)
            + ": expected a 1-D integer array, a slice or an int",
        ),
        (
            (np.array([0.5]),),
            InvalidIndexError,
            where.format(np.array([0.5]), A) + ": expected a 1-D integer array, a slice or an int",
        ),
        (
            ([3, 12],),
            InvalidIndexError,
            where.format([3, 12], A) + " is out of bounds; expected -12 <= index < 12",
        ),
        (
            ([-13],),
            InvalidIndexError,
            where.format([-13], A) + " is out of bounds; expected -12 <= index < 12",
        ),
        (
            (1.0,),
            InvalidIndexError,
            where.format(1.0, A) + ": expected an int, a slice, or a 1-D integer array",
        ),
        (
            (True,),
            InvalidIndexError,
            where.format(True, A) + ": expected an int, a slice, or a 1-D integer array",
        ),
    ]


def _exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def test_bad_keys_are_refused_word_for_word(path):
    ds = lazyh5.open_dataset(path, mode="r+")
    for key, error, message in _key(path):
        with pytest.raises(error, match=_exactly(message)):
            ds["v"].h5[key] = 0
    ds.close()
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["v"][()], BASE)


def test_keys_that_fit_write_where_numpy_does(path):
    ds = lazyh5.open_dataset(path, mode="r+")
    v = ds["v"]
    v.h5[-12] = -1  # the bounds themselves
    v.h5[11, -10] = -2
    v.h5[[-12, 11], 9] = -3
    v.h5[np.array([], int)] = -4  # an empty selection writes nothing
    v.h5[xr.DataArray([5, 6]), range(2, 4)] = -5
    v.h5[np.uint8(7)] = -6
    ds.close()
    expected = BASE.copy()
    expected[0], expected[11, 0], expected[[0, 11], 9] = -1, -2, -3
    expected[5:7, 2:4] = -5
    expected[7] = -6
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["v"][()], expected)


def _encoded(view: xr.DataArray, ds: xr.Dataset) -> xr.DataArray:
    """``view`` with the encoding of the variable it came from (as if copied over)."""
    view.encoding = dict(ds["v"].encoding)
    return view


def _views(path) -> list:
    """(view maker, the error, its exact message) for views that cannot be written."""
    v = f"cannot write to {_label(path)}"
    untraceable = (
        f"{v}: the view's data does not map to positions of the file ({{}}); select with "
        "isel/sel on the opened dataset and write through that"
    )
    decoded = (
        "cannot write to {}: its values are decoded from the file ({}); writing through "
        "needs a plain numeric dataset (open with decode_cf=False to write raw values)"
    )
    dims = (
        f"{v}: the view's dims {{}} are not the file's dims ('sample', 'v_dim_1') in file "
        "order (transposed, stacked or expanded?); write through the untransposed variable"
    )
    return [
        (
            lambda ds: ds["v"] * 2,
            UnmappableViewError,
            "cannot write to 'v': it is not a variable read by lazyh5 (a computed expression "
            "loses its link to the file); assign to the variable of the opened dataset "
            "instead, e.g. ds['x'].h5[...] = expression",
        ),
        (
            lambda ds: ds["v"].isel({A: [1, 2, 1]}),
            UnmappableViewError,
            f"{v}: positions along 'sample' repeat (a selection that repeats an index, or a "
            "concatenation of overlapping views?)",
        ),
        (
            lambda ds: ds["v"].copy(data=ds["v"].data + ds["w"].data),
            UnmappableViewError,
            f"{v}: the view reads from 2 arrays (/v, /w), e.g. a concatenation",
        ),
        (
            lambda ds: ds["v"].copy(data=np.zeros((12, 10), "i4")),
            UnmappableViewError,
            f"{v}: the view is not read lazily from the file (loaded into memory or "
            "rebuilt); write through the lazily opened dataset",
        ),
        (
            lambda ds: ds["v"].copy(data=ds["w"].data),
            UnmappableViewError,
            f"{v}: the view reads from /w in '{path}', not the dataset its encoding names",
        ),
        (
            lambda ds: ds["cells"],
            UnsupportedDtypeError,
            f"cannot write to {_label(path, 'cells')}: its last 1 dimension(s) are the HDF5 "
            "array element type of each value, which lazyh5 reads but does not write; write "
            "with h5py (dset[i] = value of shape element_shape)",
        ),
        (
            lambda ds: ds["t"],
            UnsupportedDtypeError,
            decoded.format(_label(path, "t"), "scale_factor"),
        ),
        (
            lambda ds: ds["g"],
            UnsupportedDtypeError,
            decoded.format(_label(path, "g"), "_FillValue"),
        ),
        (
            lambda ds: _encoded(ds["v"].astype("f8"), ds),
            UnsupportedDtypeError,
            decoded.format(_label(path), "int32 shown as float64"),
        ),
        (lambda ds: ds["v"].T, UnmappableViewError, dims.format("('v_dim_1', 'sample')")),
        (
            lambda ds: ds["v"].expand_dims("z"),
            UnmappableViewError,
            dims.format("('z', 'sample', 'v_dim_1')"),
        ),
        (
            lambda ds: _encoded(ds["v"] * 2, ds),
            UnmappableViewError,
            untraceable.format(
                "TypeError: unsupported operand type(s) for *: 'Positions' and 'int'"
            ),
        ),
    ]


@pytest.mark.parametrize("case", range(12))
def test_views_that_cannot_be_written_are_refused_word_for_word(path, case):
    make, error, message = _views(path)[case]
    ds = lazyh5.open_dataset(path, mode="r+")
    with pytest.raises(error, match=_exactly(message)):
        make(ds).h5[...] = 0
    ds.close()
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["v"][()], BASE)


def test_a_nan_fill_on_floats_is_written_as_shown(path):
    ds = lazyh5.open_dataset(path, mode="r+")
    ds["f"].h5[2:4] = 7.0
    ds.close()
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["f"][()], [0, 0, 7, 7] + [0] * 8)


def test_a_file_opened_read_only_is_refused(path):
    ds = lazyh5.open_dataset(path)
    message = (
        f"cannot write to 'v' in {path}: the file was opened read-only; open it with mode='r+'"
    )
    with pytest.raises(ReadOnlyError, match=_exactly(message)):
        ds["v"].h5[0] = 1
    ds.close()


def test_labels_that_do_not_pick_one_position_are_refused_word_for_word(path):
    ds = lazyh5.open_dataset(path, mode="r+")
    v = ds["v"].assign_coords({A: np.arange(12) * 10, B: [0, 1, 2, 3, 4, 5, 6, 7, 7, 9]})
    label = f"cannot write to {_label(path)}"
    cases = [
        ({"c": 0}, ObjectNotFoundError, f"{label}: no dimension 'c' in ('sample', 'v_dim_1')"),
        (
            {B: 7},
            UnmappableViewError,
            f"{label}: coordinate 'v_dim_1' has repeated values, so labels do not identify "
            "positions; write with positions (.h5[...]) instead",
        ),
        ({A: 15}, ObjectNotFoundError, f"{label}: label(s) 15 not found along 'sample'"),
        (
            {A: [0, 15, 25]},
            ObjectNotFoundError,
            f"{label}: label(s) [15, 25] not found along 'sample'",
        ),
    ]
    for key, error, message in cases:
        with pytest.raises(error, match=_exactly(message)):
            v.h5.loc[key] = 0
    v.h5.loc[{A: np.int64(20)}] = -1  # a numpy scalar label
    v.h5.loc[{A: np.array(100)}] = -7  # a 0-d array
    v.h5.loc[{A: slice(60, 100, 20)}] = -8  # as in pandas: the step counts positions
    v.h5.loc[{A: [110, 0]}] = -2
    v.h5.loc[{A: slice(30, 50)}] = -3  # labels: both ends included
    ds["v"].h5.loc[{B: 9}] = -4  # no coordinate: labels are positions
    ds.close()
    expected = BASE.copy()
    expected[2], expected[10], expected[6] = -1, -7, -8
    expected[[11, 0]], expected[3:6], expected[:, 9] = -2, -3, -4
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["v"][()], expected)


REGIONS = {
    "rows": (lambda ds: ds["v"][2:8], (slice(2, 8), slice(0, 10))),
    "block": (lambda ds: ds["v"][5:, 3:5], (slice(5, 12), slice(3, 5))),
    "joined": (lambda ds: xr.concat([ds["v"][0:4], ds["v"][4:7]], A), (slice(0, 7), slice(0, 10))),
    "listed-rows": (lambda ds: ds["v"][[3, 4, 5]], (slice(3, 6), slice(0, 10))),
    "stepped": (lambda ds: ds["v"][::2], None),
    "reversed": (lambda ds: ds["v"][::-1], None),
    "other-order": (lambda ds: ds["v"][[4, 3, 5]], None),
    "dropped-dim": (lambda ds: ds["v"].isel({B: 3}), None),
    "transposed": (lambda ds: ds["v"].T, None),
    "computed": (lambda ds: _encoded(ds["v"] * 2, ds), None),
    "mapped": (lambda ds: ds["v"].copy(data=ds["v"].data.map_blocks(lambda b: b)), None),
    "assigned": (lambda ds: _assigned(ds["v"][2:8]), None),
    "scaled": (lambda ds: ds["t"], None),
    "nan-fill": (lambda ds: ds["f"], None),
    "shown-as-float": (lambda ds: _encoded(ds["v"].astype("f8"), ds), None),
    "loaded": (lambda ds: ds["v"].copy(deep=True).load(), None),
    "array-elements": (lambda ds: ds["cells"][2:5], (slice(2, 5), slice(0, 2))),
    "not-from-lazyh5": (lambda ds: xr.DataArray(ds["v"].data, dims=(A, B)), None),
}


def _assigned(view: xr.DataArray) -> xr.DataArray:
    view = view.copy(deep=True)
    view[0] = 5  # in memory: the file's values are no longer what it holds
    return view


@pytest.mark.parametrize("case", REGIONS)
def test_stored_region_is_where_a_view_holds_the_file_s_values_unchanged(path, case):
    from lazyh5.backend.view import stored_region

    make, key = REGIONS[case]
    ds = lazyh5.open_dataset(path, chunks={A: 4, B: 5})
    view = make(ds)
    found = stored_region(view)
    if key is None:
        assert found is None
    else:
        array, region = found
        assert array.path == f"/{view.name}" and region == key
        with h5py.File(path) as f:
            np.testing.assert_array_equal(view.values, f[array.path][region[:1]][..., region[1]])
    ds.close()


def test_stored_region_needs_dask(path):
    from lazyh5.backend.view import stored_region

    ds = lazyh5.open_dataset(path, chunks=None)  # lazily indexed: read through xarray
    assert stored_region(ds["v"][2:8]) is None
    ds.close()


def test_stored_region_refuses_a_user_function_in_a_tuple_task(path):
    """dask still runs graphs written as ``(function, argument)`` tuples: a function of
    the user's there is a computation too (it may change values or have effects)."""
    from dask.highlevelgraph import HighLevelGraph

    from lazyh5.backend.view import stored_region

    def touch(block):  # returns the block as it is, and could do anything else
        return block

    ds = lazyh5.open_dataset(path, chunks={A: -1, B: -1})
    view = ds["v"][2:8]
    name = "touched-" + view.data.name
    layer = {(name, 0, 0): (touch, (view.data.name, 0, 0))}
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[view.data])
    touched = view.copy(data=da.Array(graph, name, view.data.chunks, meta=view.data._meta))
    np.testing.assert_array_equal(touched.values, BASE[2:8])
    assert stored_region(view) is not None and stored_region(touched) is None
    ds.close()


def test_a_label_that_names_a_range_of_times_is_refused(path):
    ds = lazyh5.open_dataset(path, mode="r+")
    times = np.array(["2020-01-30", "2020-01-31"] + [f"2020-02-{d:02d}" for d in range(1, 11)])
    v = ds["v"].assign_coords({A: times.astype("datetime64[ns]")})
    message = f"cannot write to {_label(path)}: label(s) '2020-02' not found along 'sample'"
    with pytest.raises(ObjectNotFoundError, match=_exactly(message)):
        v.h5.loc[{A: "2020-02"}] = 0  # ten rows, not one position
    v.h5.loc[{A: "2020-01-31"}] = -1
    ds.close()
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["v"][1], -np.ones(10))


def test_arrays_inlined_in_the_graph_s_tasks_are_found(path):
    """With ``inline_array=True`` dask keeps the file's array inside each task (no graph
    key of its own): the sources of a view, and of a join of views, are still found."""
    from lazyh5.backend.view import h5_sources

    ds = xr.open_dataset(path, engine="lazyh5", chunks={}, inline_array=True)
    graph = dict(ds["v"].data.__dask_graph__())
    assert not any(type(v).__name__ == "ImplicitToExplicitIndexingAdapter" for v in graph.values())
    views = [ds["v"][2:6], xr.concat([ds["v"][:1], ds["w"][3:4]], A), ds["v"][1:3] * 2]
    found = [sorted(a.path for a in h5_sources(view.data)) for view in views]
    assert found == [["/v"], ["/v", "/w"], ["/v"]]
    ds.close()
