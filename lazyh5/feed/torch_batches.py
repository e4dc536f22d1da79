"""PyTorch workers that hand over runs of batches, cut into batches in the training
process.

torch's ``DataLoader`` moves each item from a worker to the training process through a
queue and shared memory: about 1.3 ms an item on a 2-core machine, whatever its size,
which caps ``DataLoader(loader.torch(), batch_size=None, num_workers=k)`` at several
hundred batches a second. Here each item is a run of consecutive batches of a window
(up to a block's rows), tagged with its worker and the index of its first batch; the
training process cuts it into the loader's batches (views: no copy). Every row still
comes once per epoch, in the loader's batches, ``len(loader)`` of them; only the order
in which the workers' batches interleave differs.

Written here because torch has no such mode: a ``DataLoader``'s items are what the
training loop receives, and ``batch_sampler``/``collate_fn`` batch in the workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader  # .torch, imported first, says how to install it

from ..errors import InvalidArgumentError
from .state import check, make
from .torch import LoaderDataset, rows_of, worker_runs


class TorchBatches:
    """A loader's batches as torch tensors from ``DataLoader`` workers that hand over
    runs of batches (see :mod:`lazyh5.feed.torch_batches`).

    Made by :meth:`BatchLoader.torch_batches`; ``dataloader_kwargs`` go to the
    ``DataLoader`` (``num_workers``, ``persistent_workers``, ``pin_memory``,
    ``multiprocessing_context``...), except those that batch, which the loader sets.
    ``persistent_workers`` defaults to ``True`` with workers: a worker started anew
    each epoch builds its loader and fills its buffers anew.

    Attributes
    ----------
    dataset : LoaderDataset
        The workers' dataset (runs of up to ``runs`` batches).
    dataloader : torch.utils.data.DataLoader
        The ``DataLoader`` over it.
    """

    def __init__(self, loader: Any, **dataloader_kwargs: Any) -> None:
        where = loader._where
        for name in ("batch_size", "batch_sampler", "sampler", "shuffle", "collate_fn"):
            if name in dataloader_kwargs:
                raise InvalidArgumentError(
                    f"torch_batches() over {where} sets the DataLoader's batching itself: "
                    f"leave out {name}= (batch_size and shuffle are the loader's)"
                )
        self.batch_size = loader.batch_size
        self.runs = max(1, int(loader.plan.sizes.max(initial=1)) // self.batch_size)
        self.dataset = LoaderDataset(loader, runs=self.runs)
        self.workers = max(1, int(dataloader_kwargs.get("num_workers", 0)))
        # Workers started anew each epoch would build their loaders and buffers anew.
        dataloader_kwargs.setdefault("persistent_workers", self.workers > 1)
        self.dataloader = DataLoader(self.dataset, batch_size=None, **dataloader_kwargs)
        self._where = where
        self._loaded: dict[str, Any] | None = None  # a state loaded, until iterated
        # {"epoch", "start": each worker's first batch, "next": its next batch} of the
        # iteration under way
        self._live: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return (
            f"<lazyh5 torch batches over {self._where}: {self.workers} worker(s), "
            f"runs of up to {self.runs} batches of {self.batch_size}>"
        )

    def __iter__(self) -> Iterator[Any]:
        slots = self.dataset._slots[: self.workers].tolist()  # before the workers move on
        live = {
            "epoch": int(slots[0][0]),
            "start": [int(b) for _, b in slots],
            "next": {},
            "done": False,
        }
        self._live, self._loaded = live, None
        return self._cut(live)

    def _cut(self, live: dict[str, Any]) -> Iterator[Any]:
        bs = self.batch_size
        for (worker, first), run in self.dataloader:
            for j, i in enumerate(range(0, rows_of(run), bs)):
                live["next"][worker] = first + j + 1  # before the yield: the caller has it
                yield _rows(run, i, i + bs)
        live["done"] = True

    def set_epoch(self, epoch: int) -> None:
        """Make ``epoch`` the next epoch: see :meth:`LoaderDataset.set_epoch`."""
        self.dataset.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Where the iteration is (JSON-serialisable): the loader's state, with the next
        batch of each worker (``worker_batches``) when an epoch is under way. Batches a
        worker had handed over but the loop had not taken are served again on resume.
        """
        live = self._live
        if live is None:
            return self._loaded or self.dataset.state_dict()
        loader = self.dataset._own_loader()
        epoch = live["epoch"]
        if live["done"]:
            return make(loader, epoch + 1, 0)
        runs = worker_runs(loader, epoch, self.workers)
        nxt = [
            max(live["next"].get(w, 0), live["start"][w], runs[w][0]) for w in range(self.workers)
        ]
        if all(nxt[w] >= runs[w + 1][0] for w in range(self.workers)):
            return make(loader, epoch + 1, 0)
        return {**make(loader, epoch, 0), "worker_batches": nxt}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Carry on from ``state`` (from :meth:`state_dict`, with as many workers, or
        from :meth:`BatchLoader.state_dict`)."""
        loader = self.dataset._own_loader()
        epoch, _ = check(loader, state)
        starts = state.get("worker_batches")
        if starts is None:
            self.dataset.load_state_dict(state)
        elif not isinstance(starts, list) or len(starts) != self.workers:
            raise InvalidArgumentError(
                f"the state over {self._where} holds the next batches of "
                f"{len(starts) if isinstance(starts, list) else starts!r} workers, this "
                f"DataLoader has {self.workers}: resume with the same num_workers"
            )
        else:
            whole = all(isinstance(b, int) and 0 <= b <= len(loader) for b in starts)
            if not whole:  # checked before any is set: a refused state changes nothing
                raise InvalidArgumentError(
                    f"the state over {self._where} has worker_batches={starts!r}: each "
                    f"must be an integer in [0, {len(loader)}]"
                )
            for w, b in enumerate(starts):
                self.dataset._slots[w, 0], self.dataset._slots[w, 1] = epoch, b
        self._live, self._loaded = None, state


def _rows(batch: Any, a: int, b: int) -> Any:
    """Rows ``[a, b)`` of every tensor of a batch (tensor, tuple or dict), as a tuple
    where the loader's batches are tuples (the ``DataLoader`` made them lists)."""
    if isinstance(batch, dict):
        return {k: _rows(v, a, b) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return tuple(_rows(v, a, b) for v in batch)
    return batch[a:b]
