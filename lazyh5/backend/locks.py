"""The locks of an open file: xarray's process-local ones, or a cluster-wide one.

A file opened read-only, or writable in one process, takes xarray's ``HDF5_LOCK``
(plus its per-file write lock when writable). A file opened writable while a
dask.distributed client is active is shared by every process of the cluster: its
lock is a :class:`ClusterFileLock`, which also closes the file on release.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any

import h5py  # noqa: F401  (first: h5py's exit handler must run after ours, below)
from xarray.backends import CachingFileManager
from xarray.backends.locks import (
    HDF5_LOCK,
    DummyLock,
    acquire,
    combine_locks,
    ensure_lock,
    get_write_lock,
)


def is_cluster_lock(lock: Any) -> bool:
    """Whether ``lock`` is a ``distributed.Lock`` (never imports distributed)."""
    if "distributed" not in sys.modules:
        return False
    from distributed import Lock

    return isinstance(lock, Lock)


# Per thread: {filename: [depth, {id(manager): manager}]} of the ClusterFileLocks held.
_HELD = threading.local()
# Seconds a cluster-locked open waits for other processes' handles to close.
CLUSTER_BUSY_WAIT = 5.0


class ClusterFileLock:
    """The lock of one HDF5 file opened writable (``mode="r+"``) on a dask.distributed cluster.

    HDF5 keeps a per-process cache of a file's metadata and takes an exclusive OS lock
    on a file opened for writing, so a writable file may be open in one process at a
    time, and a process that opens it must not trust what it cached before another
    process wrote. This lock makes that so for every process of the cluster (the
    client and the workers) and every access (reads included):

    - acquiring takes the ``distributed.Lock`` named by the file's path (cluster-wide,
      first) and then the process-local locks (``HDF5_LOCK``);
    - the file is opened inside the lock, on first use (``H5Store.acquire``);
    - releasing flushes and **closes** the file, then releases the locks, so the next
      holder, in any process, opens it afresh and sees everything written before.

    It is re-entrant within one thread (the file is closed when the outermost hold
    ends), so opening a dataset can hold it across all of its metadata reads.

    Parameters
    ----------
    lock
        The locks to take: a ``CombinedLock`` of ``HDF5_LOCK`` and
        ``distributed.Lock(path)``, or any lock that contains a ``distributed.Lock``.
    manager
        The file manager whose file is closed on release.
    key
        What identifies the file for re-entrancy (its absolute path).
    """

    def __init__(self, lock: Any, manager: CachingFileManager, key: str):
        locks = list(getattr(lock, "locks", (lock,)))
        self.lock = lock
        self.cluster_locks = sorted(
            (lk for lk in locks if is_cluster_lock(lk)), key=lambda lk: lk.name
        )
        local = [lk for lk in locks if not is_cluster_lock(lk)]
        self.local_lock = combine_locks(local) if local else DummyLock()
        self.manager = manager
        self.key = key

    @staticmethod
    def _held() -> dict[str, list[Any]]:
        held = getattr(_HELD, "files", None)
        if held is None:
            held = _HELD.files = {}
        return held

    def acquire(self, blocking: bool = True) -> bool:
        """Take the cluster-wide lock, then the local ones (no-op when this thread holds it)."""
        held = self._held()
        entry = held.get(self.key)
        if entry is not None:
            entry[0] += 1
            entry[1][id(self.manager)] = self.manager
            return True
        taken = []
        for lk in [*self.cluster_locks, self.local_lock]:
            if not acquire(lk, blocking):
                for t in reversed(taken):
                    t.release()
                return False
            taken.append(lk)
        held[self.key] = [1, {id(self.manager): self.manager}]
        return True

    def release(self) -> None:
        """Close the file (flushing it) and release the locks, at the outermost release."""
        held = self._held()
        entry = held[self.key]
        entry[0] -= 1
        if entry[0] > 0:
            return
        del held[self.key]
        try:
            for manager in entry[1].values():
                manager.close()
        finally:
            self.local_lock.release()
            for lk in reversed(self.cluster_locks):
                lk.release()

    def locked(self) -> bool:
        """Whether any process or thread holds the lock."""
        return any(lk.locked() for lk in [*self.cluster_locks, self.local_lock])

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"ClusterFileLock({self.key!r}, {[*self.cluster_locks, self.local_lock]!r})"


def file_lock(filename: str, mode: str, lock: Any = None) -> Any:
    """The lock to take for every access to ``filename`` opened with ``mode``.

    ``lock=None`` gives xarray's default for HDF5 files: ``HDF5_LOCK``, combined with
    the file's write lock when it is writable.
    """
    if lock is None:
        if mode == "r":
            return HDF5_LOCK
        return combine_locks([HDF5_LOCK, get_write_lock(filename)])
    return ensure_lock(lock)


def access_lock(base: Any, mode: str, manager: CachingFileManager, key: str) -> Any:
    """``base``, or a :class:`ClusterFileLock` over it when the file is writable and
    ``base`` holds a ``distributed.Lock``."""
    if mode == "r+" and any(is_cluster_lock(lk) for lk in getattr(base, "locks", (base,))):
        return ClusterFileLock(base, manager, key)
    return base


# Fork safety. A child process starts with one thread and a copy of every lock: one
# that another thread of the parent held at the fork stays held in the child forever,
# so a DataLoader worker forked while a loader's thread reads a file hangs at its first
# read. Forking therefore waits for HDF5_LOCK (reads hold it briefly: lazyh5 copies and
# decodes chunks outside it), and both processes release it after. The wait is bounded
# in case the forking thread itself holds it.
_FORK_WAIT = 30.0
_held_for_fork = False


def _take_before_fork() -> None:
    global _held_for_fork
    _held_for_fork = HDF5_LOCK.acquire(timeout=_FORK_WAIT)


def _give_after_fork() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        HDF5_LOCK.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_take_before_fork,
        after_in_parent=_give_after_fork,
        after_in_child=_give_after_fork,
    )


# Exit safety. Python freezes a daemon thread (Keras' or tf.data's, or the user's) that
# is inside h5py when it finalizes, holding h5py's own lock; the main thread then waits
# for that lock forever when it frees h5py objects, or HDF5 crashes under it while h5py
# unregisters its type converters (both seen: a hang in 9 of 10 exits with two threads
# reading, a segfault in CI). lazyh5 enters h5py only holding HDF5_LOCK and through
# `H5Store.acquire`: at exit, once the threads inside have left (the lock is free),
# every later access raises instead of entering h5py. atexit runs handlers last
# registered first, so this one runs before h5py's.
_EXIT_WAIT = 30.0
_exiting = False


def exiting() -> bool:
    """Whether Python is exiting: lazyh5 no longer enters h5py."""
    return _exiting


@atexit.register
def _close_at_exit() -> None:
    global _exiting
    _exiting = True
    if HDF5_LOCK.acquire(timeout=_EXIT_WAIT):  # the threads inside h5py have left it
        HDF5_LOCK.release()
