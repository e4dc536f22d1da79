"""Selection maths, pinned down by the mutants that survived the other tests.

xarray hands the backend normalised keys (no negative indices, only 1-D integer
arrays), so these cases are checked on :func:`lazyh5.backend.selection.axis_of`
itself, whose docstring documents them; the values it leads to are checked against
numpy in tests/test_property_slicing.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from lazyh5.backend.selection import axis_of


def _pieces(axis):
    return [
        (ci, np.asarray(src).tolist(), np.asarray(dst).tolist()) for ci, src, dst in axis.pieces
    ]


@pytest.mark.parametrize(
    "key",
    [np.zeros((2, 2), int), np.array([1.0, 2.0]), np.array([True, False]), np.array(["a"])],
    ids=["2-d", "float", "bool", "str"],
)
def test_index_arrays_other_than_1d_integers_are_not_handled(key):
    assert axis_of(key, 10, 4) is None


def test_negative_indices_count_from_the_end():
    axis = axis_of(np.array([-1, 0, -6]), 10, 4)
    assert axis.size == 3 and not axis.drop and axis.is_array
    assert _pieces(axis) == [(0, [0], [1]), (1, [0], [2]), (2, [1], [0])]
    one = axis_of(-3, 10, 4)
    assert one.drop and one.size == 1
    assert [(ci, s.start, s.stop) for ci, s, _ in one.pieces] == [(1, 3, 4)]


def test_empty_slices_touch_no_chunk():
    for start in (0, 3, 4, 10):
        axis = axis_of(slice(start, start), 10, 4)
        assert axis.size == 0 and axis.pieces == []
    assert axis_of(slice(7, 2), 10, 4).pieces == []
