"""BatchLoader: numpy batches from a lazy Dataset, computed block by block."""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import dask.local
import dask.threaded
import numpy as np
import xarray as xr
from dask.array.core import concatenate3
from dask.utils import parse_bytes

from .._files import source_label
from ..backend import decode
from ..errors import (
    DimensionError,
    InvalidArgumentError,
    InvalidIndexError,
    ObjectNotFoundError,
    UnsupportedDtypeError,
)
from .buffers import Buffers
from .direct import SMALL_ROW, DirectSource, direct_source
from .plan import BlockPlan, _chunk_rows, plan_blocks, split_rows
from .prefetch import Prefetcher
from .shuffle import Window, epoch_windows

Names = str | Sequence[str] | Mapping[str, str] | None


def _compute_uncopied(arrays: list[da.Array]) -> list[np.ndarray]:
    """``dask.compute(*arrays)`` through dask's collection protocol, without its extras.

    One graph for all variables (shared inputs are read once), optimised the way dask
    optimises arrays (which fuses the block's row slice into the HDF5 read), run on the
    active scheduler (threads, or a distributed client). Measured per 16 MiB block on 2
    cores: ``dask.compute`` 7-10 ms for a 2.5 ms h5py read, this 4.5 ms; most of the gap
    was the expression layer and the defensive copy ``dask.compute`` makes of a
    one-chunk result.
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
        # nothing from the thread pool; skipping the hand-off measured ~1 ms per block.
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


def _place(out: np.ndarray, dst: np.ndarray, rows: np.ndarray, pending: decode.Pending) -> None:
    """``out[dst] = rows`` in a decode thread while the next block is read (numpy
    releases the GIL for it): shuffling an lzf file, decoding a block took 1.2 ms and
    placing its rows 0.6 ms, one after the other."""
    pending.submit(functools.partial(out.__setitem__, dst, rows))


class BatchLoader:
    """Batches of rows of a lazy Dataset, for training loops, Keras ``fit`` and tf.data.

    Rows are read in **blocks**: runs of whole HDF5 chunks of about ``block_size`` bytes
    (so each HDF5 chunk is decoded once), in a background thread that keeps ``prefetch``
    blocks ready. A variable that is a plain view of its file (``ds["image"]``, an
    ``isel`` of it) is read straight from the file; one with lazy transforms is
    computed block by block with dask, the transform running on the whole block.
    Batches are views of the block, sliced out of memory.

    With ``shuffle=True`` the blocks are visited in random order and the rows of
    ``window`` consecutive blocks are pooled and permuted: every row comes exactly once
    per epoch, in a new order each epoch, reproducible for a given ``seed``. Windows are
    assembled in emission order in the background thread, whole windows ahead.

    Memory held is at most ``prefetch + 2`` blocks in order, and
    ``(ceil(prefetch / window) + 2) * window`` blocks shuffled (the window in use, one
    ready, one being assembled): 192 MiB with the defaults, whatever the file size.
    Variables with rows under 1 KiB (labels, weights) are read whole once per epoch
    when that takes at most 4 blocks' worth (800 KB for 100,000 int64 labels), so
    each of their chunks is decoded once. Batches are views of their block or window
    (of the variable itself when ``ds`` holds numpy arrays): copy one before modifying
    it in place or keeping it long.

    Parameters
    ----------
    ds
        A Dataset, typically from :func:`lazyh5.open_dataset`, possibly transformed
        lazily (``isel``, ``astype``, arithmetic...).
    x, y
        A variable name, a list of names (a tuple of arrays per batch) or a mapping
        ``{input_name: variable}`` (a dict per batch). ``y`` may be ``None``.
    dim
        The dimension that indexes samples.
    batch_size
        Rows per batch.
    shuffle, seed
        Chunk-aware shuffling and its seed (``None``: a fresh random order).
    start, end
        Rows ``[start, end)`` along ``dim`` to use, like ``HDF5Matrix``.
    drop_remainder
        Drop the last, smaller batch of each epoch.
    sample_weight
        A variable holding per-row weights (yields ``(x, y, w)``).
    prefetch
        Blocks computed ahead in the background.
    window
        Blocks pooled for shuffling (more: better mixing, more memory).
    block_size
        Target bytes per block for all variables together (``"16MiB"``).

    Examples
    --------
    >>> import numpy as np, lazyh5
    >>> ds = lazyh5.create("feed.h5", {"image": ((100, 4, 4), "f4"), "label": ((100,), "i8")})
    >>> ds["label"].h5[:] = np.arange(100)
    >>> loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=32, seed=0)
    >>> len(loader), [len(y) for _, y in loader]
    (4, [32, 32, 32, 4])
    >>> train, val = loader.split(0.8)
    >>> train.rows, val.rows
    (80, 20)
    """

    def __init__(
        self,
        ds: xr.Dataset,
        x: Names,
        y: Names = None,
        *,
        dim: Hashable = "sample",
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = None,
        start: int | None = None,
        end: int | None = None,
        drop_remainder: bool = False,
        sample_weight: str | None = None,
        prefetch: int = 2,
        window: int = 4,
        block_size: int | str = "16MiB",
    ) -> None:
        if not isinstance(ds, xr.Dataset):
            raise TypeError(f"BatchLoader needs an xarray.Dataset, got {type(ds).__name__}")
        self._ds = ds
        self._where = source_label(ds.variables)
        if x is None:
            raise InvalidArgumentError(
                f"BatchLoader over {self._where} needs at least one input variable x"
            )
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.dim = dim
        if not isinstance(batch_size, int | np.integer) or batch_size <= 0:
            raise InvalidArgumentError(
                f"cannot feed {self._where}: batch_size must be a positive integer, "
                f"got {batch_size!r}"
            )
        self.batch_size = int(batch_size)
        self.shuffle, self.seed = shuffle, seed
        self.drop_remainder = drop_remainder
        self.prefetch, self.window = max(1, int(prefetch)), max(1, int(window))
        self.block_size = block_size
        self._names = self._check_variables()
        n = ds.sizes[dim]
        self.start, self.end = self._check_range(start, end, n)
        self.plan: BlockPlan = plan_blocks(
            ds, self._names, dim, self.start, self.end, parse_bytes(block_size)
        )
        self.epoch = 0
        # Sample dim first, once: slicing the dask array per block costs ~0.1 ms, the
        # same through xarray's isel ~0.5 ms.
        self._arrays: dict[str, Any] = {n: ds[n].transpose(dim, ...).data for n in self._names}
        self._direct: dict[str, DirectSource | None] = {
            n: direct_source(ds[n], dim) for n in self._names
        }
        # Variables of small rows (labels), held whole per epoch (see _small_columns)
        # when they take at most a few blocks' worth of memory.
        budget = 4 * parse_bytes(block_size)
        self._small = [
            n
            for n, src in self._direct.items()
            if src is not None
            and self._arrays[n][:1].nbytes < SMALL_ROW
            and self._arrays[n][:1].nbytes * self.rows <= budget
        ]
        # blocks in flight, in order or shuffled (windows), with one spare
        self._buffers = Buffers(limit=(self.prefetch + 4) * len(self._names))
        self._warn_if_blocks_recompute_chunks()

    # -- validation -----------------------------------------------------------------
    def _flat(self, names: Names) -> list[str]:
        if names is None:
            return []
        if isinstance(names, str):
            return [names]
        if isinstance(names, Mapping):
            return list(names.values())
        return list(names)

    def _check_variables(self) -> list[str]:
        names: list[str] = []
        for group in (self.x, self.y, self.sample_weight):
            for name in self._flat(group):
                if name not in names:
                    names.append(name)
        if self.dim not in self._ds.dims:
            raise DimensionError(
                f"dimension '{self.dim}' is not in {self._where} (dims: {list(self._ds.dims)}); "
                "pass dim= or name it with lazyh5.open_dataset(..., dims=...)"
            )
        for name in names:
            if name not in self._ds.variables:
                raise ObjectNotFoundError(
                    f"no variable '{name}' in {self._where}; available: "
                    f"{sorted(map(str, self._ds.data_vars))} (datasets lazyh5 cannot read, "
                    "such as variable-length numeric ones, are skipped with a warning when "
                    "the file is opened)"
                )
            var = self._ds[name]
            if var.ndim == 0 or self.dim not in var.dims:
                raise DimensionError(
                    f"variable '{name}' in {self._where} has dims {var.dims}; every variable "
                    f"fed to BatchLoader needs the sample dimension '{self.dim}'"
                )
            if var.dtype.kind not in "biufc":
                raise UnsupportedDtypeError(
                    f"variable '{name}' in {self._where} has dtype {var.dtype}; BatchLoader "
                    "feeds numeric and bool data (encode strings as integers first)"
                )
        return names

    def _check_range(self, start: int | None, end: int | None, n: int) -> tuple[int, int]:
        s = 0 if start is None else int(start)
        e = n if end is None else int(end)
        if not (0 <= s <= n and 0 <= e <= n):
            raise InvalidIndexError(
                f"start={start}, end={end} out of range for {n} rows along '{self.dim}' "
                f"in {self._where}; expected 0 <= start <= end <= {n}"
            )
        if e <= s:
            raise InvalidArgumentError(
                f"no rows to feed from {self._where}: start={s}, end={e} along '{self.dim}' "
                f"(of {n} rows); expected at least one row (start < end)"
            )
        return s, e

    # -- sizes ----------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows fed per epoch (before dropping a remainder)."""
        return self.end - self.start

    def __len__(self) -> int:
        if self.drop_remainder:
            return self.rows // self.batch_size
        return math.ceil(self.rows / self.batch_size)

    def __repr__(self) -> str:
        block_rows = int(self.plan.sizes.max()) if len(self.plan) else 0
        return (
            f"<lazyh5.BatchLoader {self._where}: x={self.x!r}, y={self.y!r}, rows "
            f"{self.start}:{self.end} along '{self.dim}' ({self.rows} rows), "
            f"{len(self)} batches of {self.batch_size}, shuffle={self.shuffle} "
            f"(seed={self.seed}, window={self.window} blocks), {len(self.plan)} blocks of "
            f"<= {block_rows} rows, {self.prefetch} in flight>"
        )

    # -- reading --------------------------------------------------------------------
    def _fetch(
        self,
        block: int,
        into: tuple[dict[str, np.ndarray], np.ndarray, decode.Pending] | None = None,
        columns: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray] | None:
        """Block ``block``'s rows; or, with ``into=(out, dst, pending)``, written to
        ``out[n][dst]``, complete once ``pending.wait()`` returns. ``columns`` holds
        this epoch's small variables (see :meth:`_small_columns`)."""
        a, b = int(self.plan.starts[block]), int(self.plan.stops[block])
        small = self._small_columns(columns, a, b)
        if into is None:  # in order: plain views of the file go into reused buffers
            local = self._local()
            out = {
                n: self._buffers.empty((b - a, *arr.shape[1:]), arr.dtype)
                for n, arr in self._arrays.items()
                if local and self._direct[n] is not None and n not in small
            }
            done = self._scatter_direct(a, b, out, None)
            return small | {n: out[n] for n in done} | self._read(a, b, skip=done | set(small))
        out, dst, pending = into
        skip = self._scatter_direct(a, b, out, dst, pending, skip=set(small)) | set(small)
        computed = small | self._read(a, b, skip=skip)
        for name, rows in computed.items():
            out[name][dst] = rows
        return None

    def _small_columns(
        self, columns: dict[str, np.ndarray] | None, a: int, b: int
    ) -> dict[str, np.ndarray]:
        """Rows ``[a, b)`` of the small variables (labels, weights), read whole once
        per epoch into ``columns``.

        Read block by block, a 4,096-row label chunk was decoded again for each
        1,280-row block that needs it, and each read cost a pass through h5py under its
        lock: 0.3 ms per block of an lzf label, 30% of a shuffled epoch. Read whole,
        each chunk is decoded once per epoch (each epoch still reads the file).
        """
        if columns is None or not self._small:
            return {}
        for name in self._small:
            if name not in columns:
                columns[name] = self._direct[name].read(self.start, self.end)
        return {n: columns[n][a - self.start : b - self.start] for n in self._small}

    def _scatter_direct(
        self,
        a: int,
        b: int,
        out: dict[str, np.ndarray],
        dst: np.ndarray | None,
        pending: decode.Pending | None = None,
        skip: set[str] = frozenset(),
    ) -> set[str]:
        """Rows ``[a, b)`` copied from the file straight to ``out[n][dst]`` where the
        variable allows it (see :meth:`DirectSource.scatter`); the names done."""
        if not self._local():
            return set()
        done = set()
        for name, src in self._direct.items():
            if src is None or name not in out or name in skip:
                continue
            if not src.scatter(a, b, out[name], dst, pending):  # not copyable from the file
                if dst is None:
                    src.read_into(a, b, out[name])
                else:  # read into a reused buffer, then put the rows in place
                    rows = self._buffers.empty((b - a, *out[name].shape[1:]), out[name].dtype)
                    src.read_into(a, b, rows)
                    _place(out[name], dst, rows, pending)
                    del rows
            done.add(name)
        return done

    @staticmethod
    def _local() -> bool:
        # Plain views of the file are read directly on the local schedulers; on a
        # distributed client every block is computed on the workers.
        return dask.base.get_scheduler() in (None, dask.threaded.get, dask.local.get_sync)

    def _window(
        self, w: Window, columns: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """The rows of a window's blocks in emission order, one array per variable.

        In order, a window is one block, returned as read (batches are views of it).
        Shuffled, each block's rows are written straight to their places in the
        window (a scatter read from the file where possible, else one copy), in this
        background thread: the training thread only takes views.
        """
        if not self.shuffle:
            return self._fetch(int(w.blocks[0]), columns=columns)
        total = int(self.plan.sizes[w.blocks].sum())
        dest = np.empty(total, np.int64)
        dest[w.order] = np.arange(total)  # where each pooled row goes
        out = {
            n: self._buffers.empty((total, *arr.shape[1:]), arr.dtype)
            for n, arr in self._arrays.items()
        }
        at = 0
        # The copies of all the window's blocks share the decode pool (see Pending).
        pending = decode.Pending()
        try:
            for block in w.blocks:
                size = int(self.plan.sizes[block])
                self._fetch(int(block), (out, dest[at : at + size], pending), columns)
                at += size
        except BaseException:
            with contextlib.suppress(BaseException):  # the first error is the one to see
                pending.wait()  # no copy may still write to the buffers; fds closed
            raise
        pending.wait()
        return out

    def _warn_if_blocks_recompute_chunks(self) -> None:
        """Warn when a computed variable's dask chunks hold several blocks.

        dask does not push a block's row slice through a transform
        (``(ds.image * 2)[a:b]`` computes the whole dask chunk, then slices), so every
        block would compute its whole chunk: measured 77 ms against 7 ms per 1,280-row
        block for 10,752-row chunks.
        """
        for name, arr in self._arrays.items():
            if self._direct[name] is not None or not isinstance(arr, da.Array):
                continue
            edges = np.concatenate([[0], np.cumsum(arr.chunks[0])])
            first = np.searchsorted(edges, self.plan.starts, side="right") - 1
            last = np.searchsorted(edges, self.plan.stops, side="left")
            computed = (edges[last] - edges[first]).sum()
            factor = computed / max(self.plan.rows, 1)
            if factor > 1.5:
                rows = int(self.plan.sizes.max())
                warnings.warn(
                    f"'{name}' in {self._where} is computed by dask in chunks of up to "
                    f"{max(arr.chunks[0])} rows along '{self.dim}', but BatchLoader reads "
                    f"blocks of {rows} rows: each block computes its whole chunk, "
                    f"{factor:.1f}x the rows it needs (dask does not slice before a "
                    "transform). Open the file with dask chunks no bigger than a block "
                    "before transforming (lazyh5.open_dataset's default chunks are; "
                    f"or pass chunks={{'{self.dim}': {rows}}}), or pass BatchLoader a "
                    "block_size as large as the dask chunks.",
                    UserWarning,
                    stacklevel=3,
                )

    def _read(self, a: int, b: int, skip: set[str] = frozenset()) -> dict[str, np.ndarray]:
        """Rows ``[a, b)`` of every fed variable (but ``skip``), computed together."""
        local = self._local()
        pieces = {}
        for name, arr in self._arrays.items():
            if name in skip:
                continue
            src = self._direct[name] if local else None
            pieces[name] = src.read(a, b) if src is not None else arr[a:b]
        lazy = {k: v for k, v in pieces.items() if isinstance(v, da.Array)}
        if lazy:
            pieces.update(zip(lazy, _compute_uncopied(list(lazy.values())), strict=True))
        return {k: np.asarray(v) for k, v in pieces.items()}

    def _pack(self, arrays: dict[str, np.ndarray], names: Names) -> Any:
        if isinstance(names, str):
            return arrays[names]
        if isinstance(names, Mapping):
            return {key: arrays[var] for key, var in names.items()}
        return tuple(arrays[n] for n in names)

    def _batch(self, arrays: dict[str, np.ndarray]) -> Any:
        x = self._pack(arrays, self.x)
        if self.y is None and self.sample_weight is None:
            return x
        y = None if self.y is None else self._pack(arrays, self.y)
        if self.sample_weight is None:
            return x, y
        return x, y, arrays[self.sample_weight]

    def batches(self, epoch: int | None = None) -> Iterator[Any]:
        """The batches of one epoch (default: the next one) without advancing the count."""
        epoch = self.epoch if epoch is None else epoch
        windows = list(epoch_windows(self.plan, epoch, self.seed, self.shuffle, self.window))
        # prefetch counts blocks; shuffled, whole windows are prepared ahead
        depth = -(-self.prefetch // self.window) if self.shuffle else self.prefetch
        bs, names, first = self.batch_size, self._names, self._names[0]
        # small variables of this epoch, read whole by the prefetch thread
        fetch = functools.partial(self._window, columns={} if self._local() else None)
        with Prefetcher(fetch, windows, depth=depth) as prefetcher:
            carry: dict[str, np.ndarray] | None = None
            for _, rows in prefetcher:
                total, start = len(rows[first]), 0
                if carry is not None:  # finish the batch the last window began
                    head = {n: rows[n][: bs - len(carry[first])] for n in names}
                    start = len(head[first])
                    carry = {n: np.concatenate([carry[n], head[n]]) for n in names}
                    if len(carry[first]) < bs:
                        continue
                    yield self._batch(carry)
                    carry = None
                full = start + (total - start) // bs * bs
                for i in range(start, full, bs):  # views of the window: no copy
                    yield self._batch({n: rows[n][i : i + bs] for n in names})
                if full < total:
                    carry = {n: rows[n][full:total] for n in names}
            if carry is not None and not self.drop_remainder:
                yield self._batch(carry)

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        self.epoch += 1
        return self.batches(epoch)

    # -- derived loaders and adapters -----------------------------------------------
    def _replace(self, **changes: Any) -> BatchLoader:
        kwargs = dict(
            dim=self.dim,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
            start=self.start,
            end=self.end,
            drop_remainder=self.drop_remainder,
            sample_weight=self.sample_weight,
            prefetch=self.prefetch,
            window=self.window,
            block_size=self.block_size,
        )
        kwargs.update(changes)
        return BatchLoader(self._ds, self.x, self.y, **kwargs)

    def split(
        self, fraction: float, *, shuffle_validation: bool = False
    ) -> tuple[BatchLoader, BatchLoader]:
        """Train and validation loaders over disjoint rows: the first ``fraction`` and the rest.

        The cut is moved to an HDF5 chunk edge when one lies within 1% of it. The
        validation loader does not shuffle unless ``shuffle_validation``.
        """
        unit = max(_chunk_rows(self._ds[n], self.dim) for n in self._names)
        cut = split_rows(self.start, self.end, fraction, unit)
        train = self._replace(end=cut)
        val = self._replace(start=cut, shuffle=self.shuffle and shuffle_validation)
        return train, val

    def keras(self, **kwargs: Any):
        """A ``keras.utils.PyDataset`` for ``fit``/``evaluate``/``predict`` (any backend).

        Keyword arguments go to ``PyDataset`` (``workers``, ``use_multiprocessing``,
        ``max_queue_size``); the loader already prefetches in the background, so the
        defaults (one worker) are usually best.
        """
        from .keras import LoaderPyDataset

        return LoaderPyDataset(self, **kwargs)

    def tf(self):
        """A ``tf.data.Dataset`` of the batches; each iteration over it is a new epoch."""
        from .tf import to_tf_dataset

        return to_tf_dataset(self)
