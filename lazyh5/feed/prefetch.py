"""Compute blocks in a background thread, holding a bounded number at a time."""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_DONE = object()
# Prefetchers whose thread may still run, for the exit hook below.
_LIVE: weakref.WeakSet[Prefetcher] = weakref.WeakSet()
_EXIT_WAIT = 10.0  # seconds the exit hook waits for blocks being computed
_EXITING = threading.Event()  # set by the exit hook: no new block is started


class Prefetcher:
    """Run ``fetch(item)`` for each item in a daemon thread, ``depth`` results ahead.

    At most ``depth`` finished results wait in the queue, plus the one being computed,
    so memory stays bounded. Exceptions are re-raised in the consumer. ``close()`` (or
    leaving the ``with`` block, or garbage collection of the iterator) stops the thread.
    """

    def __init__(self, fetch: Callable[[Any], Any], items: Iterable[Any], depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(fetch, items), name="lazyh5-prefetch", daemon=True
        )
        _LIVE.add(self)
        try:
            self._thread.start()
        except BaseException:
            # Ctrl-C can land in start() after the thread began (start() waits for it):
            # no one will close this prefetcher, so stop the thread now, or it would
            # wait forever on its full queue.
            self._signal_stop()
            raise

    def _put(self, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, fetch: Callable[[Any], Any], items: Iterable[Any]) -> None:
        try:
            for item in items:
                if self._stop.is_set() or _EXITING.is_set():
                    return
                if not self._put((item, fetch(item), None)):
                    return
        except BaseException as err:  # handed to the consumer, which re-raises it
            self._put((None, None, err))
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        try:
            while True:
                got = self._queue.get()
                if got is _DONE:
                    return
                item, value, err = got
                if err is not None:
                    raise err
                yield item, value
        finally:
            self.close()

    def _signal_stop(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break

    def close(self) -> None:
        self._signal_stop()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=30)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@atexit.register
def _stop_all_at_exit() -> None:
    """Stop every prefetch thread before the interpreter finalizes.

    Daemon threads still running when Python finalizes are frozen the next time they
    take the GIL, possibly while holding h5py's global lock, which the main thread then
    needs to close files: the process hung at exit (seen with several loaders left
    mid-epoch by Ctrl-C, ``tests/test_soak.py``). ``atexit`` hooks run before that
    point, so each thread finishes the block it computes and leaves.
    """
    _EXITING.set()  # prefetchers started from now on fetch nothing
    deadline = time.monotonic() + _EXIT_WAIT
    while time.monotonic() < deadline:
        running = [p for p in list(_LIVE) if p._thread.is_alive()]
        running = [p for p in running if threading.current_thread() is not p._thread]
        if not running:
            return
        for p in running:
            p._signal_stop()
        for p in running:
            p._thread.join(timeout=max(0.0, deadline - time.monotonic()))
