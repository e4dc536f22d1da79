"""The decode thread pool: chunk copies and decodes of one selection run in parallel.

Codecs and ``os.preadv`` release the GIL, so a selection spanning several chunks
decodes them in a small shared pool, sized by :func:`decode_threads`. Pools are
per process: a forked child starts with none.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# Below this many bytes per selection, handing work to the pool costs more than it
# saves (a pool round trip against inflating a chunk).
POOL_MIN_BYTES = 1 << 20

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def decode_threads() -> int:
    """Threads decoding one selection: ``LAZYH5_DECODE_THREADS`` if set, else 1 inside a
    dask.distributed worker (the cluster already runs a task per core there), the
    usable CPUs shared among the workers inside a PyTorch ``DataLoader`` worker, else
    the usable CPUs (threaded scheduler, BatchLoader, plain indexing).

    Worker processes started from this environment inherit the variable.

    Examples
    --------
    >>> from lazyh5.backend.threads import decode_threads
    >>> decode_threads() >= 1
    True
    """
    env = os.environ.get("LAZYH5_DECODE_THREADS", "")
    if env.strip().isdigit() and int(env) > 0:
        return int(env)
    if _in_distributed_worker():
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // _torch_workers())


def _torch_workers() -> int:
    """``num_workers`` inside a PyTorch ``DataLoader`` worker, else 1."""
    worker = sys.modules.get("torch.utils.data._utils.worker")  # never import torch here
    info = worker.get_worker_info() if worker is not None else None
    return info.num_workers if info is not None else 1


def _in_distributed_worker() -> bool:
    worker = sys.modules.get("distributed.worker")  # never import distributed ourselves
    if worker is None:
        return False
    try:
        worker.get_worker()
    except ValueError:
        return False
    return True


def get_pool(n: int) -> ThreadPoolExecutor:
    """The shared pool of ``n`` decode threads."""
    with _pools_lock:
        if n not in _pools:
            _pools[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="lazyh5-decode")
        return _pools[n]


def _reset_pools_after_fork() -> None:
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pools_after_fork)


def run_each(fn: Callable[[T], Any], items: Sequence[T], nbytes: int) -> None:
    """``fn(item)`` for every item: in the pool when there are several and ``nbytes``
    (the work's size) pays for the hand-off, else here, in order.

    Examples
    --------
    >>> from lazyh5.backend.threads import run_each
    >>> seen = []
    >>> run_each(seen.append, [1, 2, 3], nbytes=0)
    >>> seen
    [1, 2, 3]
    """
    threads = decode_threads()
    if threads > 1 and len(items) > 1 and nbytes >= POOL_MIN_BYTES:
        list(get_pool(threads).map(fn, items))
    else:
        for item in items:
            fn(item)


class Pending:
    """Work handed to the decode pool, and steps to run once all of it is done.

    A shuffle window hands over the runs of rows of all its blocks, so they spread
    evenly over the threads instead of waiting for the slowest thread block by
    block. :meth:`wait` waits for everything, then runs the steps (closing
    descriptors), even after an error, and re-raises the first error.
    """

    def __init__(self) -> None:
        self._threads = decode_threads()
        self._futures: list[Any] = []
        self._after: list[Callable[[], Any]] = []

    def submit(self, task: Callable[[], Any]) -> None:
        if self._threads > 1:
            self._futures.append(get_pool(self._threads).submit(task))
        else:
            task()

    def then(self, step: Callable[[], Any]) -> None:
        self._after.append(step)

    def wait(self) -> None:
        error: BaseException | None = None
        for future in self._futures:
            try:
                future.result()
            except BaseException as err:  # wait for the others before raising
                error = error or err
        for step in self._after:
            try:
                step()
            except BaseException as err:
                error = error or err
        self._futures, self._after = [], []
        if error is not None:
            raise error
