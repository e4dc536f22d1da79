"""BatchLoader: numpy batches from a lazy Dataset, computed block by block."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import dask.local
import dask.threaded
import numpy as np
import xarray as xr
from dask.utils import parse_bytes

from .._files import source_label
from .._warn import warn_user
from ..backend.threads import Pending
from ..errors import (
    DimensionError,
    InvalidArgumentError,
    InvalidIndexError,
    ObjectNotFoundError,
    UnsupportedDtypeError,
)
from .buffers import Buffers
from .direct import SMALL_ROW, DirectSource, direct_source
from .plan import BlockPlan, chunk_rows, plan_blocks, split_rows
from .prefetch import Prefetcher
from .shuffle import Window, epoch_windows
from .sources import DaskRows, FileRows, SmallColumn, Source

Names = str | Sequence[str] | Mapping[str, str] | None


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
        # Sample dim first, once: slicing the dask array per block is cheaper than
        # xarray's isel.
        self._arrays: dict[str, Any] = {n: ds[n].transpose(dim, ...).data for n in self._names}
        self._direct: dict[str, DirectSource | None] = {
            n: direct_source(ds[n], dim) for n in self._names
        }
        self._small = self._small_variables()
        # blocks in flight, in order or shuffled (windows), with one spare
        self._buffers = Buffers(limit=(self.prefetch + 4) * len(self._names))
        self._warn_if_blocks_recompute_chunks()

    def _small_variables(self) -> list[str]:
        """Variables of small rows (labels), read whole per epoch (see SmallColumn),
        when they take at most a few blocks' worth of memory."""
        budget = 4 * parse_bytes(self.block_size)
        return [
            n
            for n, src in self._direct.items()
            if src is not None
            and self._arrays[n][:1].nbytes < SMALL_ROW
            and self._arrays[n][:1].nbytes * self.rows <= budget
        ]

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
    def _sources(self, epoch: bool = True) -> list[Source]:
        """Where rows come from. Plain views of the file are read directly on the local
        schedulers; on a distributed client dask computes every block on the workers.
        Made per ``epoch``: small variables are read whole once, blocks go to reused
        buffers; else (a single read) neither."""
        if not self._local():
            return [DaskRows(self._arrays)]
        direct = {n: src for n, src in self._direct.items() if src is not None}
        small = self._small if epoch else []
        buffers = self._buffers if epoch else Buffers(limit=0)
        files: list[Source] = [
            FileRows(n, direct[n], self._arrays[n], buffers) for n in direct if n not in small
        ]
        column = SmallColumn({n: direct[n] for n in small}, self.start, self.end)
        computed = {n: arr for n, arr in self._arrays.items() if n not in direct}
        return [*files, column, DaskRows(computed)]

    def _read(self, a: int, b: int) -> dict[str, np.ndarray]:
        """Rows ``[a, b)`` of every fed variable in fresh arrays, read now (outside an
        epoch's stream)."""
        out: dict[str, np.ndarray] = {}
        for source in self._sources(epoch=False):
            source.read(a, b, out, None, None)
        return out

    def _fetch(self, sources: list[Source], block: int, out: dict, dst: Any, pending: Any) -> None:
        """Block ``block``'s rows into ``out[name][dst]``, or set as ``out[name]`` when
        ``dst`` is ``None``: see :class:`~lazyh5.feed.sources.Source`."""
        a, b = int(self.plan.starts[block]), int(self.plan.stops[block])
        for source in sources:
            source.read(a, b, out, dst, pending)

    @staticmethod
    def _local() -> bool:
        return dask.base.get_scheduler() in (None, dask.threaded.get, dask.local.get_sync)

    def _window(self, w: Window, sources: list[Source]) -> dict[str, np.ndarray]:
        """The rows of a window's blocks in emission order, one array per variable.

        In order, a window is one block, returned as read (batches are views of it).
        Shuffled, each block's rows are written straight to their places in the
        window (a scatter read from the file where possible, else one copy), in this
        background thread: the training thread only takes views.
        """
        if not self.shuffle:
            block: dict[str, np.ndarray] = {}
            self._fetch(sources, int(w.blocks[0]), block, None, None)
            return block
        total = int(self.plan.sizes[w.blocks].sum())
        dest = np.empty(total, np.int64)
        dest[w.order] = np.arange(total)  # where each pooled row goes
        out = {
            n: self._buffers.empty((total, *arr.shape[1:]), arr.dtype)
            for n, arr in self._arrays.items()
        }
        at = 0
        # The copies of all the window's blocks share the decode pool (see Pending).
        pending = Pending()
        try:
            for b in w.blocks:
                size = int(self.plan.sizes[b])
                self._fetch(sources, int(b), out, dest[at : at + size], pending)
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
        block would compute its whole chunk, many times the rows it needs.
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
                warn_user(
                    f"'{name}' in {self._where} is computed by dask in chunks of up to "
                    f"{max(arr.chunks[0])} rows along '{self.dim}', but BatchLoader reads "
                    f"blocks of {rows} rows: each block computes its whole chunk, "
                    f"{factor:.1f}x the rows it needs (dask does not slice before a "
                    "transform). Open the file with dask chunks no bigger than a block "
                    "before transforming (lazyh5.open_dataset's default chunks are; "
                    f"or pass chunks={{'{self.dim}': {rows}}}), or pass BatchLoader a "
                    "block_size as large as the dask chunks.",
                )

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
        fetch = functools.partial(self._window, sources=self._sources())
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
        unit = max(chunk_rows(self._ds[n], self.dim) for n in self._names)
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
