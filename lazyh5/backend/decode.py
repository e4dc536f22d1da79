"""Parallel chunk decoding: raw chunks are read under the HDF5 lock, decoded outside it.

h5py (and HDF5 itself) serialise every call behind one global lock, so reading a
compressed dataset from several threads decodes one chunk at a time. For chunked
datasets whose whole filter pipeline we can decode with GIL-releasing codecs, we only
hold the lock for ``read_direct_chunk`` (a copy of the compressed bytes) and then
decompress in the calling thread, or a small shared thread pool when a selection spans
several chunks. Dask tasks (threads or worker processes) and the BatchLoader both go
through :meth:`H5BackendArray._getitem`, so they all decode in parallel.

Anything we cannot decode exactly falls back to h5py's own read, so results are always
byte-identical to ``dset[key]``:

- filters other than gzip/deflate, shuffle, Blosc (1), Zstd, LZ4 and (with imagecodecs
  installed) h5py's LZF — fletcher32, scaleoffset, nbit, szip, bitshuffle, Blosc2,
  unknown plugins;
- contiguous, compact and virtual datasets; strings and other variable-length types;
- file types whose bytes are not the numpy dtype's bytes (e.g. non-IEEE floats,
  odd-precision integers), detected by comparing the HDF5 type with the one h5py
  would create for the numpy dtype;
- unallocated chunks (h5py supplies the fill value for that chunk's region).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

# HDF5 filter ids (the HDF Group's registry).
GZIP, SHUFFLE, LZF, LZ4, BLOSC, ZSTD = 1, 2, 32000, 32004, 32001, 32015

# Below this many decoded bytes per selection, handing chunks to the pool costs more
# than it saves (measured: ~30 µs per pool round trip vs ~1 ms to inflate 256 KiB).
_POOL_MIN_BYTES = 1 << 20
_MIN_CHUNK_BYTES = 64 << 10


def _unshuffle(buf: Any, itemsize: int, _size: int) -> Any:
    # HDF5's shuffle stores byte k of every element together; a tail shorter than one
    # element is left as is. One strided numpy copy per byte plane (GIL released):
    # 0.9 ms per 3 MiB chunk, vs 2.6 ms for one transposed copy and 1.0 ms for
    # numcodecs.Shuffle, which holds the GIL.
    if itemsize <= 1:
        return buf
    raw = np.frombuffer(buf, dtype=np.uint8)
    n = raw.size // itemsize
    out = np.empty_like(raw)
    planes = raw[: n * itemsize].reshape(itemsize, n)
    dest = out[: n * itemsize].reshape(n, itemsize)
    for k in range(itemsize):
        dest[:, k] = planes[k]
    out[n * itemsize :] = raw[n * itemsize :]
    return out


# Compressors decode into at most ``size`` bytes (the plain chunk), so a damaged or
# hostile chunk cannot make us allocate more than the chunk's own size.


def _lz4_hdf5(buf: bytes, _itemsize: int, size: int) -> bytes:
    # The HDF5 LZ4 filter (id 32004) frame: big-endian uint64 total size, uint32 block
    # size, then per block a big-endian uint32 compressed size and the LZ4 block (a
    # block whose compressed size equals its plain size is stored as is).
    from numcodecs import lz4

    total, block = struct.unpack_from(">QI", buf, 0)
    if total != size or block <= 0:
        raise ValueError(f"LZ4 frame of {total} bytes, expected {size}")
    pos, parts, done = 12, [], 0
    while done < total:
        plain = min(block, total - done)
        (n,) = struct.unpack_from(">I", buf, pos)
        pos += 4
        data = buf[pos : pos + n]
        pos += n
        if n == plain:
            parts.append(data)
        else:  # numcodecs' LZ4 expects its own little-endian size header
            parts.append(lz4.decompress(struct.pack("<i", plain) + data, bytearray(plain)))
        done += plain
    return b"".join(parts)


def _blosc(buf: bytes, _itemsize: int, size: int) -> Any:
    from numcodecs import blosc

    return blosc.decompress(buf, np.empty(size, np.uint8))  # refuses a bigger header


def _zstd(buf: bytes, _itemsize: int, size: int) -> Any:
    from numcodecs import zstd

    return zstd.decompress(buf, np.empty(size, np.uint8))  # refuses a bigger frame


def _gzip(buf: Any, _itemsize: int, size: int) -> bytes:
    # CPython releases the GIL while inflating; one byte over ``size`` is enough to
    # see that the stream is too long.
    return zlib.decompressobj().decompress(buf, size + 1)


def _lzf(buf: Any, _itemsize: int, size: int) -> Any:
    # h5py's LZF filter stores the bare LZF stream. h5py decodes it holding its global
    # lock, one chunk at a time: 6.1 ms per 3 MiB chunk read; imagecodecs' liblzf
    # decodes one in 3.0 ms with the GIL released, so chunks decode in parallel.
    import imagecodecs

    return imagecodecs.lzf_decode(buf, header=False, out=size)  # refuses a longer stream


def _available_decoders() -> dict[int, Callable[[Any, int], Any]]:
    decoders: dict[int, Callable[[Any, int, int], Any]] = {GZIP: _gzip, SHUFFLE: _unshuffle}
    try:
        import numcodecs.blosc
        import numcodecs.lz4
        import numcodecs.zstd  # noqa: F401
    except ImportError:  # numcodecs is optional: those filters fall back to h5py
        pass
    else:
        decoders.update({BLOSC: _blosc, ZSTD: _zstd, LZ4: _lz4_hdf5})
    try:
        import imagecodecs
    except ImportError:  # optional too: without it h5py decodes LZF (serially)
        return decoders
    if imagecodecs.LZF.available:
        decoders[LZF] = _lzf
    return decoders


DECODERS = _available_decoders()


@dataclass(frozen=True)
class ChunkPlan:
    """What is needed to decode one dataset's chunks without h5py."""

    chunks: tuple[int, ...]
    dtype: np.dtype
    filters: tuple[int, ...]  # in encoding order, as stored in the pipeline

    @property
    def nbytes(self) -> int:
        return math.prod(self.chunks) * self.dtype.itemsize


def plan_for(dset: h5py.Dataset) -> ChunkPlan | None:
    """The decode plan for ``dset``, or ``None`` when h5py must read it itself."""
    if dset.chunks is None or dset.is_virtual or dset.dtype.hasobject:
        return None
    if not hasattr(dset.id, "get_chunk_info_by_coord"):  # HDF5 < 1.10.5
        return None
    if not _packed(dset.dtype):  # padding bytes are undefined: h5py's may differ from ours
        return None
    # The raw bytes are the numpy dtype's bytes only if the file type is exactly the
    # type h5py would write for it (covers byte order, padding, precision, enums).
    try:
        if dset.id.get_type() != h5py.h5t.py_create(dset.dtype):
            return None
    except (TypeError, ValueError):
        return None
    plist = dset.id.get_create_plist()
    filters = tuple(int(plist.get_filter(i)[0]) for i in range(plist.get_nfilters()))
    if any(f not in DECODERS for f in filters):
        return None
    return ChunkPlan(tuple(dset.chunks), dset.dtype, filters)


def _packed(dt: np.dtype) -> bool:
    if dt.subdtype is not None:
        return _packed(dt.subdtype[0])
    if dt.names is None:
        return True
    fields = [dt.fields[name][0] for name in dt.names]
    return sum(f.itemsize for f in fields) == dt.itemsize and all(_packed(f) for f in fields)


def decode_chunk(plan: ChunkPlan, mask: int, raw: bytes) -> np.ndarray | None:
    """One chunk's bytes decoded to an array of the full chunk shape.

    ``None`` when the chunk does not decode to exactly one chunk's bytes (damaged data,
    or a pipeline whose intermediate sizes differ): the caller lets h5py read it, so
    h5py decides — and reports — what such a chunk means.
    """
    buf: Any = raw
    try:
        for i in reversed(range(len(plan.filters))):
            if mask & (1 << i):  # filter skipped for this chunk (e.g. incompressible)
                continue
            buf = DECODERS[plan.filters[i]](buf, plan.dtype.itemsize, plan.nbytes)
    except (ValueError, RuntimeError, zlib.error, struct.error, MemoryError):
        return None
    arr = np.frombuffer(buf, dtype=np.uint8)
    if arr.size != plan.nbytes:
        return None
    return arr.view(plan.dtype).reshape(plan.chunks)


# --- selections -------------------------------------------------------------------


@dataclass
class _Axis:
    """One axis of a selection: which chunks it touches and how to copy from each."""

    size: int  # output length (before dropping integer axes)
    drop: bool  # an integer index: dropped from the output
    pieces: list[tuple[int, Any, Any]]  # (chunk number, source index, destination index)
    is_array: bool


def _axis(key: Any, n: int, c: int) -> _Axis | None:
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step == 1:
            stop = max(stop, start)
            pieces = []
            for ci in range(start // c, (stop - 1) // c + 1 if stop > start else start // c):
                lo, hi = max(start, ci * c), min(stop, (ci + 1) * c)
                pieces.append((ci, slice(lo - ci * c, hi - ci * c), slice(lo - start, hi - start)))
            return _Axis(stop - start, False, pieces, False)
        idx = np.arange(start, stop, step)
        return _array_axis(idx, False, c)
    if isinstance(key, (int, np.integer)):
        i = int(key) + (n if key < 0 else 0)
        return _Axis(1, True, [(i // c, slice(i % c, i % c + 1), slice(0, 1))], False)
    idx = np.asarray(key)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        return None
    idx = np.where(idx < 0, idx + n, idx)
    return _array_axis(idx, False, c)


def _array_axis(idx: np.ndarray, drop: bool, c: int) -> _Axis:
    owner = idx // c
    pieces = []
    for ci in np.unique(owner):
        dst = np.flatnonzero(owner == ci)
        pieces.append((int(ci), idx[dst] - ci * c, dst))
    return _Axis(idx.size, drop, pieces, True)


def _as_array_index(index: Any) -> np.ndarray:
    return np.arange(index.start, index.stop) if isinstance(index, slice) else index


# --- the read ---------------------------------------------------------------------

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def decode_threads() -> int:
    """Threads decoding one selection: ``LAZYH5_DECODE_THREADS`` if set, else 1 inside a
    dask.distributed worker (the cluster already runs a task per core there; measured
    on 2 cores: 2 workers × 2 decode threads gave 1.04× h5py, × 1 thread 1.51×), else
    the usable CPUs (threaded scheduler, BatchLoader, plain indexing).

    Worker processes started from this environment inherit the variable.
    """
    env = os.environ.get("LAZYH5_DECODE_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    if _in_distributed_worker():
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _in_distributed_worker() -> bool:
    worker = sys.modules.get("distributed.worker")  # never import distributed ourselves
    if worker is None:
        return False
    try:
        worker.get_worker()
    except ValueError:
        return False
    return True


def _get_pool(n: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if n not in _pools:
            _pools[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="lazyh5-decode")
        return _pools[n]


def _reset_pools_after_fork() -> None:
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pools_after_fork)


def worthwhile(plan: ChunkPlan) -> bool:
    """Whether the parallel path beats h5py for this dataset.

    Measured per 4 MiB read on one core: unfiltered chunks are faster through h5py
    (it reads straight into the output; nothing to decode) unless they can be copied
    straight from the file (:func:`row_copy`), and compressed chunks
    below ~64 KiB lose to our ~30 µs per-chunk overhead (1,000-element gzip chunks:
    38 ms vs 7 ms; 16,384 elements: 5.2 vs 4.0 ms, won back with 2 threads;
    65,536 elements: 3.4 vs 3.6 ms on one thread).
    """
    return bool(plan.filters) and plan.nbytes >= _MIN_CHUNK_BYTES


@dataclass
class RowCopy:
    """Rows of a dataset chunked by whole rows, copied straight from the file (chunks
    stored plain: unfiltered, or left as is by a filter that could not shrink them).

    ``copies`` are ``(file offset, first row, rows)`` runs of consecutive rows, relative
    to the selection; ``fills`` the ``(first row, values)`` of unallocated chunks, read
    by h5py (it knows the fill value semantics). ``fd`` is a duplicate of the file's
    descriptor: ours to close, and valid even if h5py closes the file meanwhile.
    """

    fd: int
    rows: int
    row_shape: tuple[int, ...]
    dtype: np.dtype
    copies: list[tuple[int, int, int]]
    fills: list[tuple[int, np.ndarray]]

    @property
    def row_bytes(self) -> int:
        return math.prod(self.row_shape) * self.dtype.itemsize

    def run(self, out: np.ndarray | None = None, dst: np.ndarray | None = None) -> np.ndarray:
        """Copy the rows into ``out[dst]`` (default: a new array, in order); close ``fd``.

        h5py copies rows one chunk at a time holding its global lock (and the GIL);
        ``os.preadv`` releases both, so chunks are copied in parallel while batches keep
        flowing to the training thread, and a scatter (``dst``) costs no extra copy:
        each run of rows is read by one ``preadv`` into the rows' destinations.
        """
        try:
            if out is None:
                out = np.empty((self.rows, *self.row_shape), self.dtype)
            tasks = self.tasks(out, dst)
            threads = decode_threads()
            if threads > 1 and len(tasks) > 1 and self.rows * self.row_bytes >= _POOL_MIN_BYTES:
                list(_get_pool(threads).map(_call, tasks))
            else:
                for task in tasks:
                    task()
        finally:
            os.close(self.fd)
        self.fill(out, dst)
        return out

    def tasks(self, out: np.ndarray, dst: np.ndarray | None) -> list[Callable[[], None]]:
        """One call per run of rows, copying it to ``out[dst]``; run them in any threads
        and order, then :meth:`fill` and close ``fd`` (what :meth:`run` does)."""
        size = self.row_bytes
        flat = memoryview(out.reshape(-1).view(np.uint8))

        def one(where: int, first: int, n: int) -> None:
            if dst is None:
                buffers = [flat[first * size : (first + n) * size]]
            else:
                buffers = [flat[r * size : (r + 1) * size] for r in dst[first : first + n].tolist()]
            for i in range(0, len(buffers), _IOV_MAX):
                part = buffers[i : i + _IOV_MAX]
                want = sum(len(b) for b in part)
                if os.preadv(self.fd, part, where) != want:  # regular files: only at EOF
                    raise OSError(f"the file ends inside a chunk at byte {where}")
                where += want

        return [functools.partial(one, *copy) for copy in self.copies]

    def fill(self, out: np.ndarray, dst: np.ndarray | None) -> None:
        """The rows of unallocated chunks (their fill values) into ``out[dst]``."""
        for first, values in self.fills:
            if dst is None:
                out[first : first + len(values)] = values
            else:
                out[dst[first : first + len(values)]] = values


def _call(task: Callable[[], Any]) -> Any:
    return task()


class Pending:
    """Work handed to the decode pool, and steps to run once all of it is done.

    A shuffle window hands over the runs of rows of all its blocks: 20 chunk copies
    spread evenly over 2 threads, where block by block 5 chunks split 3:2 and the
    pool waited for the slower thread 4 times per window. :meth:`wait` waits for
    everything, then runs the steps (closing descriptors), even after an error, and
    re-raises the first error.
    """

    def __init__(self) -> None:
        self._threads = decode_threads()
        self._futures: list[Any] = []
        self._after: list[Callable[[], Any]] = []

    def submit(self, task: Callable[[], Any]) -> None:
        if self._threads > 1:
            self._futures.append(_get_pool(self._threads).submit(task))
        else:
            task()

    def then(self, step: Callable[[], Any]) -> None:
        self._after.append(step)

    def wait(self) -> None:
        error: BaseException | None = None
        for future in self._futures:
            try:
                future.result()
            except BaseException as err:  # wait for the others before raising
                error = error or err
        for step in self._after:
            try:
                step()
            except BaseException as err:
                error = error or err
        self._futures, self._after = [], []
        if error is not None:
            raise error


_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


class Compressed(Exception):
    """A chunk is stored through its filters: it has to be decoded, not copied."""


def stored_plain(plan: ChunkPlan, filter_mask: int, size: int) -> bool:
    """Whether a chunk's bytes in the file are its values: no filters, or every filter
    skipped for it (HDF5 stores a chunk that a filter such as gzip or lzf cannot
    shrink as is, with the filter's bit set in the chunk's mask)."""
    every = (1 << len(plan.filters)) - 1
    return filter_mask & every == every and size == plan.nbytes


def chunk_offset(dset: h5py.Dataset, plan: ChunkPlan, coord: tuple[int, ...]) -> int | None:
    """File offset of the chunk at ``coord`` (called under the lock): ``None`` when
    unallocated; raises :class:`Compressed` unless it is :func:`stored_plain`."""
    info = dset.id.get_chunk_info_by_coord(coord)
    if info.byte_offset is None:
        return None
    if plan.filters and not stored_plain(plan, info.filter_mask, info.size):
        raise Compressed(coord)
    return info.byte_offset


def row_copy(dset: h5py.Dataset, shape: Sequence[int], key: tuple) -> tuple[RowCopy, bool] | None:
    """A :class:`RowCopy` for ``dset[key]`` (called under the lock), and whether ``key``
    drops the row axis (an integer); ``None`` unless ``key`` is a run of rows (other
    axes whole) of a dataset chunked by whole rows whose chunks there are stored plain
    (:func:`stored_plain`), in a file open read-only through the default (sec2) driver.
    """
    plan = plan_for(dset)
    if plan is None or len(key) != len(shape) or not shape:
        return None
    rows, rest = key[0], key[1:]
    drop = isinstance(rows, int | np.integer)
    if drop:
        i = int(rows) + (shape[0] if rows < 0 else 0)
        if not 0 <= i < shape[0]:
            return None  # h5py raises its own IndexError
        rows = slice(i, i + 1)
    if not isinstance(rows, slice) or tuple(plan.chunks[1:]) != tuple(shape[1:]):
        return None
    if any(
        not (isinstance(k, slice) and k.indices(n) == (0, n, 1))
        for k, n in zip(rest, shape[1:], strict=True)
    ):
        return None
    start, stop, step = rows.indices(shape[0])
    if step != 1 or dset.file.mode != "r" or dset.file.driver != "sec2":
        return None  # a file open for writing may hold newer data in HDF5's chunk cache
    stop = max(start, stop)
    row_bytes = math.prod(shape[1:]) * plan.dtype.itemsize
    tail = (0,) * (len(shape) - 1)
    try:
        copies, holes = row_runs(
            start, stop, plan.chunks[0], row_bytes, lambda r: chunk_offset(dset, plan, (r, *tail))
        )
    except Compressed:
        return None  # decoded (in parallel) by read()
    fills = [(lo - start, dset[lo:hi]) for lo, hi in holes]
    fd = os.dup(dset.file.id.get_vfd_handle())
    copy = RowCopy(fd, stop - start, tuple(shape[1:]), plan.dtype, copies, fills)
    return copy, drop


def row_runs(
    start: int,
    stop: int,
    chunk_rows: int,
    row_bytes: int,
    address: Callable[[int], int | None],
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """Rows ``[start, stop)`` of a dataset chunked by whole rows, chunk by chunk.

    ``address(first_row_of_chunk)`` is the chunk's byte offset in the file, ``None``
    when unallocated. Returns the :class:`RowCopy` runs ``(file offset, first row,
    rows)``, rows counted from ``start``, and the ``(lo, hi)`` file rows of
    unallocated chunks.
    """
    c = chunk_rows
    copies, holes = [], []
    for ci in range(start // c, (stop - 1) // c + 1 if stop > start else 0):
        lo, hi = max(start, ci * c), min(stop, (ci + 1) * c)
        where = address(ci * c)
        if where is None:
            holes.append((lo, hi))
        else:
            copies.append((where + (lo - ci * c) * row_bytes, lo - start, hi - lo))
    return copies, holes


def read(
    get_dataset: Callable[[], h5py.Dataset],
    lock: Any,
    shape: Sequence[int],
    key: tuple,
    *,
    always: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray | None:
    """``dset[key]`` decoded outside ``lock``; ``None`` when h5py must read it itself.

    ``out``, when given, receives the values (its shape must be the selection's, with
    no integer index in ``key``) and is returned.

    Unfiltered datasets chunked by whole rows, in files open read-only, are copied
    straight from the file (see :func:`row_copy`). Unless ``always``, other datasets
    for which h5py is faster (see :func:`worthwhile`) are left to h5py.

    ``key`` is what xarray hands a backend with ``OUTER_1VECTOR`` support: basic slices,
    integers and 1-d integer arrays (outer indexing, one array per axis).
    """
    if len(key) < len(shape):
        key = tuple(key) + (slice(None),) * (len(shape) - len(key))
    with lock:
        dset = get_dataset()
        found = row_copy(dset, shape, key)
        if found is None:
            plan = plan_for(dset)
            if plan is None or len(key) != dset.ndim or not (always or worthwhile(plan)):
                return None
            axes = [_axis(k, n, c) for k, n, c in zip(key, shape, plan.chunks, strict=True)]
            if any(a is None for a in axes):
                return None
            jobs = []  # (source-or-raw, mask, chunk pieces)
            for combo in itertools.product(*(a.pieces for a in axes)):
                coord = tuple(ci for ci, _, _ in combo)
                offset = tuple(ci * c for ci, c in zip(coord, plan.chunks, strict=True))
                # Ask first: reading an unallocated chunk fails in ways that vary by HDF5
                # version (RuntimeError, or MemoryError for a never-written dataset).
                if dset.id.get_chunk_info_by_coord(offset).byte_offset is None:
                    # Unallocated: h5py knows the fill value semantics (fill time, CF, ...).
                    box = tuple(
                        slice(o, min(o + c, n))
                        for o, c, n in zip(offset, plan.chunks, shape, strict=True)
                    )
                    jobs.append((dset[box], None, combo))
                    continue
                try:
                    mask, raw = dset.id.read_direct_chunk(offset)
                except (OSError, RuntimeError, ValueError, MemoryError):
                    return None  # a damaged chunk index: h5py reads (and reports) it
                jobs.append((raw, mask, combo))

    if found is not None:
        copy, drop = found
        out = copy.run(out)
        return np.asarray(out[0]) if drop else out

    if out is None:
        out = np.empty(tuple(a.size for a in axes), dtype=plan.dtype)
    n_arrays = sum(a.is_array for a in axes)
    bad: list[tuple] = []

    def place(job: tuple) -> None:
        data, mask, combo = job
        chunk = data if mask is None else decode_chunk(plan, mask, data)
        if chunk is None:
            bad.append(combo)
            return
        src = tuple(s for _, s, _ in combo)
        dst = tuple(d for _, _, d in combo)
        if n_arrays > 1:  # several index arrays: outer (not broadcast) indexing
            src = np.ix_(*(_as_array_index(s) for s in src))
            dst = np.ix_(*(_as_array_index(d) for d in dst))
        out[dst] = chunk[src]

    threads = decode_threads()
    if threads > 1 and len(jobs) > 1 and len(jobs) * plan.nbytes >= _POOL_MIN_BYTES:
        list(_get_pool(threads).map(place, jobs))
    else:
        for job in jobs:
            place(job)
    if bad:  # a chunk we could not decode exactly: let h5py read (and report) it
        return None
    out = out.reshape(tuple(a.size for a in axes if not a.drop))
    # h5py returns a point selection as a numpy scalar (native byte order): do the same.
    return np.asarray(out[()]) if out.ndim == 0 else out
