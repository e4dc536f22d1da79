"""Keras 3 adapter: a ``keras.utils.PyDataset`` over a BatchLoader (any Keras backend)."""

from __future__ import annotations

import threading
from typing import Any

from .._warn import warn_user
from ..errors import InvalidArgumentError, InvalidIndexError
from .state import check, make

try:
    import keras
except ImportError as err:  # pragma: no cover - exercised only without keras
    raise ImportError(
        "BatchLoader.keras() depends on Keras 3; install it with `pip install lazyh5[keras]` "
        "(plus a backend: tensorflow, jax or torch)"
    ) from err


class LoaderPyDataset(keras.utils.PyDataset):
    """Serves a loader's batches to Keras: ``dataset[i]`` is batch ``i`` of the epoch.

    Shuffled or not, index ``i`` is batch ``i`` of the loader's order for the current
    epoch (between ``on_epoch_begin`` and ``on_epoch_end``; the next epoch outside
    them), so processes that ask for different indices get different rows. Requests
    in order, and strided ones (``s, s + k, s + 2k, ...``: what a sharded Keras
    asks for), come from the loader's prefetching stream; others (Keras shuffling
    batch indices, ``fit``'s default) are read directly, which is slower: lazyh5 warns
    once per dataset, and ``fit(..., shuffle=False)`` avoids it (the loader shuffles).

    A dataset made from a loader that carries on from a saved state (see
    :meth:`BatchLoader.load_state_dict`) first serves the rest of that epoch:
    ``len()`` is the batches left, until that epoch ends.
    """

    def __init__(self, loader, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # so workers / use_multiprocessing / max_queue_size apply
        self._loader = loader
        self._epoch, self._first = loader._position()
        self._stream = None
        self._stream_epoch = -1
        self._next = 0  # the batch the stream yields next
        self._in_epoch = False
        self._prev: int | None = None  # the last batch asked for, and the step before it
        self._step: int | None = None
        self._served = 0  # this epoch
        self._random = 0
        self._warned = False
        bs = loader.batch_size
        pooled = int(loader.plan.sizes.max()) * (loader.window if loader.shuffle else 1)
        self._max_skip = 16 + pooled // bs  # about a window's batches
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._loader) - self._first

    @property
    def num_batches(self) -> int:
        return len(self)

    def _direct(self, batch: int) -> Any:
        return self._loader._read_batch(self._epoch, batch)

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _from_stream(self, batch: int) -> Any:
        if self._stream is None or self._stream_epoch != self._epoch or batch < self._next:
            self._close_stream()
            self._stream = self._loader.batches(self._epoch, start=batch)
            self._stream_epoch, self._next = self._epoch, batch
        while self._next < batch:  # a stride: skip the batches other shards serve
            next(self._stream)
            self._next += 1
        self._next += 1
        return next(self._stream)

    def _streamable(self, batch: int) -> bool:
        """In the stream's reach, or the start of a sequence or a stride."""
        live = self._stream is not None and self._stream_epoch == self._epoch
        if live and self._next <= batch <= self._next + self._max_skip:
            return True
        if self._prev is None:
            return self._in_epoch  # the first request of an epoch (not a peek)
        step = batch - self._prev
        return 0 < step <= self._max_skip + 1 and step == self._step

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        if not -n <= index < n:
            raise InvalidIndexError(f"batch {index} out of range for {n} batches")
        batch = self._first + index % n
        with self._lock:
            streamable = self._streamable(batch)
            if self._prev is not None:
                self._step = batch - self._prev
            self._prev = batch
            self._served += 1
            if streamable:
                return self._from_stream(batch)
            if self._in_epoch:
                self._random += 1
                if self._random == max(8, len(self) // 10) and not self._warned:
                    self._warned = True
                    warn_user(
                        f"Keras asks for the batches of {self._loader._where} out of "
                        "order (fit shuffles batch indices by default), so each one is a "
                        "separate read (slow). Pass shuffle=False to fit(): the loader "
                        "already shuffles when built with shuffle=True (a new order each "
                        "epoch, reproducible with its seed).",
                    )
            return self._direct(batch)

    def _check_keras_sharding(self) -> None:
        """A sharded loader under a Keras that also shards by index would feed each
        process a fraction of its shard."""
        dist = keras.distribution.distribution()
        if self._loader.shard.count == 1 or dist is None:
            return
        if getattr(dist, "auto_shard_dataset", False) and getattr(dist, "num_data_shards", 1) > 1:
            raise InvalidArgumentError(
                f"the loader over {self._loader._where} is sharded ({self._loader.shard}) "
                "and Keras' distribution shards datasets by batch index too "
                "(auto_shard_dataset=True): build the distribution with "
                "auto_shard_dataset=False, or give Keras an unsharded loader"
            )

    def on_epoch_begin(self) -> None:
        self._check_keras_sharding()
        with self._lock:
            self._in_epoch = True
            self._prev = self._step = None
            self._served = self._random = 0

    def on_epoch_end(self) -> None:
        with self._lock:
            self._close_stream()
            if self._in_epoch:  # Keras also calls it before its first epoch
                self._epoch += 1
                self._first = 0
            self._in_epoch = False
            self._prev = self._step = None

    # -- resuming -------------------------------------------------------------------
    def state_dict(self, batches: int | None = None) -> dict[str, Any]:
        """The loader's state after ``batches`` batches of the current epoch (default:
        the batches served in it), as :meth:`BatchLoader.state_dict`.

        Keras may fetch batches ahead of training, so a checkpoint callback passes
        the batches trained: ``state_dict(batches=batch + 1)`` in
        ``on_train_batch_end(batch)`` (see docs/feeding.md, "Resuming").
        """
        done = self._served if batches is None else int(batches)
        return make(self._loader, self._epoch, self._first + done)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Carry on from ``state``: the next epoch served is the rest of the saved one."""
        with self._lock:
            self._epoch, self._first = check(self._loader, state)
            self._close_stream()
            self._prev = self._step = None
