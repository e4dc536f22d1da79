"""Direct block reads for variables that are plain views of one HDF5 dataset.

A block of an untransformed variable (``ds["image"]``, or an ``isel`` of it with
slices) needs no graph: it is one read of rows ``[a, b)`` of the file. Through
``dask.compute`` the same read costs a graph, an optimisation pass, a scheduler run
and xarray's indexing adapters, more CPU than the read itself. So the loader reads
such variables (found by :func:`~lazyh5.backend.view.stored_region`) straight from the
backend array — the same decode path dask tasks use — and leaves everything else
(transforms, index arrays, a distributed client) to dask.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..backend import rows as file_rows
from ..backend.array import H5BackendArray
from ..backend.threads import Pending
from ..backend.view import stored_region

# Rows smaller than this (labels: 8 bytes) are read in runs and scattered by numpy,
# and the loader reads such variables whole per epoch.
SMALL_ROW = 1024


@dataclass
class DirectSource:
    """Rows of a view read straight from its HDF5 dataset."""

    array: H5BackendArray
    key: tuple[slice, ...]  # the view's extent in file coordinates, per file axis
    row_axis: int  # the file axis that holds the sample dimension
    # False: not looked up yet
    _rows: file_rows.RowFile | bool | None = field(default=False, repr=False)

    def _row_file(self) -> file_rows.RowFile | None:
        if self._rows is False:
            arr = self.array
            full = all(k == slice(0, n) for k, n in zip(self.key[1:], arr.shape[1:], strict=True))
            self._rows = None
            if self.row_axis == 0 and full:
                self._rows = file_rows.row_file(
                    arr._dataset_unlocked, arr.store.lock, arr.shape, arr.store.ranges()
                )
        return self._rows

    def _copies(self, a: int, b: int) -> file_rows.RowCopy | None:
        """A RowCopy of rows ``[a, b)`` from cached chunk addresses (``None`` if a chunk
        is unallocated: then the fill value comes from h5py's path); raises
        :class:`~lazyh5.backend.rows.Compressed` if a chunk has to be decoded."""
        rows = self._row_file()
        if rows is None:
            return None
        first = self.key[0].start
        return rows.copy(first + a, first + b)

    def _key(self, a: int, b: int) -> tuple[slice, ...]:
        key = list(self.key)
        first = key[self.row_axis].start
        key[self.row_axis] = slice(first + a, first + b)
        return tuple(key)

    def read(self, a: int, b: int) -> np.ndarray:
        """Rows ``[a, b)`` of the view, sample axis first."""
        out = self.array._getitem(self._key(a, b))
        return out if self.row_axis == 0 else np.moveaxis(out, self.row_axis, 0)

    def read_into(self, a: int, b: int, out: np.ndarray, dst: np.ndarray | None = None) -> None:
        """Rows ``[a, b)`` of the view into ``out`` (``out[dst]`` when given), without a
        fresh array where it can: decoded chunks go straight to their rows."""
        if self.row_axis == 0:
            self.array._getitem(self._key(a, b), out, dst)
        else:
            out[... if dst is None else dst] = self.read(a, b)

    def scatter(
        self,
        a: int,
        b: int,
        out: np.ndarray,
        dst: np.ndarray | None,
        pending: Pending | None = None,
    ) -> bool:
        """Rows ``[a, b)`` written to ``out[dst]`` (``dst=None``: to ``out`` in order) by
        one ``preadv`` per run of rows in the file (no intermediate copy; in a remote
        file, one range request per run, many in flight), when they are stored that
        way; else ``False``. Small rows (labels) are read in runs and placed
        by numpy: one iovec per 8-byte row costs more than the copy. With ``pending``
        the copies are handed to the decode pool: ``out`` is complete after
        ``pending.wait()``.
        """
        if self.row_axis != 0:
            return False
        small = dst is not None and out[:1].nbytes < SMALL_ROW
        arr = self.array
        try:
            copy = self._copies(a, b)
        except file_rows.Compressed:
            return False  # read (and decoded in parallel) by the caller
        if copy is None:
            with arr.store.lock:
                dset = arr._dataset_unlocked()
                found = file_rows.row_copy(dset, arr.shape, self._key(a, b), arr.store.ranges())
            if found is None:
                return False
            copy = found[0]
        if pending is not None and not small:
            pending.then(copy.file.close)  # first: closed whatever happens
            pending.then(functools.partial(copy.fill, out, dst))
            for task in copy.tasks(out, dst):
                pending.submit(functools.partial(self._checked, task))
            return True
        if small:
            self._checked(lambda: out.__setitem__(dst, copy.run()))
        else:
            self._checked(functools.partial(copy.run, out, dst))
        return True

    def _checked(self, task: Callable[[], Any]) -> None:
        """Run a copy from the file; a short read means a damaged or truncated file."""
        with self.array.damage_reported():
            task()


def direct_source(view: xr.DataArray, dim: Hashable) -> DirectSource | None:
    """How to read ``view`` directly, or ``None`` when dask must compute it (see
    :func:`~lazyh5.backend.view.stored_region`)."""
    found = stored_region(view)
    if found is None:
        return None
    arr, key = found
    return DirectSource(arr, key, view.dims.index(dim))
