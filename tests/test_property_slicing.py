"""Property: lazy selection of any shape, chunking and selection equals numpy's."""

from __future__ import annotations

import itertools

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import lazyh5

_counter = itertools.count()


@st.composite
def array_and_chunks(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    dtype = draw(st.sampled_from(["f4", "i2", "u1", "f8"]))
    return shape, chunks, dtype


@st.composite
def selection(draw, shape):
    key = []
    for n in shape:
        kind = draw(st.sampled_from(["slice", "int", "list", "all"]))
        if kind == "slice":
            start = draw(st.integers(-n, n))
            stop = draw(st.integers(-n, n))
            step = draw(st.sampled_from([1, 2, 3, -1, -2]))
            key.append(slice(start, stop, step))
        elif kind == "int":
            key.append(draw(st.integers(-n, n - 1)))
        elif kind == "list":
            key.append(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5)))
        else:
            key.append(slice(None))
    return key


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data(), spec=array_and_chunks(), chunks_mode=st.sampled_from(["budget", {}]))
def test_isel_equals_numpy(tmp_path, data, spec, chunks_mode):
    shape, chunks, dtype = spec
    values = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    path = tmp_path / f"p{next(_counter)}.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=values, chunks=chunks)
    ds = lazyh5.open_dataset(path, chunks=chunks_mode)
    var = ds["v"]
    for axis_chunks, h in zip(var.chunks, chunks, strict=True):
        assert all(c % h == 0 for c in axis_chunks[:-1])
    key = data.draw(selection(shape))
    # xarray applies each axis' indexer independently (outer indexing).
    expected = values
    for axis in reversed(range(len(shape))):
        # axes before `axis` are untouched so far; later ones may be gone already
        expected = expected[(slice(None),) * axis + (key[axis],)]
    got = var.isel(dict(zip(var.dims, key, strict=True))).values
    np.testing.assert_array_equal(got, expected)
    ds.close()
