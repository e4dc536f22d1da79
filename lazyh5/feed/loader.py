"""BatchLoader: numpy batches from a lazy Dataset, computed block by block."""

from __future__ import annotations

import math
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

from ..errors import (
    DimensionError,
    InvalidArgumentError,
    InvalidIndexError,
    ObjectNotFoundError,
    UnsupportedDtypeError,
)
from .plan import BlockPlan, _chunk_rows, plan_blocks, split_rows
from .prefetch import Prefetcher
from .shuffle import epoch_windows

Names = str | Sequence[str] | Mapping[str, str] | None


def _source(ds: xr.Dataset) -> str:
    for var in ds.variables.values():
        if "source" in var.encoding:
            return f"'{var.encoding['source']}'"
    return "the dataset"


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


class _WindowRows:
    """The rows of a window's blocks in emission order, gathered batch by batch.

    Gathering each batch straight from the blocks copies every row once, into a
    cache-sized array; pooling the window first (concatenate, then permute) copied it
    twice through main memory and measured ~2x slower. Rows are copied one by one as
    bytes with the GIL held: numpy's gathers (``np.take``, fancy indexing) release and
    retake the GIL for every call, which on 2 cores stalled the training thread behind
    the prefetch thread (Keras fit from a shuffled loader: 13.9k samples/s with
    ``np.take``, 17.4k like this, 18.7k for in-order views; plain iteration no slower).
    """

    def __init__(self, blocks: list[dict[str, np.ndarray]], order: np.ndarray | None):
        first = next(iter(blocks[0]))
        sizes = [len(b[first]) for b in blocks]
        self.blocks = blocks
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.total = int(self.offsets[-1])
        self.order = order
        if order is not None:  # once per window: block and row within it of every row
            self.which = np.searchsorted(self.offsets, order, side="right") - 1
            self.local = order - self.offsets[self.which]
        self._bytes: dict[str, list[memoryview]] = {}

    def _rows_as_bytes(self, name: str) -> list[memoryview]:
        if name not in self._bytes:
            self._bytes[name] = [
                memoryview(np.ascontiguousarray(b[name]).reshape(-1).view(np.uint8))
                for b in self.blocks
            ]
        return self._bytes[name]

    def take(self, i: int, j: int, names: list[str]) -> dict[str, np.ndarray]:
        j = min(j, self.total)
        if self.order is None:
            if len(self.blocks) == 1:  # in order: views of the block, no copy
                return {n: self.blocks[0][n][i:j] for n in names}
            which = np.searchsorted(self.offsets, np.arange(i, j), side="right") - 1
            local = np.arange(i, j) - self.offsets[which]
        else:
            which, local = self.which[i:j], self.local[i:j]
        pairs = list(zip(which.tolist(), local.tolist(), strict=True))
        out = {}
        for n in names:
            ref = self.blocks[0][n]
            arr = np.empty((j - i, *ref.shape[1:]), ref.dtype)
            size = arr.itemsize * math.prod(ref.shape[1:])  # bytes per row
            if size:
                src = self._rows_as_bytes(n)
                dst = memoryview(arr.reshape(-1).view(np.uint8))
                for k, (b, r) in enumerate(pairs):
                    dst[k * size : (k + 1) * size] = src[b][r * size : (r + 1) * size]
            out[n] = arr
        return out


class BatchLoader:
    """Batches of rows of a lazy Dataset, for training loops, Keras ``fit`` and tf.data.

    Rows are read in **blocks**: runs of whole HDF5 chunks of about ``block_size`` bytes,
    each computed by one ``dask.compute`` (so each HDF5 chunk is decoded once, with any
    lazy transform of ``ds`` applied to the whole block), in a background thread that
    keeps ``prefetch`` blocks ready. Batches are sliced out of memory.

    With ``shuffle=True`` the blocks are visited in random order and the rows of
    ``window`` consecutive blocks are pooled and permuted: every row comes exactly once
    per epoch, in a new order each epoch, reproducible for a given ``seed``. Memory held
    is at most ``window + prefetch + 1`` blocks.

    Batches read in order are views of their block (of the variable itself when ``ds``
    holds numpy arrays): copy one before modifying it in place.

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
        self._where = _source(ds)
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
                    f"{sorted(map(str, self._ds.data_vars))}"
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
    def _fetch(self, block: int) -> dict[str, np.ndarray]:
        return self._read(int(self.plan.starts[block]), int(self.plan.stops[block]))

    def _read(self, a: int, b: int) -> dict[str, np.ndarray]:
        """Rows ``[a, b)`` of every fed variable, computed together."""
        pieces = {}
        for name in self._names:
            var = self._ds[name].isel({self.dim: slice(a, b)})
            if var.dims[0] != self.dim:
                var = var.transpose(self.dim, ...)
            pieces[name] = var.data
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
        order = [int(b) for w in windows for b in w.blocks]
        bs = self.batch_size
        with Prefetcher(self._fetch, order, depth=self.prefetch) as prefetcher:
            blocks = iter(prefetcher)
            carry: dict[str, np.ndarray] | None = None
            for w in windows:
                got = [next(blocks)[1] for _ in w.blocks]
                # in order (no permutation): batches are views of the block, no copy
                rows = _WindowRows(got, w.order if self.shuffle else None)
                start = 0
                if carry is not None:  # finish the batch the last window began
                    need = bs - len(carry[self._names[0]])
                    head = rows.take(0, need, self._names)
                    start = len(head[self._names[0]])
                    carry = {n: np.concatenate([carry[n], head[n]]) for n in self._names}
                    if len(carry[self._names[0]]) < bs:
                        continue
                    yield self._batch(carry)
                    carry = None
                total = rows.total
                full = start + (total - start) // bs * bs
                for i in range(start, full, bs):
                    yield self._batch(rows.take(i, i + bs, self._names))
                if full < total:
                    carry = rows.take(full, total, self._names)
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
