"""A loader's position as a small JSON-serialisable dict, and its check on load.

The state names the position (``epoch``, and ``batch``: batches of that epoch already
served) and what the order depends on: ``seed``, the rows, the shard, the batch size,
the window and the block layout. A state loaded into a loader that would produce a
different order is refused, naming what differs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ..errors import InvalidArgumentError

VERSION = 1
_POSITION = ("epoch", "batch")


def identity(loader: Any) -> dict[str, Any]:
    """What a loader's order depends on, as JSON-serialisable values."""
    where = loader._where.strip("'")
    return {
        "source": os.path.basename(where),
        "dim": str(loader.dim),
        "rows": [loader.start, loader.end],
        "batch_size": loader.batch_size,
        "drop_remainder": bool(loader.drop_remainder),
        "shuffle": bool(loader.shuffle),
        "seed": None if loader.seed is None else int(loader.seed),
        "window": loader.window,
        "blocks": len(loader.plan),
        "block_rows": int(loader.plan.sizes.max()),
        "shard": [loader.shard.index, loader.shard.count],
        "shard_batches": loader.shard_batches,
        "batches": len(loader),
    }


def make(loader: Any, epoch: int, batch: int) -> dict[str, Any]:
    """The state of ``loader`` at ``batch`` batches into ``epoch``."""
    if loader.shuffle and loader.seed is None:
        raise InvalidArgumentError(
            f"the shuffled loader over {loader._where} has seed=None, so its order cannot "
            "be replayed; build it with a seed (BatchLoader(..., seed=0)) to save its state"
        )
    if batch >= len(loader):  # the epoch is over: the next one starts
        epoch, batch = epoch + 1, 0
    return {"lazyh5_loader_state": VERSION, "epoch": int(epoch), "batch": int(batch)} | identity(
        loader
    )


def check(loader: Any, state: Any) -> tuple[int, int]:
    """The ``(epoch, batch)`` of ``state`` once checked against ``loader``."""
    where = loader._where
    if not isinstance(state, dict) or state.get("lazyh5_loader_state") != VERSION:
        raise InvalidArgumentError(
            f"cannot load a state into the loader over {where}: expected a dict from "
            f"BatchLoader.state_dict() (version {VERSION}), got {str(state)[:200]}"
        )
    mine = identity(loader)
    differ = [
        f"{key}={state.get(key)!r} (this loader: {mine[key]!r})"
        for key in mine
        if _normal(state.get(key)) != _normal(mine[key])
    ]
    if differ:
        raise InvalidArgumentError(
            f"the state does not match the loader over {where}, so it would not replay "
            f"the same order: {'; '.join(differ)}"
        )
    try:
        epoch, batch = (int(state[k]) for k in _POSITION)
    except (KeyError, TypeError, ValueError):
        epoch = batch = -1  # refused below
    if epoch < 0 or not 0 <= batch <= len(loader):
        raise InvalidArgumentError(
            f"the state for the loader over {where} has epoch={state.get('epoch')!r}, "
            f"batch={state.get('batch')!r}; expected epoch >= 0 and 0 <= batch <= "
            f"{len(loader)}"
        )
    return (epoch + 1, 0) if batch == len(loader) else (epoch, batch)


def _normal(value: Any) -> Any:
    """Lists and tuples alike (a state that went through JSON has lists)."""
    return list(value) if isinstance(value, tuple) else value


class Resumable:
    """:class:`~lazyh5.feed.loader.BatchLoader`'s epoch count and its saved state.

    Needs ``epoch``, ``_resume``, ``_current``, ``batches(epoch, start=...)`` and
    ``__len__`` from the loader.
    """

    epoch: int
    _resume: tuple[int, int] | None
    _current: list[int] | None

    def batches(self, epoch: int | None, *, start: int) -> Iterator[Any]:
        raise NotImplementedError  # the loader's

    def __iter__(self) -> Iterator[Any]:
        epoch, first = self._resume or (self.epoch, 0)
        self._resume = None
        self.epoch = epoch + 1
        self._current = current = [epoch, first]
        return self._counted(current)

    def _counted(self, current: list[int]) -> Iterator[Any]:
        for batch in self.batches(current[0], start=current[1]):
            current[1] += 1  # before the yield: the caller holds the batch
            yield batch

    def _position(self) -> tuple[int, int]:
        """``(epoch, batches served)`` where the next iteration carries on."""
        if self._resume is not None:
            return self._resume
        if self._current is not None:
            epoch, served = self._current
            # an epoch served to its end: the next one starts
            return (epoch, served) if served < len(self) else (epoch + 1, 0)
        return self.epoch, 0

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: a small JSON-serialisable dict for
        :meth:`load_state_dict`.

        After ``k`` batches of an epoch, a loader given this state yields the rest of
        that epoch, in the same order, then the following epochs as this one would.
        The state also records what the order depends on (file, rows, shard, seed,
        batch size, window, blocks), checked on load.

        Examples
        --------
        >>> import numpy as np, lazyh5
        >>> ds = lazyh5.create("state.h5", {"label": ((100,), "i8")})
        >>> ds["label"].h5[:] = np.arange(100)
        >>> loader = lazyh5.BatchLoader(ds, "label", batch_size=30, seed=1)
        >>> it = iter(loader)
        >>> first = next(it)
        >>> state = loader.state_dict()
        >>> state["epoch"], state["batch"]
        (0, 1)
        >>> rest = [b.tolist() for b in it]
        >>> again = lazyh5.BatchLoader(ds, "label", batch_size=30, seed=1)
        >>> again.load_state_dict(state)
        >>> [b.tolist() for b in again] == rest
        True
        """
        return make(self, *self._position())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Carry on from ``state`` (from :meth:`state_dict`, possibly through JSON): the
        next iteration yields the rest of the saved epoch. Raises
        :class:`~lazyh5.errors.InvalidArgumentError` if the state belongs to a loader
        with another order (another file, rows, shard, seed, batch size...)."""
        self._resume = check(self, state)
        self.epoch, self._current = self._resume[0], None
