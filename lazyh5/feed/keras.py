"""Keras 3 adapter: a ``keras.utils.PyDataset`` over a BatchLoader (any Keras backend)."""

from __future__ import annotations

import threading
from typing import Any

from .._warn import warn_user
from ..errors import InvalidIndexError

try:
    import keras
except ImportError as err:  # pragma: no cover - exercised only without keras
    raise ImportError(
        "BatchLoader.keras() depends on Keras 3; install it with `pip install lazyh5[keras]` "
        "(plus a backend: tensorflow, jax or torch)"
    ) from err


class LoaderPyDataset(keras.utils.PyDataset):
    """Serves a loader's batches to Keras, streaming one epoch at a time.

    Between ``on_epoch_begin`` and ``on_epoch_end`` batches come from the loader's
    prefetching stream. A shuffling loader serves the next batch of its stream
    whatever index Keras asks for: Keras' own shuffle of batch indices would otherwise
    force random reads, and the loader's chunk-aware shuffle already gives a new order
    each epoch, every row once. A loader that does not shuffle serves exactly batch
    ``index`` (in-order requests come from the stream, others are read directly), so
    ``predict`` outputs line up with the rows. Requests outside an epoch (Keras peeks at
    a batch to learn shapes) are read directly and do not disturb the stream.
    """

    def __init__(self, loader, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # so workers / use_multiprocessing / max_queue_size apply
        self._loader = loader
        self._epoch = loader.epoch
        self._stream = None
        self._next = 0
        self._in_epoch = False
        self._out_of_order = 0  # per epoch, for a loader that does not shuffle
        self._warned = False
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._loader)

    @property
    def num_batches(self) -> int:
        return len(self._loader)

    def _direct(self, index: int) -> Any:
        bs = self._loader.batch_size
        a = self._loader.start + index * bs
        b = min(a + bs, self._loader.end)
        return self._loader._batch(self._loader._read(a, b))

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __getitem__(self, index: int) -> Any:
        n = len(self._loader)
        if not -n <= index < n:
            raise InvalidIndexError(f"batch {index} out of range for {n} batches")
        index %= n
        with self._lock:
            if not self._in_epoch:
                return self._direct(index)
            if not self._loader.shuffle and index != self._next:
                self._out_of_order += 1
                if self._out_of_order == max(8, len(self._loader) // 10) and not self._warned:
                    self._warned = True
                    warn_user(
                        f"Keras asks for the batches of {self._loader._where} out of order "
                        "(fit shuffles batch indices by default), and this loader was built "
                        "with shuffle=False, so each such batch is a separate read (slow). "
                        "Pass shuffle=False to fit() to train in file order, or build the "
                        "BatchLoader with shuffle=True for lazyh5's chunk-aware shuffle.",
                    )
                return self._direct(index)
            if self._stream is None:
                self._stream = self._loader.batches(self._epoch)
            try:
                batch = next(self._stream)
            except StopIteration:  # more requests than batches: start the next epoch
                self._epoch += 1
                self._stream = self._loader.batches(self._epoch)
                batch = next(self._stream)
            self._next = index + 1
            return batch

    def on_epoch_begin(self) -> None:
        with self._lock:
            self._close_stream()
            self._in_epoch = True
            self._next = 0
            self._out_of_order = 0

    def on_epoch_end(self) -> None:
        with self._lock:
            self._close_stream()
            self._in_epoch = False
            self._epoch += 1
            self._next = 0
