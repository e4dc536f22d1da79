"""Reading a selection of one HDF5 dataset: the strategy is chosen in :func:`prepare`.

h5py (and HDF5 itself) serialise every call behind one global lock, so reading a
compressed dataset from several threads decodes one chunk at a time. :func:`read`
holds that lock only while HDF5 is asked for what the chosen strategy needs, and
copies or decodes outside it:

- :class:`RowRead`: runs of whole rows stored plain, copied straight from the file
  (:mod:`lazyh5.backend.rows`);
- :class:`ChunkRead`: compressed chunks, read raw under the lock and decoded outside
  it, in the decode pool when the selection spans several
  (:mod:`lazyh5.backend.decode`, :mod:`lazyh5.backend.threads`); in a remote file
  every chunk, plain or compressed, is only located under the lock and fetched by
  byte range outside it, all at once (:mod:`lazyh5.backend.ranges`);
- :class:`ByH5py`: everything else, including chunks our codecs cannot decode
  exactly and unallocated chunks' fill values, so results are always
  byte-identical to ``dset[key]``.

Dask tasks (threads or worker processes) and the BatchLoader all read through here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from . import decode
from .ranges import RangeReader
from .rows import RowCopy, row_copy
from .selection import Axis, as_array_index, axis_of
from .threads import run_each

_MIN_CHUNK_BYTES = 64 << 10


def worthwhile(fmt: decode.ChunkFormat) -> bool:
    """Whether decoding here beats h5py for this dataset.

    Unfiltered chunks are faster through h5py (it reads straight into the output;
    nothing to decode) unless they can be copied straight from the file
    (:class:`RowRead`), and compressed chunks below ~64 KiB lose to our per-chunk
    overhead.
    """
    return bool(fmt.filters) and fmt.nbytes >= _MIN_CHUNK_BYTES


@dataclass
class ByH5py:
    """h5py reads the selection itself, under the HDF5 lock."""

    reason: str

    def run(
        self,
        dset: h5py.Dataset,
        key: tuple,
        out: np.ndarray | None,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """``dset[key]``, into ``out`` when given (with ``rows``, see :func:`read`)."""
        if rows is not None:
            out[rows] = dset[key]
            return out
        if out is not None:
            dset.read_direct(out, source_sel=tuple(key))
            return out
        return np.asarray(dset[key])


@dataclass
class RowRead:
    """Rows copied from the file; ``drop``: the key's row index is an integer."""

    copy: RowCopy
    drop: bool

    def run(self, out: np.ndarray | None, rows: np.ndarray | None = None) -> np.ndarray:
        out = self.copy.run(out, rows)
        return np.asarray(out[0]) if self.drop else out


@dataclass
class ChunkRead:
    """The raw chunks a selection touches, read under the lock, decoded by :meth:`run`.

    ``jobs`` are ``(data, mask, pieces)``: raw bytes and their filter mask, or (mask
    ``None``) the values h5py read for an unallocated chunk; ``pieces`` say what to
    copy from the chunk, per axis. In a remote file ``data`` is the chunk's
    ``(start, stop)`` byte range, fetched by :meth:`run` from ``ranges``.
    """

    fmt: decode.ChunkFormat
    axes: list[Axis]
    jobs: list[tuple[Any, int | None, tuple]]
    ranges: RangeReader | None = None

    def run(self, out: np.ndarray | None = None, rows: np.ndarray | None = None) -> np.ndarray:
        """The decoded selection (into ``out`` when given: the selection's shape, with
        no integer index; with ``rows``, see :func:`read`); raises
        :class:`decode.Undecodable` when a chunk does not decode exactly."""
        fmt, axes = self.fmt, self.axes
        if out is None:
            out = np.empty(tuple(a.size for a in axes), dtype=fmt.dtype)
        n_arrays = sum(a.is_array for a in axes)
        bad: list[decode.Undecodable] = []
        if self.ranges is not None:
            self.jobs = self._fetched()

        def place(job: tuple) -> None:
            data, mask, combo = job
            try:
                chunk = data if mask is None else decode.decode_chunk(fmt, mask, data)
            except decode.Undecodable as err:  # raised once every chunk is done
                bad.append(err)
                return
            src = tuple(s for _, s, _ in combo)
            dst = tuple(d for _, _, d in combo)
            if n_arrays > 1:  # several index arrays: outer (not broadcast) indexing
                src = np.ix_(*(as_array_index(s) for s in src))
                dst = np.ix_(*(as_array_index(d) for d in dst))
            if rows is not None:  # straight to their places, while the chunk is in cache
                dst = (rows[dst[0]], *dst[1:])
            out[dst] = chunk[src]

        run_each(place, self.jobs, len(self.jobs) * fmt.nbytes)
        if bad:
            raise bad[0]
        if rows is not None:
            return out
        out = out.reshape(tuple(a.size for a in axes if not a.drop))
        # h5py returns a point selection as a numpy scalar (native byte order): do the same.
        return np.asarray(out[()]) if out.ndim == 0 else out

    def _fetched(self) -> list[tuple[Any, int | None, tuple]]:
        """The jobs with the byte ranges of allocated chunks replaced by their bytes,
        every range requested at once."""
        assert self.ranges is not None
        stored = [i for i, (_, mask, _) in enumerate(self.jobs) if mask is not None]
        data = self.ranges.fetch([self.jobs[i][0] for i in stored])
        jobs = list(self.jobs)
        for i, raw in zip(stored, data, strict=True):
            # bytes: codecs such as the LZ4 frame parser concatenate slices of it
            jobs[i] = (bytes(raw) if isinstance(raw, memoryview) else raw, *jobs[i][1:])
        return jobs


def read_chunks(
    dset: h5py.Dataset,
    fmt: decode.ChunkFormat,
    shape: Sequence[int],
    key: tuple,
    ranges: RangeReader | None = None,
) -> ChunkRead:
    """The raw chunks ``dset[key]`` touches (called under the lock; in a remote file,
    ``ranges``, only their byte ranges); raises :class:`decode.Undecodable` for a key
    or chunk index it cannot handle."""
    axes = [axis_of(k, n, c) for k, n, c in zip(key, shape, fmt.chunks, strict=True)]
    if any(a is None for a in axes):
        raise decode.Undecodable("an index that is not a slice, an int or a 1-d int array")
    jobs = []
    for combo in itertools.product(*(a.pieces for a in axes)):
        coord = tuple(ci for ci, _, _ in combo)
        offset = tuple(ci * c for ci, c in zip(coord, fmt.chunks, strict=True))
        # Ask first: reading an unallocated chunk fails in ways that vary by HDF5
        # version (RuntimeError, or MemoryError for a never-written dataset).
        info = dset.id.get_chunk_info_by_coord(offset)
        if info.byte_offset is None:
            # Unallocated: h5py knows the fill value semantics (fill time, CF, ...).
            box = tuple(
                slice(o, min(o + c, n)) for o, c, n in zip(offset, fmt.chunks, shape, strict=True)
            )
            jobs.append((dset[box], None, combo))
            continue
        if ranges is not None:
            start = info.byte_offset
            jobs.append(((start, start + info.size), info.filter_mask, combo))
            continue
        try:
            mask, raw = dset.id.read_direct_chunk(offset)
        except (OSError, RuntimeError, ValueError, MemoryError) as err:
            raise decode.Undecodable(f"a damaged chunk index ({err})") from None
        jobs.append((raw, mask, combo))
    return ChunkRead(fmt, axes, jobs, ranges)


def prepare(
    dset: h5py.Dataset, shape: Sequence[int], key: tuple, ranges: RangeReader | None = None
) -> RowRead | ChunkRead | ByH5py:
    """The strategy that reads ``dset[key]``, with what it needs from HDF5 (called
    under the lock; ``key`` has one entry per axis; ``ranges``: a remote file's byte
    ranges, which every chunk is fetched by).

    Examples
    --------
    >>> import h5py, numpy as np
    >>> from lazyh5.backend.read import prepare
    >>> with h5py.File("prepare.h5", "w") as f:
    ...     _ = f.create_dataset("x", data=np.ones((4, 3)), chunks=(2, 3))
    >>> with h5py.File("prepare.h5", "r") as f:
    ...     type(prepare(f["x"], (4, 3), (slice(0, 4), 1))).__name__
    'ByH5py'
    """
    found = row_copy(dset, shape, key, ranges)
    if found is not None:
        return RowRead(*found)
    fmt = decode.format_of(dset)
    if fmt is None or len(key) != dset.ndim:
        return ByH5py("a storage or type that only h5py decodes")
    if ranges is None and not worthwhile(fmt):
        return ByH5py("h5py reads these chunks faster")
    try:
        return read_chunks(dset, fmt, shape, key, ranges)
    except decode.Undecodable as err:
        return ByH5py(str(err))


def read(
    get_dataset: Callable[[], h5py.Dataset],
    lock: Any,
    shape: Sequence[int],
    key: tuple,
    out: np.ndarray | None = None,
    ranges: RangeReader | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """``dset[key]`` (``dset = get_dataset()``, valid under ``lock``, the HDF5 lock;
    ``ranges``: the byte ranges of a remote file, which chunks are fetched by).

    ``out``, when given, receives the values (its shape must be the selection's, with
    no integer index in ``key``) and is returned. With ``rows`` (``key`` all slices),
    selected row ``i`` goes to ``out[rows[i]]`` instead: a shuffled loader's rows
    placed as each chunk is decoded, not copied again afterwards. ``key`` is what
    xarray hands a backend with ``OUTER_1VECTOR`` support: basic slices, integers and
    1-d integer arrays (outer indexing, one array per axis).

    Examples
    --------
    >>> import threading, h5py, numpy as np
    >>> from lazyh5.backend.read import read
    >>> with h5py.File("read.h5", "w") as f:
    ...     _ = f.create_dataset("x", data=np.arange(12.0).reshape(4, 3), chunks=(2, 3))
    >>> with h5py.File("read.h5", "r") as f:
    ...     read(lambda: f["x"], threading.Lock(), (4, 3), (slice(1, 3),)).tolist()
    [[3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]
    """
    if len(key) < len(shape):
        key = tuple(key) + (slice(None),) * (len(shape) - len(key))
    if rows is not None and (out is None or not all(isinstance(k, slice) for k in key)):
        raise ValueError("rows needs an output array and a key of slices")
    with lock:
        dset = get_dataset()
        strategy = prepare(dset, shape, key, ranges)
        if isinstance(strategy, ByH5py):
            return strategy.run(dset, key, out, rows)
    try:
        return strategy.run(out, rows)
    except decode.Undecodable as err:  # h5py reads (and reports) what we cannot decode
        with lock:
            return ByH5py(str(err)).run(get_dataset(), key, out, rows)
