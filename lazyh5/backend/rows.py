"""Rows copied straight from the file, and the chunk-address table they are found by.

A dataset chunked by whole rows whose chunks are stored plain (unfiltered, or left as
is by a filter that could not shrink them) holds each run of rows as consecutive
bytes of the file. In a file open read-only through the default (sec2) driver, those
bytes are copied with ``os.preadv`` straight into the output, outside the HDF5 lock
and the GIL: h5py copies them one chunk at a time holding both. In a remote file
(a URL) they are fetched by byte range, many requests in flight
(:mod:`lazyh5.backend.ranges`).
"""

from __future__ import annotations

import functools
import math
import os
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from . import decode
from .ranges import LocalBytes, RangeReader, iovecs, scatters
from .threads import run_each

Bytes = LocalBytes | RangeReader

# Chunk address tables up to this many chunks (8 bytes each) are read in one pass.
_TABLE_MAX = 1 << 20
_COMPRESSED = -2  # in a chunk table: a chunk stored through its filters
# Copies of small chunks are grouped into tasks of at least this many bytes.
_TASK_BYTES = 1 << 20
# Chunks back to back in the file are copied as one run of up to this many bytes (a
# few per 16 MiB block, so the decode threads share a block's runs).
_RUN_BYTES = 4 << 20
# ... and copies from a remote file into tasks of this many (each task's requests are
# all in flight together; a few tasks run at once in the decode pool).
_REMOTE_TASK_BYTES = 16 << 20


class Compressed(Exception):
    """A chunk is stored through its filters: it has to be decoded, not copied."""


@dataclass
class RowCopy:
    """Rows of a dataset chunked by whole rows, copied straight from the file.

    ``copies`` are ``(file offset, first row, rows)`` runs of consecutive rows, relative
    to the selection; ``fills`` the ``(first row, values)`` of unallocated chunks, read
    by h5py (it knows the fill value semantics). ``file`` gives the bytes: for a local
    file a duplicate of its descriptor (ours to close, and valid even if h5py closes
    the file meanwhile), for a remote one its range reader.
    """

    file: Bytes
    rows: int
    row_shape: tuple[int, ...]
    dtype: np.dtype
    copies: list[tuple[int, int, int]]
    fills: list[tuple[int, np.ndarray]]

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * self.dtype.itemsize

    def run(self, out: np.ndarray | None = None, dst: np.ndarray | None = None) -> np.ndarray:
        """Copy the rows into ``out[dst]`` (default: a new array, in order); close ``file``.

        ``os.preadv`` releases the HDF5 lock and the GIL, so chunks are copied in
        parallel while batches keep flowing to the training thread, and a scatter
        (``dst``) costs no extra copy: each run of rows is read by one ``preadv`` into
        the rows' destinations.
        """
        try:
            if out is None:
                out = np.empty((self.rows, *self.row_shape), self.dtype)
            run_each(_call, self.tasks(out, dst), self.rows * self.row_bytes)
        finally:
            self.file.close()
        self.fill(out, dst)
        return out

    def tasks(self, out: np.ndarray, dst: np.ndarray | None) -> list[Callable[[], None]]:
        """Calls copying the runs of rows to ``out[dst]``, each run of at least
        :data:`_TASK_BYTES` where runs are smaller (chunks of a few rows: a task per
        run costs a pool hand-off each); run them in any threads and order, then
        :meth:`fill` and close ``file`` (what :meth:`run` does)."""
        size = self.row_bytes
        flat = memoryview(out.reshape(-1).view(np.uint8))
        if self.file.remote:
            return self._remote_tasks(flat, dst)

        iov = None if dst is None else iovecs(out, dst * size, size)  # one for all runs

        def one(where: int, first: int, n: int) -> None:
            # Both raise at a short read (a truncated file).
            if iov is None:
                self.file.readv([flat[first * size : (first + n) * size]], where)
            else:
                self.file.scatter(iov, first, n, where)

        calls = [functools.partial(one, *copy) for copy in self.copies]
        per = max(1, _TASK_BYTES // max(1, self.rows * size // max(1, len(calls))))
        if per == 1:
            return calls
        return [functools.partial(_each, calls[i : i + per]) for i in range(0, len(calls), per)]

    def _remote_tasks(self, flat: memoryview, dst: np.ndarray | None) -> list[Callable[[], None]]:
        """Tasks placing the runs of rows of a remote file, :data:`_REMOTE_TASK_BYTES` at
        a time. Their requests are sent now, in the background (neighbours coalesced):
        a loader's window has all its blocks in flight at once, however few threads
        then copy them."""
        size, tasks, group, total = self.row_bytes, [], [], 0
        for i, copy in enumerate(self.copies):
            group.append(copy)
            total += copy[2] * size
            if total >= _REMOTE_TASK_BYTES or i == len(self.copies) - 1:
                ranges = [(where, where + n * size) for where, _, n in group]
                pending = self.file.start(ranges)
                tasks.append(functools.partial(self._place, group, pending, flat, dst))
                group, total = [], 0
        return tasks

    def _place(
        self, copies: list, pending: Future, flat: memoryview, dst: np.ndarray | None
    ) -> None:
        size = self.row_bytes
        for (_, first, n), data in zip(copies, pending.result(), strict=True):
            if dst is None:
                flat[first * size : (first + n) * size] = data
            else:
                rows = np.frombuffer(data, np.uint8).reshape(n, size)
                flat_rows = np.asarray(flat).reshape(-1, size)
                flat_rows[dst[first : first + n]] = rows

    def fill(self, out: np.ndarray, dst: np.ndarray | None) -> None:
        """The rows of unallocated chunks (their fill values) into ``out[dst]``."""
        for first, values in self.fills:
            if dst is None:
                out[first : first + len(values)] = values
            else:
                out[dst[first : first + len(values)]] = values


def _call(task: Callable[[], Any]) -> Any:
    return task()


def _each(tasks: list[Callable[[], Any]]) -> None:
    for task in tasks:
        task()


def stored_plain(fmt: decode.ChunkFormat, filter_mask: int, size: int) -> bool:
    """Whether a chunk's bytes in the file are its values: no filters, or every filter
    skipped for it (HDF5 stores a chunk that a filter such as gzip or lzf cannot
    shrink as is, with the filter's bit set in the chunk's mask)."""
    every = (1 << len(fmt.filters)) - 1
    return filter_mask & every == every and size == fmt.nbytes


def chunk_offset(dset: h5py.Dataset, fmt: decode.ChunkFormat, coord: tuple[int, ...]) -> int | None:
    """File offset of the chunk at ``coord`` (called under the lock): ``None`` when
    unallocated; raises :class:`Compressed` unless it is :func:`stored_plain`."""
    info = dset.id.get_chunk_info_by_coord(coord)
    if info.byte_offset is None:
        return None
    if fmt.filters and not stored_plain(fmt, info.filter_mask, info.size):
        raise Compressed(coord)
    return info.byte_offset


def row_copy(
    dset: h5py.Dataset, shape: Sequence[int], key: tuple, ranges: RangeReader | None = None
) -> tuple[RowCopy, bool] | None:
    """A :class:`RowCopy` for ``dset[key]`` (called under the lock), and whether ``key``
    drops the row axis (an integer); ``None`` unless ``key`` is a run of rows (other
    axes whole) of a dataset chunked by whole rows whose chunks there are stored plain
    (:func:`stored_plain`), in a file open read-only through the default (sec2) driver
    or a remote file (``ranges``, its byte ranges).
    """
    fmt = decode.format_of(dset)
    if fmt is None or len(key) != len(shape) or not shape:
        return None
    rows, rest = key[0], key[1:]
    drop = isinstance(rows, int | np.integer)
    if drop:
        i = int(rows) + (shape[0] if rows < 0 else 0)
        if not 0 <= i < shape[0]:
            return None  # h5py raises its own IndexError
        rows = slice(i, i + 1)
    if not isinstance(rows, slice) or tuple(fmt.chunks[1:]) != tuple(shape[1:]):
        return None
    if any(
        not (isinstance(k, slice) and k.indices(n) == (0, n, 1))
        for k, n in zip(rest, shape[1:], strict=True)
    ):
        return None
    start, stop, step = rows.indices(shape[0])
    if step != 1 or dset.file.mode != "r":
        return None  # a file open for writing may hold newer data in HDF5's chunk cache
    if ranges is None and (dset.file.driver != "sec2" or not scatters()):
        return None
    stop = max(start, stop)
    row_bytes = math.prod(shape[1:]) * fmt.dtype.itemsize
    tail = (0,) * (len(shape) - 1)
    try:
        copies, holes = row_runs(
            start, stop, fmt.chunks[0], row_bytes, lambda r: chunk_offset(dset, fmt, (r, *tail))
        )
    except Compressed:
        return None  # decoded (in parallel) instead
    fills = [(lo - start, dset[lo:hi]) for lo, hi in holes]
    source = ranges if ranges is not None else LocalBytes(os.dup(dset.file.id.get_vfd_handle()))
    copy = RowCopy(source, stop - start, tuple(shape[1:]), fmt.dtype, copies, fills)
    return copy, drop


def row_runs(
    start: int,
    stop: int,
    chunk_rows: int,
    row_bytes: int,
    address: Callable[[int], int | None],
    limit: int | None = None,
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """Rows ``[start, stop)`` of a dataset chunked by whole rows, chunk by chunk.

    ``address(first_row_of_chunk)`` is the chunk's byte offset in the file, ``None``
    when unallocated. Returns the :class:`RowCopy` runs ``(file offset, first row,
    rows)``, rows counted from ``start``, and the ``(lo, hi)`` file rows of
    unallocated chunks. Chunks that lie back to back in the file (as HDF5 usually
    writes them) make one run, up to ``limit`` bytes (default :data:`_RUN_BYTES`) or
    one chunk.

    Examples
    --------
    >>> from lazyh5.backend.rows import row_runs
    >>> row_runs(2, 7, 4, 10, lambda row: None if row == 4 else 1000 + row)
    ([(1020, 0, 2)], [(4, 7)])
    >>> row_runs(0, 12, 4, 10, lambda row: 1000 + 10 * row)  # back to back: one run
    ([(1000, 0, 12)], [])
    """
    c, limit = chunk_rows, _RUN_BYTES if limit is None else limit
    copies: list[tuple[int, int, int]] = []
    holes = []
    for ci in range(start // c, (stop - 1) // c + 1 if stop > start else 0):
        lo, hi = max(start, ci * c), min(stop, (ci + 1) * c)
        where = address(ci * c)
        if where is None:
            holes.append((lo, hi))
            continue
        where += (lo - ci * c) * row_bytes
        if copies:
            at, first, n = copies[-1]
            # One preadv per run: with small chunks (16 rows of 12 KiB), a call each
            # cost more CPU than the copies.
            back_to_back = at + n * row_bytes == where and first + n == lo - start
            if back_to_back and (n + hi - lo) * row_bytes <= limit:
                copies[-1] = (at, first, n + hi - lo)
                continue
        copies.append((where, lo - start, hi - lo))
    return copies, holes


class RowFile:
    """Where the whole-row chunks of one dataset lie in its file, looked up once.

    Per block, asking HDF5 again (the dataset, its filters and type, each chunk's
    address, a descriptor) costs as much under the HDF5 lock as copying a chunk. The
    file is open read-only, so chunk addresses do not move; ``file`` gives its bytes
    (for a local file our own duplicate of its descriptor, closed when this object
    goes away).
    """

    def __init__(
        self,
        copy: RowCopy,
        chunk_rows: int,
        lookup: Callable[[int], int | None],
        table: np.ndarray | None = None,
    ):
        self.file = copy.file
        self.chunk_rows = chunk_rows
        self.row_bytes = copy.row_bytes
        self.row_shape = copy.row_shape
        self.dtype = copy.dtype
        self.lookup = lookup  # first row of a chunk -> its byte offset, asking HDF5
        # every chunk's offset (-1: unallocated, -2: compressed), when read in one pass
        self.table = table
        self.offsets: dict[int, int | None] = {}
        weakref.finalize(self, self.file.close)

    def address(self, row: int) -> int | None:
        """Byte offset of the chunk starting at ``row`` (asked of HDF5 once): ``None``
        if unallocated; raises :class:`Compressed` if it has to be decoded."""
        if self.table is not None:
            where = int(self.table[row // self.chunk_rows])
            if where == _COMPRESSED:
                raise Compressed(row)
            return None if where < 0 else where
        if row not in self.offsets:
            self.offsets[row] = self.lookup(row)
        return self.offsets[row]

    def copy(self, start: int, stop: int) -> RowCopy | None:
        """A :class:`RowCopy` of file rows ``[start, stop)`` (``None`` if a chunk is
        unallocated: its fill value comes from h5py); raises :class:`Compressed` if a
        chunk has to be decoded."""
        copies, holes = row_runs(start, stop, self.chunk_rows, self.row_bytes, self.address)
        if holes:
            return None
        return RowCopy(self.file.dup(), stop - start, self.row_shape, self.dtype, copies, [])

    def gather(self, rows: np.ndarray, out: np.ndarray) -> bool:
        """File rows ``rows`` (any order) into ``out``, one range each, fetched all at
        once (a remote file: requests in flight together); ``False`` if a chunk is
        unallocated; raises :class:`Compressed` if one has to be decoded."""
        size, chunk = self.row_bytes, self.chunk_rows
        ranges = []
        for r in rows.tolist():
            where = self.address(r - r % chunk)
            if where is None:
                return False
            ranges.append((where + r % chunk * size, where + (r % chunk + 1) * size))
        flat = out.reshape(len(ranges), -1).view(np.uint8)
        for j, data in enumerate(self.file.fetch(ranges)):
            flat[j] = np.frombuffer(data, np.uint8)
        return True


def chunk_table(dset: h5py.Dataset, fmt: decode.ChunkFormat) -> np.ndarray | None:
    """The byte offset of every chunk of a dataset chunked by whole rows (-1 where
    unallocated, -2 where stored compressed), in one pass over its chunk index;
    ``None`` where HDF5 has no such pass or the table would be large.

    Asked chunk by chunk from the loader's prefetch thread, each lookup takes the HDF5
    lock and the GIL from the training thread; ``chunk_iter`` reads them all at once.
    """
    chunk_rows = fmt.chunks[0]
    count = -(-dset.shape[0] // chunk_rows)
    if not hasattr(dset.id, "chunk_iter") or count > _TABLE_MAX:
        return None
    table = np.full(count, -1, np.int64)

    def seen(info: Any) -> None:
        plain = stored_plain(fmt, info.filter_mask, info.size)
        table[info.chunk_offset[0] // chunk_rows] = info.byte_offset if plain else _COMPRESSED

    dset.id.chunk_iter(seen)
    return table


def row_file(
    get_dataset: Callable[[], h5py.Dataset],
    lock: Any,
    shape: Sequence[int],
    ranges: RangeReader | None = None,
) -> RowFile | None:
    """The :class:`RowFile` of a dataset (``get_dataset()`` under ``lock``, the HDF5
    lock; ``ranges``: a remote file's byte ranges), or ``None`` when its rows cannot be
    copied from the file."""
    tail = (0,) * (len(shape) - 1)
    with lock:
        dset = get_dataset()
        probe = row_copy(dset, shape, (slice(0, 0),) + (slice(None),) * len(tail), ranges)
        fmt = decode.format_of(dset) if probe is not None else None
        table = chunk_table(dset, fmt) if fmt is not None else None
    if probe is None or fmt is None:
        return None

    def lookup(row: int) -> int | None:
        with lock:
            return chunk_offset(get_dataset(), fmt, (row, *tail))

    return RowFile(probe[0], fmt.chunks[0], lookup, table)
