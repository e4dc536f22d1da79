"""BatchLoader: numpy batches from a lazy Dataset, computed block by block."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Hashable, Iterator
from typing import Any

import numpy as np
import xarray as xr
from dask.utils import parse_bytes

from .._files import source_label
from ..backend.threads import Pending
from ..errors import InvalidArgumentError
from ..options import computes_here
from .adapters import Adapters
from .batching import cut_batches
from .buffers import Buffers
from .checks import (
    Names,
    check_batch_size,
    check_range,
    check_variables,
    pack,
    warn_if_blocks_recompute_chunks,
)
from .direct import SMALL_ROW, DirectSource, direct_source
from .elementwise import mapped_views
from .plan import BlockPlan, chunk_rows, plan_blocks, split_rows
from .prefetch import Prefetcher
from .shard import Shard, check_mode, parse
from .shuffle import EpochOrder, Window, epoch_windows, shard_rows
from .sources import DaskRows, Source, gather_plain, local_sources, read_rows
from .state import Resumable


class BatchLoader(Resumable, Adapters):
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
    shard
        ``(index, count)``: feed only shard ``index`` of ``count`` (one per process of a
        data-parallel job), or ``"auto"``: the rank and world size of the framework
        that is active (``torch.distributed``, JAX, Keras' distribution, ``TF_CONFIG``;
        ``repr`` says which). Shards are disjoint runs of whole blocks of one global
        order per epoch (the same ``seed`` on every process), with as many batches each.
    shard_batches
        ``"pad"`` (default): shards of an epoch that is not a multiple of ``count`` rows
        repeat up to ``count - 1`` of its rows; ``"drop"``: up to ``count - 1`` rows
        are left out of the epoch.

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
    >>> halves = [lazyh5.BatchLoader(ds, "image", "label", seed=0, shard=(i, 2)) for i in (0, 1)]
    >>> [len(h) for h in halves], np.sort(np.concatenate([y for h in halves for _, y in h]))[:3]
    ([2, 2], array([0, 1, 2]))
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
        shard: tuple[int, int] | str | None = None,
        shard_batches: str = "pad",
    ) -> None:
        if not isinstance(ds, xr.Dataset):
            raise TypeError(f"BatchLoader needs an xarray.Dataset, got {type(ds).__name__}")
        self._ds = ds
        self._where = where = source_label(ds.variables)
        if x is None:
            raise InvalidArgumentError(
                f"BatchLoader over {where} needs at least one input variable x"
            )
        self.x, self.y, self.sample_weight = x, y, sample_weight
        self.dim = dim
        self.batch_size = check_batch_size(batch_size, where)
        self.shuffle, self.seed = shuffle, seed
        self.drop_remainder = drop_remainder
        self.prefetch, self.window = max(1, int(prefetch)), max(1, int(window))
        self.block_size = block_size
        self._names = check_variables(ds, (x, y, sample_weight), dim, where)
        self.start, self.end = check_range(start, end, ds.sizes[dim], dim, where)
        self.shard: Shard = parse(shard, where)
        self.shard_batches = check_mode(shard_batches, where)
        self._check_shard()
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # set by load_state_dict
        self._current: list[int] | None = None  # [epoch, batches served] of the iteration
        self._orders: dict[int, EpochOrder] = {}
        # Sample dim first, once: slicing the dask array per block is cheaper than
        # xarray's isel.
        self._arrays: dict[str, Any] = {n: ds[n].transpose(dim, ...).data for n in self._names}
        self._direct: dict[str, DirectSource | None] = {
            n: direct_source(ds[n], dim) for n in self._names
        }
        # Elementwise functions of plain views (astype, / 255): their input read directly.
        self._mapped = mapped_views(ds, [n for n, s in self._direct.items() if s is None], dim)
        self._block_bytes = parse_bytes(block_size)
        self.plan: BlockPlan = plan_blocks(
            ds, self._names, dim, self.start, self.end, self._block_bytes, self._mapped
        )
        self._small = self._small_variables()
        # blocks in flight, in order or shuffled (windows), with one spare; a small
        # variable's (labels') rows are not pooled, see Buffers
        self._buffers = Buffers(
            limit=(self.prefetch + 4) * len(self._names), smallest=self._block_bytes // 16
        )
        read = {**self._direct, **self._mapped}
        warn_if_blocks_recompute_chunks(self._arrays, read, self.plan, dim, where)

    def _small_variables(self) -> list[str]:
        """Variables of small rows (labels), read whole per epoch (see SmallColumn),
        when they take at most a few blocks' worth of memory."""
        budget = 4 * self._block_bytes
        return [
            n
            for n, src in self._direct.items()
            if src is not None
            and self._arrays[n][:1].nbytes < SMALL_ROW
            and self._arrays[n][:1].nbytes * self.rows <= budget
        ]

    def _check_shard(self) -> None:
        count = self.shard.count
        if count > 1 and self.shuffle and self.seed is None:
            raise InvalidArgumentError(
                f"cannot shard {self._where} with shuffle=True and seed=None: every shard "
                "must draw the same order, so pass the same seed on every process "
                "(BatchLoader(..., seed=0))"
            )
        if self.epoch_rows == 0:  # shard_batches="drop" with fewer rows than shards
            raise InvalidArgumentError(
                f"cannot split the {self.rows} rows of {self._where} into {count} shards "
                "with shard_batches='drop': fewer rows than shards"
            )

    # -- sizes ----------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows selected by ``start``/``end`` (all shards together)."""
        return self.end - self.start

    @property
    def epoch_rows(self) -> int:
        """Rows this loader (its shard) feeds per epoch, before dropping a remainder."""
        return shard_rows(self.rows, self.shard.count, self.shard_batches == "drop")

    def __len__(self) -> int:
        if self.drop_remainder:
            return self.epoch_rows // self.batch_size
        return math.ceil(self.epoch_rows / self.batch_size)

    def __repr__(self) -> str:
        block_rows = int(self.plan.sizes.max())
        shard = ""
        if self.shard.count > 1 or self.shard.source:
            shard = f", {self.shard} ({self.epoch_rows} rows, shard_batches={self.shard_batches!r})"
        return (
            f"<lazyh5.BatchLoader {self._where}: x={self.x!r}, y={self.y!r}, rows "
            f"{self.start}:{self.end} along '{self.dim}' ({self.rows} rows){shard}, "
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
        if not computes_here():
            return [DaskRows(self._arrays)]
        small = self._small if epoch else []
        buffers = self._buffers if epoch else Buffers(limit=0)
        rows = (self.start, self.end)
        return local_sources(self._arrays, self._direct, self._mapped, small, buffers, rows)

    def _read(self, a: int, b: int, sources: list[Source]) -> dict[str, np.ndarray]:
        """Rows ``[a, b)`` of every fed variable in fresh arrays, read now (outside an
        epoch's stream) from ``sources`` (``_sources(epoch=False)``)."""
        out: dict[str, np.ndarray] = {}
        for source in sources:
            source.read(a, b, out, None, None)
        return out

    def _fetch(
        self, sources: list[Source], rows: tuple[int, int], out: dict, dst: Any, pending: Any
    ) -> None:
        """Rows ``[a, b)`` (of a block) into ``out[name][dst]``, or set as ``out[name]``
        when ``dst`` is ``None``: see :class:`~lazyh5.feed.sources.Source`."""
        a, b = rows
        for source in sources:
            source.read(a, b, out, dst, pending)

    def _window(self, w: Window, sources: list[Source]) -> dict[str, np.ndarray]:
        """The rows of a window's blocks in emission order, one array per variable.

        In order, a window is one block, returned as read (batches are views of it).
        Shuffled, each block's rows are written straight to their places in the
        window (a scatter read from the file where possible, else one copy), in this
        background thread: the training thread only takes views.
        """
        if not self.shuffle:
            block: dict[str, np.ndarray] = {}
            self._fetch(sources, (int(w.starts[0]), int(w.stops[0])), block, None, None)
            return block
        total = w.rows
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
            for lo, hi in zip(w.starts.tolist(), w.stops.tolist(), strict=True):
                self._fetch(sources, (lo, hi), out, dest[at : at + hi - lo], pending)
                at += hi - lo
        except BaseException:
            with contextlib.suppress(BaseException):  # the first error is the one to see
                pending.wait()  # no copy may still write to the buffers; fds closed
            raise
        pending.wait()
        return out

    def _batch(self, arrays: dict[str, np.ndarray]) -> Any:
        return pack(arrays, self.x, self.y, self.sample_weight)

    def _order(self, epoch: int) -> EpochOrder:
        """Epoch ``epoch``'s windows (of this shard), kept for the latest epoch asked: a
        stream and the direct reads of one epoch see the same order, even with
        ``seed=None``."""
        order = self._orders.get(epoch)
        if order is None:
            drop = self.shard_batches == "drop"
            shard = (self.shard.index, self.shard.count)
            windows = epoch_windows(
                self.plan, epoch, self.seed, self.shuffle, self.window, shard, drop
            )
            order = EpochOrder(list(windows), self.batch_size)
            self._orders = {epoch: order}
        return order

    def batches(self, epoch: int | None = None, *, start: int = 0) -> Iterator[Any]:
        """The batches of one epoch (default: the next one) without advancing the count,
        from batch ``start`` on (the windows before it are not read).

        Examples
        --------
        >>> import lazyh5
        >>> ds = lazyh5.open_dataset("feed.h5")
        >>> loader = lazyh5.BatchLoader(ds, "label", batch_size=30, seed=1)
        >>> [len(b) for b in loader.batches(0, start=2)]
        [30, 10]
        """
        epoch = self.epoch if epoch is None else epoch
        if start >= len(self):
            return
        order = self._order(epoch)
        w0, skip = order.start(start)
        # prefetch counts blocks; shuffled, whole windows are prepared ahead
        depth = -(-self.prefetch // self.window) if self.shuffle else self.prefetch
        bs, names = self.batch_size, self._names
        fetch = functools.partial(self._window, sources=self._sources())
        with Prefetcher(fetch, order.windows[w0:], depth=depth) as prefetcher:
            pieces = (rows for _, rows in prefetcher)
            for batch in cut_batches(pieces, names, bs, skip=skip, last=not self.drop_remainder):
                yield self._batch(batch)

    def _read_batch(self, epoch: int, index: int) -> Any:
        """Batch ``index`` of ``epoch``, read now, outside the stream (fresh arrays)."""
        return self._batch(self._read_rows(self._order(epoch).batch_rows(index)))

    def _read_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``rows`` of every fed variable, read now (see :func:`.sources.read_rows`):
        rows of one chunk as one read where chunks are decoded (one decode per chunk),
        else run by run (a row copied from the file costs no more than its bytes)."""
        if computes_here() and all(self._direct.values()):
            unique, inverse = np.unique(rows, return_inverse=True)
            got = {n: gather_plain(s, unique, self._arrays[n]) for n, s in self._direct.items()}
            if all(v is not None for v in got.values()):
                return {n: v[inverse] for n, v in got.items()}
        plain = all(
            "uncompressed" in self._ds[n].encoding.get("lazyh5_storage", "") for n in self._names
        )
        unit = 1 if plain else max(chunk_rows(self._ds[n], self.dim) for n in self._names)
        sources = self._sources(epoch=False)
        return read_rows(functools.partial(self._read, sources=sources), rows, unit)

    # -- derived loaders and adapters -----------------------------------------------
    _SETTINGS = (
        *("dim", "batch_size", "shuffle", "seed", "start", "end", "drop_remainder"),
        *("sample_weight", "prefetch", "window", "block_size", "shard", "shard_batches"),
    )

    def _replace(self, **changes: Any) -> BatchLoader:
        kwargs = {name: getattr(self, name) for name in self._SETTINGS}
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
        defaults (one worker) are usually best. ``dataset[i]`` is batch ``i`` of the
        epoch's order; pass ``shuffle=False`` to ``fit`` (the loader shuffles), so that
        Keras asks for the batches in order and they come from the stream.
        """
        from .keras import LoaderPyDataset

        return LoaderPyDataset(self, **kwargs)

    def tf(self):
        """A ``tf.data.Dataset`` of the batches; each iteration over it is a new epoch."""
        from .tf import to_tf_dataset

        return to_tf_dataset(self)
