"""Keras 3 adapter: a ``keras.utils.PyDataset`` over a BatchLoader (any Keras backend)."""

from __future__ import annotations

import threading
from typing import Any

try:
    import keras
except ImportError as err:  # pragma: no cover - exercised only without keras
    raise ImportError(
        "BatchLoader.keras() depends on Keras 3; install it with `pip install lazyh5[keras]` "
        "(plus a backend: tensorflow, jax or torch)"
    ) from err


class LoaderPyDataset(keras.utils.PyDataset):
    """Serves a loader's batches by index, streaming one epoch at a time.

    Keras asks for batches 0, 1, 2, ... in order (it may first peek at batch 0); those
    come straight from the loader's prefetching stream. ``on_epoch_end`` starts the
    next epoch (a new shuffle). Out-of-order requests (several ``workers``) are served
    by replaying the epoch's stream, which is correct but slower.
    """

    def __init__(self, loader, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # so workers / use_multiprocessing / max_queue_size apply
        self._loader = loader
        self._epoch = loader.epoch
        self._stream = None
        self._next = 0
        self._last: tuple[int, Any] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._loader)

    @property
    def num_batches(self) -> int:
        return len(self._loader)

    def _restart(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = self._loader.batches(self._epoch)
        self._next = 0

    def __getitem__(self, index: int) -> Any:
        n = len(self._loader)
        if not -n <= index < n:
            raise IndexError(f"batch {index} out of range for {n} batches")
        index %= n
        with self._lock:
            if self._last is not None and self._last[0] == index:
                return self._last[1]
            if self._stream is None or index < self._next:
                self._restart()
            while self._next <= index:
                batch = next(self._stream)
                self._next += 1
            self._last = (index, batch)
            if self._next == n:  # epoch consumed: the next request starts a new one
                self._stream.close()
                self._stream = None
                self._epoch += 1
                self._next = 0
            return batch

    def on_epoch_end(self) -> None:
        with self._lock:
            if self._stream is not None:  # an epoch ended early (steps_per_epoch)
                self._stream.close()
                self._stream = None
                self._epoch += 1
            self._next = 0
            self._last = None
