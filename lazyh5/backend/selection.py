"""Selection maths: which chunks a key touches along each axis, and what to copy.

A key is what xarray hands a backend with ``OUTER_1VECTOR`` support: basic slices,
integers and 1-d integer arrays (outer indexing, one array per axis).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Axis:
    """One axis of a selection: which chunks it touches and how to copy from each."""

    size: int  # output length (before dropping integer axes)
    drop: bool  # an integer index: dropped from the output
    pieces: list[tuple[int, Any, Any]]  # (chunk number, source index, destination index)
    is_array: bool


def axis_of(key: Any, n: int, c: int) -> Axis | None:
    """The :class:`Axis` of ``key`` on an axis of length ``n`` in chunks of ``c``;
    ``None`` for an index array that is not 1-d integers.

    Examples
    --------
    >>> from lazyh5.backend.selection import axis_of
    >>> [(chunk, src.start, src.stop) for chunk, src, _ in axis_of(slice(3, 9), 10, 4).pieces]
    [(0, 3, 4), (1, 0, 4), (2, 0, 1)]
    """
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step == 1:
            stop = max(stop, start)
            pieces = []
            for ci in range(start // c, (stop - 1) // c + 1 if stop > start else start // c):
                lo, hi = max(start, ci * c), min(stop, (ci + 1) * c)
                pieces.append((ci, slice(lo - ci * c, hi - ci * c), slice(lo - start, hi - start)))
            return Axis(stop - start, False, pieces, False)
        idx = np.arange(start, stop, step)
        return _array_axis(idx, False, c)
    if isinstance(key, (int, np.integer)):
        i = int(key) + (n if key < 0 else 0)
        return Axis(1, True, [(i // c, slice(i % c, i % c + 1), slice(0, 1))], False)
    idx = np.asarray(key)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        return None
    idx = np.where(idx < 0, idx + n, idx)
    return _array_axis(idx, False, c)


def _array_axis(idx: np.ndarray, drop: bool, c: int) -> Axis:
    owner = idx // c
    pieces = []
    for ci in np.unique(owner):
        dst = np.flatnonzero(owner == ci)
        pieces.append((int(ci), idx[dst] - ci * c, dst))
    return Axis(idx.size, drop, pieces, True)


def as_array_index(index: Any) -> np.ndarray:
    """A slice (of step 1) or an index array, as an index array."""
    return np.arange(index.start, index.stop) if isinstance(index, slice) else index
