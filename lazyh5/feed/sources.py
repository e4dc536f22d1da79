"""Where the loader's rows come from: one interface over three kinds of source.

Every source covers some of the fed variables and has one method,
``read(a, b, out, dst, pending)``: rows ``[a, b)`` of its variables, written to
``out[name][dst]`` (complete once ``pending.wait()`` returns), or, with ``dst=None``,
set as ``out[name]`` in order (a reused buffer or the computed array, no extra copy).

- :class:`FileRows`: a plain view of its file, read directly (see
  :mod:`lazyh5.feed.direct`);
- :class:`MappedRows`: an elementwise function of a plain view (see
  :mod:`lazyh5.feed.elementwise`), its input read directly, the function run by numpy;
- :class:`SmallColumn`: variables of small rows (labels, weights), read whole once
  per epoch so each of their chunks is decoded once;
- :class:`DaskRows`: everything else, computed by dask in one graph (shared inputs
  are read once).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import dask
import dask.array as da
import dask.local
import dask.threaded
import numpy as np
from dask.array.core import concatenate3

from ..backend.rows import Compressed
from ..backend.threads import Pending, decode_threads, run_each
from .buffers import Buffers
from .direct import DirectSource
from .elementwise import Mapped

# Output bytes a function runs on at once (MappedRows): its input and output pieces and
# temporaries stay in the CPU's cache, where a whole block's would not; measured on
# 32x32x3 images, pieces of 128-512 KiB cost more CPU in Python per piece, 1-4 MiB alike.
PIECE_BYTES = 1 << 20


class Source(Protocol):
    """Rows of some fed variables (see the module docstring)."""

    def read(
        self,
        a: int,
        b: int,
        out: dict[str, np.ndarray],
        dst: np.ndarray | None,
        pending: Pending | None,
    ) -> None: ...


class FileRows:
    """One variable read straight from its file: copied to its destination rows when
    its chunks allow it, else read into a reused buffer (and placed)."""

    def __init__(self, name: str, source: DirectSource, like: Any, buffers: Buffers) -> None:
        self.name, self.source, self.buffers = name, source, buffers
        self.row_shape, self.dtype = tuple(like.shape[1:]), like.dtype  # sample axis first

    def read(self, a, b, out, dst, pending) -> None:
        src, name = self.source, self.name
        if dst is None:
            rows = out[name] = self.buffers.empty((b - a, *self.row_shape), self.dtype)
            if not src.scatter(a, b, rows, None):
                src.read_into(a, b, rows)
            return
        if not src.scatter(a, b, out[name], dst, pending):  # not copyable from the file
            src.read_into(a, b, out[name], dst)  # decoded, each chunk's rows placed


class MappedRows:
    """One variable computed elementwise from a plain view: the view's rows read
    straight from its file into a reused buffer, then the function applied a piece of
    rows at a time (in cache), the pieces shared among the decode threads.

    Shuffled, the input rows of a whole window are read first, straight into emission
    order (a quarter of the output's bytes for ``uint8`` images made ``float32``), then
    the window is computed in order: no scattered writes of output rows."""

    def __init__(self, name: str, mapped: Mapped, like: Any, buffers: Buffers) -> None:
        self.name, self.mapped, self.buffers = name, mapped, buffers
        self.row_shape, self.dtype = tuple(like.shape[1:]), like.dtype
        self.row_bytes = max(math.prod(self.row_shape) * self.dtype.itemsize, 1)
        self.step = max(1, PIECE_BYTES // self.row_bytes)
        # one per thread: each holds the buffers of the function's steps
        self.runners = [mapped.runner(self.step) for _ in range(decode_threads())]
        self.window: tuple[np.ndarray, np.ndarray] | None = None  # (output, input rows)

    def read(self, a, b, out, dst, pending) -> None:
        m, name = self.mapped, self.name
        if dst is not None:  # a window's block (the window is assembled on pending.wait())
            return self._keep(a, b, out[name], dst, pending)
        raw = self.buffers.empty((b - a, *m.row_shape), m.dtype)
        self._read_raw(a, b, raw)
        out[name] = self.buffers.empty((b - a, *self.row_shape), self.dtype)
        self._apply(raw, out[name])

    def _read_raw(self, a: int, b: int, raw: np.ndarray) -> None:
        if not self.mapped.source.scatter(a, b, raw, None):
            self.mapped.source.read_into(a, b, raw)

    def _keep(self, a: int, b: int, target: np.ndarray, dst: np.ndarray, pending: Pending) -> None:
        """A block's input rows into their places (``dst``) in the window's input rows,
        which are computed once all of its blocks are read (on ``pending.wait()``)."""
        m = self.mapped
        if self.window is None or self.window[0] is not target:
            raw = self.buffers.empty((len(target), *m.row_shape), m.dtype)
            self.window = (target, raw)
            pending.then(self._flush)
        raw = self.window[1]
        if not m.source.scatter(a, b, raw, dst, pending):  # compressed: decoded, placed
            m.source.read_into(a, b, raw, dst)

    def _flush(self) -> None:
        target, raw = self.window
        self.window = None
        self._apply(raw, target)

    def _apply(self, raw: np.ndarray, target: np.ndarray) -> None:
        """``target[:] = f(raw)``, a piece at a time, the pieces split among the threads."""
        n, step = len(target), self.step
        pieces = -(-n // step)
        share = -(-pieces // len(self.runners)) * step  # rows per thread
        parts = [(lo, min(lo + share, n)) for lo in range(0, n, share)]

        def run(j: int) -> None:
            lo, hi = parts[j]
            for i in range(lo, hi, step):
                piece = slice(i, min(i + step, hi))
                self.runners[j](raw[piece], target[piece])

        run_each(run, range(len(parts)), n * self.row_bytes)


class SmallColumn:
    """Variables of small rows, read whole on first use (so once per epoch: a loader
    makes new sources each epoch) between rows ``start`` and ``end``."""

    def __init__(self, sources: dict[str, DirectSource], start: int, end: int) -> None:
        self.sources, self.start, self.end = sources, start, end
        self.columns: dict[str, np.ndarray] = {}

    def read(self, a, b, out, dst, pending) -> None:
        for name, src in self.sources.items():
            if name not in self.columns:
                self.columns[name] = src.read(self.start, self.end)
            rows = self.columns[name][a - self.start : b - self.start]
            if dst is None:
                out[name] = rows
            else:
                out[name][dst] = rows


class DaskRows:
    """Variables computed block by block by dask (or held as numpy arrays), sample
    dimension first."""

    def __init__(self, arrays: dict[str, Any]) -> None:
        self.arrays = arrays

    def read(self, a, b, out, dst, pending) -> None:
        if not self.arrays:
            return
        pieces = {name: arr[a:b] for name, arr in self.arrays.items()}
        lazy = {k: v for k, v in pieces.items() if isinstance(v, da.Array)}
        if lazy:
            pieces.update(zip(lazy, compute_uncopied(list(lazy.values())), strict=True))
        for name, rows in pieces.items():
            if dst is None:
                out[name] = np.asarray(rows)
            else:
                out[name][dst] = rows


def local_sources(
    arrays: dict[str, Any],
    direct: dict[str, DirectSource | None],
    mapped: dict[str, Mapped],
    small: list[str],
    buffers: Buffers,
    rows: tuple[int, int],
) -> list[Source]:
    """The sources of a loader's variables (sample axis first) on a local scheduler:
    plain views read directly (``small`` ones whole, from row ``rows[0]`` to
    ``rows[1]``), functions of plain views by :class:`MappedRows`, the rest by dask."""
    plain = {n: src for n, src in direct.items() if src is not None}
    files: list[Source] = [
        FileRows(n, src, arrays[n], buffers) for n, src in plain.items() if n not in small
    ]
    maps: list[Source] = [MappedRows(n, m, arrays[n], buffers) for n, m in mapped.items()]
    column = SmallColumn({n: plain[n] for n in small}, *rows)
    computed = {n: a for n, a in arrays.items() if n not in plain and n not in mapped}
    return [*files, *maps, column, DaskRows(computed)]


def compute_uncopied(arrays: list[da.Array]) -> list[np.ndarray]:
    """``dask.compute(*arrays)`` through dask's collection protocol, without its extras.

    One graph for all variables (shared inputs are read once), optimised the way dask
    optimises arrays (which fuses the block's row slice into the HDF5 read), run on the
    active scheduler (threads, or a distributed client), without the expression layer
    and the defensive copy ``dask.compute`` makes of a one-chunk result.
    """
    keys = [a.__dask_keys__() for a in arrays]
    dsk: dict = {}
    for a in arrays:
        dsk.update(a.__dask_graph__())
    dsk = arrays[0].__dask_optimize__(dsk, keys)
    get = dask.base.get_scheduler(collections=arrays)
    if get is dask.threaded.get and len(dsk) <= 4 * len(arrays):
        # A block read as one task per variable (the usual case: lazyh5's dask chunks
        # are larger than blocks, and its decoder parallelises inside the task) gains
        # nothing from the thread pool but the hand-off's cost.
        get = dask.local.get_sync
    out = []
    for nested in get(dsk, keys):  # nested tuples (or lists) of chunks, like the keys
        single = nested
        while isinstance(single, tuple | list) and len(single) == 1:
            single = single[0]
        if isinstance(single, tuple | list):  # several chunks: one copy to join them
            single = concatenate3(_as_lists(nested))
        out.append(single)
    return out


def _as_lists(nested: Any) -> Any:
    return [_as_lists(x) for x in nested] if isinstance(nested, tuple | list) else nested


def read_rows(
    read: Callable[[int, int], dict[str, np.ndarray]], rows: np.ndarray, unit: int
) -> dict[str, np.ndarray]:
    """``rows`` (any order, repeats allowed) of every variable, by ``read(a, b)`` of
    rows ``[a, b)``: one read per run of consecutive rows, and rows within one HDF5
    chunk of ``unit`` rows read as one run (one decode per chunk)."""
    unique, inverse = np.unique(rows, return_inverse=True)
    cut = (np.diff(unique) > 1) & (np.diff(unique // unit) != 0)
    firsts = np.concatenate([[0], np.flatnonzero(cut) + 1])
    lasts = np.concatenate([firsts[1:], [len(unique)]]) - 1
    spans = np.stack([unique[firsts], unique[lasts] + 1], axis=1)
    parts = [read(int(a), int(b)) for a, b in spans]
    offsets = np.concatenate([[0], np.cumsum(spans[:, 1] - spans[:, 0])])
    span = np.searchsorted(spans[:, 0], unique, side="right") - 1
    where = (offsets[span] + unique - spans[span, 0])[inverse]
    names = parts[0].keys()
    if len(parts) == 1:
        return {n: parts[0][n][where] for n in names}
    return {n: np.concatenate([p[n] for p in parts])[where] for n in names}


def gather_plain(src: DirectSource, rows: np.ndarray, like: Any) -> np.ndarray | None:
    """Rows ``rows`` of a view (``like``: an array with its row shape and dtype), one
    ``pread`` per row straight from the file, when its chunks are stored plain and
    allocated; else ``None`` (read them another way)."""
    found = src._row_file() if src.row_axis == 0 else None
    if found is None:
        return None
    out = np.empty((len(rows), *like.shape[1:]), like.dtype)
    flat = memoryview(out.reshape(-1).view(np.uint8))
    size, chunk = found.row_bytes, found.chunk_rows
    try:
        if found.file.remote:  # one range per row, all requests in flight together
            return out if found.gather(rows + src.key[0].start, out) else None
        with src.array.damage_reported():
            for j, r in enumerate((rows + src.key[0].start).tolist()):
                where = found.address(r - r % chunk)
                if where is None:  # unallocated: h5py knows the fill value
                    return None
                found.file.readv([flat[j * size : (j + 1) * size]], where + r % chunk * size)
    except Compressed:
        return None
    return out
