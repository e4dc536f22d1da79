"""Write values into a :class:`~lazyh5.backend.view.Target`, region by region.

Everything is validated (cast, shape, bounds, file mode) before the first byte is
written. Numpy values are written in slabs of about one dask block; lazy values are
computed block by block and each block written as soon as it is ready. A lazy value
that reads the target itself is staged in a temporary file first, so no block is
overwritten before every read of it has happened.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import math
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import h5py
import numpy as np
import xarray as xr

from ..backend.chunking import chunk_memory, dask_chunks
from ..backend.view import Target, h5_sources
from ..errors import DimensionError, InvalidArgumentError, UnsupportedDtypeError
from .graph import (
    analyze,
    block_regions,
    distributed_client,
    precompute_shared,
    progress_bar,
    store_blocks,
    target_reads,
)

__all__ = ["assign", "checked_value"]

_Run = tuple[slice, slice | np.ndarray]  # (file slice, positions in the value)

#: Attributes an assignment of several blocks keeps on the dataset while it runs: the
#: blocks (``DONE_MARKS_LAYOUT``, JSON) and one uint8 per block, 1 once the block is
#: written and on disk (``DONE_MARKS``). Both are removed when the assignment ends;
#: a process killed (or an assignment failing) midway leaves them, saying how far it got.
DONE_MARKS_LAYOUT = "_lazyh5_assign_blocks"
DONE_MARKS = "_lazyh5_assign_done"


def _axis_runs(axis: range | np.ndarray) -> list[_Run]:
    """Increasing file slices covering ``axis``, each with the value positions it takes."""
    n = len(axis)
    if n == 0:
        return []
    if isinstance(axis, range):
        if axis.step > 0:
            return [(slice(axis.start, axis[-1] + 1, axis.step), slice(None))]
        return [(slice(axis[-1], axis.start + 1, -axis.step), slice(n - 1, None, -1))]
    order = np.argsort(axis, kind="stable")
    ordered = axis[order]
    # Repeated positions: the last one wins, as in numpy's `a[[1, 1]] = [x, y]`.
    last = np.append(ordered[1:] != ordered[:-1], True)
    ordered, order = ordered[last], order[last]
    breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
    runs = []
    for f, o in zip(np.split(ordered, breaks), np.split(order, breaks), strict=True):
        src: slice | np.ndarray = o
        if len(o) and (np.diff(o) == 1).all():
            src = slice(int(o[0]), int(o[-1]) + 1)
        runs.append((slice(int(f[0]), int(f[-1]) + 1), src))
    return runs


class _Writer:
    """Writes blocks given in the target's selection space into the HDF5 dataset."""

    def __init__(self, target: Target):
        self.target = target
        self.store = target.array.store

    def write(self, region: tuple[slice, ...], block: np.ndarray) -> None:
        t = self.target
        sel_axes = [a for a in t.axes if not isinstance(a, int)]
        runs = [_axis_runs(a[r]) for a, r in zip(sel_axes, region, strict=True)]
        block = np.asarray(block)
        for piece in itertools.product(*runs):
            file_key: list[Any] = []
            it = iter(piece)
            for a in t.axes:
                file_key.append(a if isinstance(a, int) else next(it)[0])
            values = block
            for i, (_fs, src) in enumerate(piece):
                values = values[(slice(None),) * i + (src,)]
            values = np.ascontiguousarray(values, dtype=t.dtype)
            with self.store.lock:
                dset = self.store.acquire(needs_lock=False)[t.path]
                dset[tuple(file_key)] = values

    def flush(self) -> None:
        with self.store.lock:
            self.store.acquire(needs_lock=False).flush()


class _DoneMarks:
    """Which blocks of a running assignment are written, recorded on the dataset.

    Created before the first block (attributes of fixed size, flushed), updated after
    each block, removed at the end. After each block one flush puts that block's data
    (and the marks of earlier blocks) on disk; the block's own mark follows with the
    next flush, so a mark never reaches the disk before its data. The mark is rewritten
    in place (same size), so updating it does not move any metadata.
    """

    def __init__(self, writer: _Writer, chunks: tuple[tuple[int, ...], ...]):
        self.writer = writer
        self.numblocks = tuple(len(c) for c in chunks)
        self.done = np.zeros(int(np.prod(self.numblocks)), dtype=np.uint8)
        t = writer.target
        layout = {
            "selection": [a if isinstance(a, int) else _axis_repr(a) for a in t.axes],
            "blocks": [list(c) for c in chunks],
            "order": "C",
        }
        with writer.store.lock:
            f = writer.store.acquire(needs_lock=False)
            dset = f[t.path]
            dset.attrs[DONE_MARKS_LAYOUT] = json.dumps(layout)
            dset.attrs.create(DONE_MARKS, self.done)
            f.flush()

    def mark(self, idx: tuple[int, ...]) -> None:
        """Record block ``idx`` (written just before) as done."""
        with self.writer.store.lock:
            f = self.writer.store.acquire(needs_lock=False)
            f.flush()  # this block's data (and earlier marks) reach the disk first
            self.done[np.ravel_multi_index(idx, self.numblocks)] = 1
            f[self.writer.target.path].attrs.modify(DONE_MARKS, self.done)

    def finish(self) -> None:
        with self.writer.store.lock:
            f = self.writer.store.acquire(needs_lock=False)
            f.flush()
            attrs = f[self.writer.target.path].attrs
            for name in (DONE_MARKS, DONE_MARKS_LAYOUT):
                if name in attrs:
                    del attrs[name]
            f.flush()


def _axis_repr(axis: range | np.ndarray) -> Any:
    if isinstance(axis, range):
        return [axis.start, axis.stop, axis.step]
    return {"positions": len(axis)}


# One uint8 per block in an attribute stored in the object header (64 KiB at most).
_MAX_MARKED_BLOCKS = 60_000


def _done_marks(writer: _Writer, chunks: tuple[tuple[int, ...], ...]) -> _DoneMarks | None:
    """Done marks for assignments of 2 to 60,000 blocks (else ``None``)."""
    n = int(np.prod([len(c) for c in chunks]))
    return _DoneMarks(writer, chunks) if 1 < n <= _MAX_MARKED_BLOCKS else None


def _as_array(value: Any, target: Target) -> Any:
    if isinstance(value, xr.Dataset):
        raise TypeError(f"cannot write to {target.label}: expected an array, got a Dataset")
    if isinstance(value, xr.DataArray):
        extra = [d for d in value.dims if d not in target.dims]
        if extra:
            raise DimensionError(
                f"cannot write to {target.label}: the value has dimension(s) {extra} that "
                f"the selection {target.dims} does not have"
            )
        value = value.transpose(*[d for d in target.dims if d in value.dims])
        data = value.data
        expand = tuple(slice(None) if d in value.dims else None for d in target.dims)
        return data[expand] if None in expand else data
    if isinstance(value, da.Array | np.ndarray):
        return value
    if isinstance(value, bool | int | float | complex | np.generic):
        return value
    return np.asarray(value)


def checked_value(value: Any, target: Target) -> Any:
    """``value`` as an array (or scalar) to write to ``target``; raises a clear error
    when its dimensions, shape or dtype do not fit."""
    value = _as_array(value, target)
    _check(value, target)
    return value


def _check(value: Any, target: Target) -> None:
    dtype = target.dtype
    if isinstance(value, bool | int | float | complex) and not isinstance(value, np.generic):
        src = np.min_scalar_type(value) if isinstance(value, int) else np.dtype(type(value))
        if isinstance(value, int) and not isinstance(value, bool) and dtype.kind in "iu":
            info = np.iinfo(dtype)
            if not info.min <= value <= info.max:
                raise InvalidArgumentError(
                    f"cannot write {value} to {target.label}: out of range for {dtype} "
                    f"[{info.min}, {info.max}]"
                )
            return
        shape: tuple[int, ...] = ()
    else:
        src, shape = np.dtype(value.dtype), tuple(value.shape)
    if not np.can_cast(src, dtype, casting="same_kind"):
        raise UnsupportedDtypeError(
            f"cannot write {src} values to {target.label}: the file holds {dtype} and "
            f"the cast is not 'same_kind' (convert explicitly with .astype({str(dtype)!r}))"
        )
    try:
        ok = np.broadcast_shapes(shape, target.shape) == target.shape
    except ValueError:
        ok = False
    if not ok:
        raise DimensionError(
            f"cannot write a value of shape {shape} to {target.label}: the selection has "
            f"shape {target.shape} {target.dims}; expected a shape that broadcasts to it"
        )


def _file_blocks(target: Target) -> list[int]:
    """Block length along each selection axis: whole HDF5 chunks of about a dask block."""
    arr = target.array
    with arr.store.lock:
        chunks = arr.store.acquire(needs_lock=False)[target.path].chunks
    planned = dask_chunks(target.file_shape, chunks, target.dtype)  # each at least 1
    return [b for a, b in zip(target.axes, planned, strict=True) if not isinstance(a, int)]


def _aligned_chunks(target: Target, blocks: list[int]) -> tuple[tuple[int, ...], ...]:
    chunks = []
    sel_axes = [a for a in target.axes if not isinstance(a, int)]
    for axis, b in zip(sel_axes, blocks, strict=True):
        n = len(axis)  # not 0: an empty selection writes nothing
        if isinstance(axis, range) and axis.step == 1:
            # Cut where the file's blocks start, so each block covers whole HDF5 chunks.
            first = min(n, b - axis.start % b)
            sizes = [first] + [b] * ((n - first) // b)
            rest = n - sum(sizes)
            chunks.append(tuple(sizes + ([rest] if rest else [])))
        else:
            chunks.append(tuple([b] * (n // b) + ([n % b] if n % b else [])))
    return tuple(chunks)


def _slabs(shape: tuple[int, ...], itemsize: int) -> Iterator[tuple[slice, ...]]:
    budget = chunk_memory()  # the value is in memory already; this bounds h5py's copies
    if not shape:
        yield ()
        return
    row = math.prod(shape[1:]) * itemsize  # no axis is empty: at least 1
    step = max(1, budget // row)
    for start in range(0, shape[0], step):
        yield (slice(start, min(shape[0], start + step)), *tuple(slice(None) for _ in shape[1:]))


def assign(target: Target, value: Any, *, progress: bool = True) -> None:
    """Write ``value`` (numpy-broadcast to the target's shape) into the file."""
    value = checked_value(value, target)
    writer = _Writer(target)
    shape = target.shape
    if 0 in shape:
        return
    if not isinstance(value, da.Array):
        full = np.broadcast_to(np.asarray(value), shape)
        slabs = list(_slabs(shape, target.dtype.itemsize))
        rows = tuple(r[0].stop - r[0].start for r in slabs) if shape else ()
        marks = _done_marks(writer, (rows, *((n,) for n in shape[1:])) if shape else ())
        for i, region in enumerate(slabs):
            writer.write(region, full[region])
            if marks is not None:
                marks.mark((i,) + (0,) * (len(shape) - 1))
        if marks is not None:
            marks.finish()
        writer.flush()
        return
    with _scheduler_for(value):
        lazy = da.broadcast_to(value, shape).rechunk(_aligned_chunks(target, _file_blocks(target)))
        lazy = precompute_shared(lazy)
        reads_self = any(
            s.store.filename == target.source and s.path == target.path for s in h5_sources(lazy)
        )
        desc = f"{target.name} ← {os.path.basename(target.source)}"
        if not reads_self or _in_place_safe(lazy, target):
            # A cluster-locked target (opened r+ under a dask.distributed Client) is
            # written by the workers that compute the blocks, under the file's lock.
            on_workers = target.array.store.cluster_locked
            # Done marks are kept by this process; blocks written on workers have none.
            marks = None if on_workers else _done_marks(writer, lazy.chunks)
            store_blocks(
                lazy,
                functools.partial(_write_block, writer)
                if marks is None
                else functools.partial(_write_marked, writer, marks),
                desc=desc,
                progress=progress,
                on_workers=on_workers,
            )
            if marks is not None:
                marks.finish()
        else:
            _staged(lazy, target, writer, desc, progress)
    writer.flush()


def _write_block(writer: _Writer, _idx: tuple[int, ...], region: tuple[slice, ...], block) -> None:
    writer.write(region, block)


def _write_marked(
    writer: _Writer, marks: _DoneMarks, idx: tuple[int, ...], region: tuple[slice, ...], block
) -> None:
    writer.write(region, block)
    marks.mark(idx)


def _scheduler_for(value: da.Array) -> Any:
    """The local threaded scheduler when the cluster could not read ``value``.

    A file opened ``mode="r+"`` before the dask.distributed Client was created has a
    lock that only works in this process, which also holds the file open: workers
    could not open it. Values that read such a file are computed here instead.
    """
    if distributed_client() is None or not any(
        s.store.mode == "r+" and not s.store.cluster_locked for s in h5_sources(value)
    ):
        return contextlib.nullcontext()
    return dask.config.set(scheduler="threads")


def _in_place_safe(lazy: da.Array, target: Target) -> bool:
    """Whether each block reads the target only inside the region it writes itself.

    Then blocks are independent (shared reductions were computed first) and writing
    in place is safe: ``x.h5[:] = (x - m) / s`` costs one read and one write.
    Anything we cannot prove (shifts, flips, index arrays, unrecognised reads) is
    staged through a temporary file instead.
    """
    if not all(isinstance(a, int) or (isinstance(a, range) and a.step == 1) for a in target.axes):
        return False
    dsk, deps, owner = analyze(lazy)
    reads = target_reads(dsk, deps, target.source, target.path)
    if reads is None:
        return False
    regions = block_regions(lazy.chunks)
    for key, read in reads.items():
        if key not in owner:
            continue  # culled: never computed
        out = owner[key]
        if out is None:
            return False
        it = iter(regions[tuple(out[1:])])
        for axis, r in zip(target.axes, read, strict=True):
            if isinstance(axis, int):
                lo, hi = axis, axis + 1
            else:
                sel = next(it)
                lo, hi = axis.start + sel.start, axis.start + sel.stop
            if r.start < lo or r.stop > hi:
                return False
    return True


def _staged(lazy: da.Array, target: Target, writer: _Writer, desc: str, progress: bool) -> None:
    # The value reads the dataset it is written to: writing block i could change what a
    # later block still has to read (shifts, flips, reductions). Compute it all into a
    # temporary file next to the target first, then copy; the file is untouched until
    # every read has happened.
    folder = os.path.dirname(target.source)
    fd, tmp = tempfile.mkstemp(prefix=".lazyh5-stage-", suffix=".h5", dir=folder)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            chunks = tuple(max(1, max(c)) for c in lazy.chunks)
            stage = f.create_dataset("stage", lazy.shape, target.dtype, chunks=chunks)

            def put(_idx: tuple[int, ...], region: tuple[slice, ...], block: np.ndarray) -> None:
                stage[region] = block.astype(target.dtype, copy=False)

            store_blocks(lazy, put, desc=f"{desc} (staging)", progress=progress, scheduler=None)
            regions = block_regions(lazy.chunks)
            marks = _done_marks(writer, lazy.chunks)
            with progress_bar(len(regions), desc, progress) as bar:
                for idx, region in regions.items():
                    writer.write(region, stage[region])
                    if marks is not None:
                        marks.mark(idx)
                    bar.update(1)
            if marks is not None:
                marks.finish()
    finally:
        os.unlink(tmp)
