"""PyTorch adapter: a BatchLoader as a ``torch.utils.data.IterableDataset``.

``DataLoader(loader.torch(), batch_size=None, num_workers=k)`` feeds the loader's
batches from ``k`` worker processes:

- **Workers split windows, not rows.** The epoch's windows (its blocks, pooled by the
  shuffle) are cut into ``k`` runs of about equal rows; worker ``w`` serves the
  batches that begin in its run, so each block is read and decoded by one worker. A
  batch that runs past the end of a worker's run takes its last rows from the next
  run by a direct read (at most ``batch_size - 1`` rows per worker and epoch). The
  batches are the loader's own, ``len(loader)`` of them: every row once per epoch,
  and as many batches on every shard of a data-parallel job.
- **Files are opened in each worker.** A worker builds its own loader from the
  Dataset; in a forked worker, the read-only files lazyh5 opened in the parent are
  closed (in the child only) and reopened, so no HDF5 handle crosses the fork.
- **One epoch for all workers.** A small shared-memory table holds, per worker id, the
  epoch (and first batch) of its next iteration: each iteration moves it on, so
  persistent workers and workers re-created every epoch count alike, and
  ``set_epoch(e)`` (as ``DistributedSampler.set_epoch``) sets it for all of them.
- **Resuming.** ``state_dict()``/``load_state_dict()`` follow torchdata's
  ``StatefulDataLoader`` protocol: called inside each worker, the state is that
  worker's position; called in the main process on a loader's state, every worker
  carries on from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError, UnsupportedDtypeError
from .batching import cut_batches
from .prefetch import Prefetcher
from .state import check, make

try:
    import torch
    from torch.utils.data import IterableDataset, get_worker_info
except ImportError as err:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "BatchLoader.torch() and torch_batches() depend on PyTorch; install it with "
        "`pip install lazyh5[torch]`"
    ) from err

#: Worker ids the shared epoch table has room for.
MAX_WORKERS = 1024
# Files and loaders a forked worker inherited: kept referenced so that they are never
# closed (or finalised) in the child, where closing a writable file could write to it.
_INHERITED: list[Any] = []
_CLEANED_IN: list[int] = []  # the process whose inherited files are already set aside


def _forget_inherited_files() -> None:
    """In a worker process: drop the files lazyh5 opened before the fork from xarray's
    file cache, so that this process opens its own.

    A forked child shares the parent's HDF5 handles (same descriptors, a copy of the
    library's state); HDF5 would even hand the inherited file back to a new open of
    the same path. Read-only files are closed here, in the child only (the parent's
    descriptors stay open); writable ones are set aside unclosed.
    """
    if os.getpid() in _CLEANED_IN:
        return
    _CLEANED_IN[:] = [os.getpid()]
    from xarray.backends.file_manager import FILE_CACHE

    for key in list(FILE_CACHE):
        manager_id = key[-1]
        if not (isinstance(manager_id, tuple) and manager_id[:1] == ("lazyh5",)):
            continue
        inherited = FILE_CACHE[key]
        del FILE_CACHE[key]  # no eviction callback: nothing closed behind our back
        if key[2] == "r":
            inherited.close()
        _INHERITED.append(inherited)


class LoaderDataset(IterableDataset):
    """A BatchLoader's batches as torch tensors, split among ``DataLoader`` workers.

    Use it with ``batch_size=None`` (each item is already a batch). Iterating it in
    the main process (``num_workers=0``) yields the loader's epochs in its order;
    with workers, each worker serves the batches that begin in its share of the
    epoch's windows (see :mod:`lazyh5.feed.torch`), and the ``DataLoader``
    interleaves them. ``len()`` is the loader's batches per epoch.
    """

    def __init__(self, loader: Any, runs: int | None = None) -> None:
        super().__init__()
        # Given: items are runs of up to ``runs`` batches, each with its position
        # ``(worker, first batch)``, for :class:`~lazyh5.feed.torch_batches.TorchBatches`
        self._runs = runs
        settings = {name: getattr(loader, name) for name in loader._SETTINGS}
        self._seeded = loader.seed is not None or not loader.shuffle
        if not self._seeded:  # every worker must draw the same order: one seed for all
            settings["seed"] = int(np.random.default_rng().integers(2**63))
        self._recipe = (type(loader), loader._ds, loader.x, loader.y, settings)
        self._where, self._len = loader._where, len(loader)
        epoch, batch = loader._position()
        self._slots = torch.tensor([[epoch, batch]] * MAX_WORKERS, dtype=torch.int64)
        self._slots.share_memory_()  # seen by every worker, forked or spawned
        self._loader: Any = None
        self._pid = -1
        # [epoch, next batch, end batch, worker, workers] of this process's iteration
        self._live: list[int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Spawned workers get the recipe, not the loader (open files, buffers, threads).
        return {**self.__dict__, "_loader": None, "_pid": -1, "_live": None}

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"<lazyh5 torch dataset of {self._recipe[0].__name__} over {self._where}>"

    def _own_loader(self) -> Any:
        """This process's loader, built here on first use (after a fork or a spawn)."""
        if self._pid != os.getpid():
            if self._loader is not None:  # the parent's, copied by fork: never touched
                _INHERITED.append(self._loader)
            if get_worker_info() is not None:
                _forget_inherited_files()
            cls, ds, x, y, settings = self._recipe
            self._loader, self._pid = cls(ds, x, y, **settings), os.getpid()
        return self._loader

    @staticmethod
    def _me() -> tuple[int, int]:
        info = get_worker_info()
        me = (info.id, info.num_workers) if info is not None else (0, 1)
        if me[1] > MAX_WORKERS:
            raise InvalidArgumentError(
                f"a lazyh5 torch dataset serves at most {MAX_WORKERS} DataLoader workers, "
                f"got num_workers={me[1]}"
            )
        return me

    def __iter__(self) -> Iterator[Any]:
        worker, workers = self._me()
        loader = self._own_loader()
        epoch, first = (int(v) for v in self._slots[worker].tolist())
        # The next iteration of this worker id, and of ids this DataLoader does not
        # use (a later one with more workers), is the next epoch.
        self._slots[worker] = torch.tensor([epoch + 1, 0])
        self._slots[workers:] = torch.tensor([epoch + 1, 0])
        if workers == 1 and self._runs is None:
            start, stop, batches = first, len(loader), loader.batches(epoch, start=first)
        else:
            runs = worker_runs(loader, epoch, workers)
            start, stop = max(first, runs[worker][0]), runs[worker + 1][0]
            batches = run_batches(loader, epoch, start, stop, runs[worker + 1][1], self._runs or 1)
        live = self._live = [epoch, start, stop, worker, workers]
        if self._runs is not None:
            return _positioned(batches, live, self._where, loader.batch_size)
        return _counted(batches, live, self._where)

    def set_epoch(self, epoch: int) -> None:
        """Make ``epoch`` the next epoch of every worker (and of the main process), as
        ``DistributedSampler.set_epoch`` does; call it before iterating the
        ``DataLoader``. A position loaded by :meth:`load_state_dict` in that epoch is
        kept. Without it, each iteration is the next epoch.

        Examples
        --------
        >>> import numpy as np, lazyh5
        >>> ds = lazyh5.create("epochs.h5", {"label": ((100,), "i8")})
        >>> ds["label"].h5[:] = np.arange(100)
        >>> dataset = lazyh5.BatchLoader(ds, "label", batch_size=40, seed=0).torch()
        >>> dataset.set_epoch(3)
        >>> [len(y) for y in dataset], dataset.state_dict()["epoch"]
        ([40, 40, 20], 4)
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 0:
            raise InvalidArgumentError(f"set_epoch needs an epoch >= 0, got {epoch!r}")
        keep = self._slots[:, 0] == int(epoch)
        self._slots[~keep] = torch.tensor([int(epoch), 0])

    def state_dict(self) -> dict[str, Any]:
        """Where this process's iteration is (JSON-serialisable).

        In the main process, the loader's state (:meth:`BatchLoader.state_dict`);
        inside a ``DataLoader`` worker, that worker's position, with its ``worker``
        ``[id, num_workers]``, as torchdata's ``StatefulDataLoader`` collects it.
        """
        loader = self._own_loader()
        if not self._seeded:
            raise InvalidArgumentError(
                f"the shuffled loader over {self._where} has seed=None, so its order cannot "
                "be replayed; build it with a seed (BatchLoader(..., seed=0)) to save its state"
            )
        if self._live is None:  # not iterated here yet: where the next iteration starts
            worker, workers = self._me()
            epoch, batch = (int(v) for v in self._slots[worker].tolist())
        else:
            epoch, batch, _, worker, workers = self._live
        if workers == 1:
            return make(loader, epoch, batch)
        # A worker's batches end inside the epoch: no roll-over to the next one.
        state = make(loader, epoch, 0)
        return {**state, "epoch": epoch, "batch": batch, "worker": [worker, workers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Carry on from ``state``: a loader's state (every worker serves the rest of its
        epoch, as split among them) or, inside a worker, that worker's own state."""
        loader = self._own_loader()
        epoch, batch = check(loader, state)
        owner = state.get("worker")
        if owner is None:
            self._slots[:] = torch.tensor([epoch, batch])
            return
        worker, workers = self._me()
        if list(owner) != [worker, workers]:
            raise InvalidArgumentError(
                f"the state of DataLoader worker {owner[0]} of {owner[1]} over {self._where} "
                f"cannot be loaded into worker {worker} of {workers}: resume with the same "
                "num_workers"
            )
        self._slots[worker] = torch.tensor([int(state["epoch"]), int(state["batch"])])


def _counted(batches: Iterator[Any], live: list[int], where: str) -> Iterator[Any]:
    for batch in batches:
        live[1] += 1  # before the yield: the caller holds the batch
        yield to_torch(batch, where)


def _positioned(runs: Iterator[Any], live: list[int], where: str, bs: int) -> Iterator[Any]:
    """Each run of batches as ``((worker, its first batch), run)``."""
    for run in runs:
        first = live[1]
        live[1] += -(-rows_of(run) // bs)
        yield (live[3], first), to_torch(run, where)


def rows_of(batch: Any) -> int:
    """The rows of a batch (array, tuple, list or dict of arrays or tensors)."""
    while isinstance(batch, dict | tuple | list):
        batch = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return len(batch)


def to_torch(batch: Any, where: str) -> Any:
    """A batch (array, tuple or dict of arrays) as tensors sharing the arrays' memory."""
    if isinstance(batch, dict):
        return {k: to_torch(v, where) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(to_torch(v, where) for v in batch)
    try:
        return torch.from_numpy(batch)
    except TypeError as err:
        raise UnsupportedDtypeError(
            f"cannot hand a batch of {batch.dtype} from {where} to torch ({err}); convert the "
            "variable lazily first, e.g. ds[name].astype('float32')"
        ) from None


def worker_runs(loader: Any, epoch: int, workers: int) -> list[tuple[int, int]]:
    """For each worker, ``(first batch, end row of its windows)``, plus ``(batches,
    rows)`` at the end: worker ``w`` serves batches ``[runs[w][0], runs[w + 1][0])``,
    which begin in its windows, rows ``[., runs[w + 1][1])`` of the epoch's order."""
    order = loader._order(epoch)
    edges = order.edges
    bs, total = loader.batch_size, len(loader)
    # cut the windows where the rows are closest to equal shares
    targets = np.arange(1, workers) * order.rows / workers
    cuts = np.clip(np.searchsorted(edges, targets), 0, len(edges) - 1)
    ends = [int(edges[c]) for c in cuts]
    runs = [(0, 0)] + [(min(-(-e // bs), total), e) for e in ends]
    return [*runs, (total, order.rows)]


def run_batches(
    loader: Any, epoch: int, start: int, stop: int, own_end: int, runs: int = 1
) -> Iterator[Any]:
    """Batches ``[start, stop)`` of the epoch: rows before ``own_end`` streamed from
    their windows (prefetched, as the loader does), the rest read directly; ``runs``
    consecutive batches of a window as one (see :func:`.batching.cut_batches`)."""
    bs, names = loader.batch_size, loader._names
    order = loader._order(epoch)
    lo, hi = start * bs, min(stop * bs, order.rows)
    if lo >= hi:
        return
    for batch in cut_batches(_pieces(loader, order, lo, hi, own_end), names, bs, runs=runs):
        yield loader._batch(batch)


def _pieces(
    loader: Any, order: Any, lo: int, hi: int, own_end: int
) -> Iterator[dict[str, np.ndarray]]:
    """Rows ``[lo, hi)`` of the epoch's order, in order, as pieces (views of windows)."""
    edges = order.edges
    end = min(hi, own_end)
    first = int(np.searchsorted(edges, lo, side="right")) - 1
    last = int(np.searchsorted(edges, end, side="left"))
    depth = -(-loader.prefetch // loader.window) if loader.shuffle else loader.prefetch
    fetch = _window_reader(loader, order)
    with Prefetcher(fetch, list(range(first, last)), depth=depth) as prefetcher:
        for w, rows in prefetcher:
            at = int(edges[w])
            a, b = max(lo, at) - at, min(end, int(edges[w + 1])) - at
            yield {n: v[a:b] for n, v in rows.items()}
    if hi > own_end:  # the end of the last batch, in the next worker's windows
        yield loader._read_rows(_emitted_rows(order, own_end, hi))


def _window_reader(loader: Any, order: Any) -> Any:
    """Window ``w`` of ``order`` read and pooled, with this epoch's sources."""
    sources = loader._sources()

    def fetch(w: int) -> dict[str, np.ndarray]:
        return loader._window(order.windows[w], sources)

    return fetch


def _emitted_rows(order: Any, a: int, b: int) -> np.ndarray:
    """The rows (along the loader's dimension) at positions ``[a, b)`` of the order."""
    parts = []
    w = int(np.searchsorted(order.edges, a, side="right")) - 1
    while a < b:
        lo, hi = int(order.edges[w]), int(order.edges[w + 1])
        top = min(b, hi)
        parts.append(order.windows[w].file_rows(np.arange(a - lo, top - lo)))
        a, w = top, w + 1
    return np.concatenate(parts)
