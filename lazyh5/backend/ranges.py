"""The bytes of a file, by byte range: one small interface for local and remote files.

The read path copies plain chunks and fetches compressed ones by their place in the
file (:mod:`lazyh5.backend.rows`, :mod:`lazyh5.backend.read`). Two sources give those
bytes, both with ``readv(buffers, where)`` (fill ``buffers`` from byte ``where`` on),
``fetch(ranges)`` (the bytes of many ``(start, stop)`` ranges), ``dup()`` and
``close()``:

- :class:`LocalBytes`: a descriptor of a local file, read with ``os.preadv`` (which
  releases the GIL), or scattered to many places at once (``scatter``, libc's
  ``preadv`` given an array of :func:`iovecs`); ``dup`` duplicates the descriptor, so a
  copy outlives the h5py file it came from.
- :class:`RangeReader`: an object behind an fsspec URL. Ranges are fetched many at a
  time (an async file system's requests all in flight together), neighbours
  coalesced into one request, and transient faults retried with backoff
  (:func:`lazyh5.set_options`'s ``remote_*`` settings); an object shorter than the
  ranges HDF5 asks for is a :class:`~lazyh5.errors.CorruptFileError`.
"""

from __future__ import annotations

import asyncio
import bisect
import ctypes
import errno
import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import CorruptFileError, FileMissingError, Lazyh5Error, RemoteReadError
from ..options import remote_settings
from .redact import redact_text

# Ranges closer than this are fetched as one request (the bytes between are cheaper
# than one more round trip to an object store), up to _MAX_REQUEST bytes each.
_GAP = 1 << 20
_MAX_REQUEST = 32 << 20
# Requests in flight at once, per fetch.
_CONCURRENCY = 32
# No retry waits longer than this, whatever the backoff and attempt.
_MAX_WAIT = 2.0

# Background fetches waited for at once (each sends its requests together).
_BACKGROUND = 16
_pool: list[ThreadPoolExecutor | None] = [None]
_pool_lock = threading.Lock()

_counted = [0]
_count_lock = threading.Lock()

_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


def _libc_preadv() -> Any:
    """libc's ``preadv`` with a 64-bit offset, called with an iovec array built by
    numpy; ``None`` where libc has none (rows are then read through h5py)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    fn = getattr(libc, "preadv64", None) or getattr(libc, "preadv", None)
    if fn is None or ctypes.sizeof(ctypes.c_void_p) != ctypes.sizeof(ctypes.c_size_t):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong]
    fn.restype = ctypes.c_ssize_t
    return fn


# A scatter through os.preadv takes one memoryview per row, made under the GIL: at
# 100,000 rows an epoch, enough of them outlived a young collection to bring a full
# one (50 ms with xarray and dask loaded) every other epoch, 25-35% of a shuffled
# epoch. libc's preadv takes an array numpy builds; ctypes releases the GIL for it.
_preadv = _libc_preadv()


def scatters() -> bool:
    """Whether :meth:`LocalBytes.scatter` works here (libc has ``preadv``)."""
    return _preadv is not None


def iovecs(out: np.ndarray, offsets: np.ndarray, size: int) -> np.ndarray:
    """The ``struct iovec`` array placing ``size`` bytes at each of ``offsets`` (byte
    offsets into ``out``, a C-contiguous array: checked, as the kernel will write there).
    The caller keeps ``out`` alive while the array is in use."""
    if not out.flags.c_contiguous:
        raise ValueError("iovecs needs a C-contiguous array")
    if len(offsets) and (offsets.min() < 0 or offsets.max() + size > out.nbytes):
        raise IndexError(f"destinations outside an array of {out.nbytes} bytes")
    iov = np.empty((len(offsets), 2), np.uintp)  # struct iovec {void *base; size_t len}
    iov[:, 0] = offsets
    iov[:, 0] += out.ctypes.data
    iov[:, 1] = size
    return iov


def request_count() -> int:
    """How many range requests this process has made to remote files so far.

    Examples
    --------
    >>> from lazyh5.backend.ranges import request_count
    >>> request_count() >= 0
    True
    """
    return _counted[0]


def _count(n: int) -> None:
    with _count_lock:
        _counted[0] += n


class LocalBytes:
    """The bytes of a local file, through its descriptor ``fd`` (ours to close)."""

    remote = False

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def dup(self) -> LocalBytes:
        return LocalBytes(os.dup(self.fd))

    def close(self) -> None:
        os.close(self.fd)

    def readv(self, buffers: Sequence[memoryview], where: int) -> None:
        """Fill ``buffers`` from byte ``where`` on; a short read (only at the end of a
        regular file) means a truncated file."""
        want = sum(len(b) for b in buffers)
        if os.preadv(self.fd, buffers, where) != want:
            raise OSError(f"the file ends inside a chunk at byte {where}")

    def scatter(self, iov: np.ndarray, first: int, count: int, where: int) -> None:
        """Fill the ``count`` destinations ``iov[first:first + count]`` (an array of
        :func:`iovecs`) from consecutive bytes of the file, from byte ``where`` on."""
        address = iov.ctypes.data + first * iov.itemsize * 2
        for i in range(0, count, _IOV_MAX):
            n = min(count - i, _IOV_MAX)
            want = int(iov[first + i : first + i + n, 1].sum())
            while (got := _preadv(self.fd, address, n, where)) < 0:
                code = ctypes.get_errno()
                if code != errno.EINTR:
                    raise OSError(code, os.strerror(code))
            if got != want:
                raise OSError(f"the file ends inside a chunk at byte {where}")
            address, where = address + n * iov.itemsize * 2, where + want

    def fetch(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        out = []
        for start, stop in ranges:
            buf = bytearray(stop - start)
            self.readv([memoryview(buf)], start)
            out.append(bytes(buf))
        return out


def coalesce(
    ranges: Sequence[tuple[int, int]], gap: int = _GAP, limit: int = _MAX_REQUEST
) -> list[tuple[int, int]]:
    """The requests that fetch ``ranges``: sorted, overlapping or near neighbours
    (closer than ``gap`` bytes) merged, none over ``limit`` bytes unless one range is.

    Examples
    --------
    >>> from lazyh5.backend.ranges import coalesce
    >>> coalesce([(100, 200), (0, 50), (60, 90), (5000, 5100)], gap=20)
    [(0, 200), (5000, 5100)]
    """
    merged: list[list[int]] = []
    for start, stop in sorted(ranges):
        if (
            merged
            and start - merged[-1][1] <= gap
            and max(stop, merged[-1][1]) - merged[-1][0] <= max(limit, stop - start)
        ):
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return [(a, b) for a, b in merged]


class _Transient(Exception):
    """A fault worth retrying: the request may succeed if sent again."""


class RangeReader:
    """Byte ranges of one object behind an fsspec URL.

    ``fs`` and ``path`` locate it, ``label`` names it in errors (the URL, credentials
    and query redacted), ``size`` is its length in bytes. The reader is shared: ``dup``
    returns itself and ``close`` does nothing (the file system owns the connections).
    """

    remote = True

    def __init__(
        self,
        fs: Any,
        path: str,
        label: str,
        size: int,
        reconnect: Callable[[], Any] | None = None,
    ) -> None:
        self.fs, self.path, self.label, self.size = fs, path, label, size
        self.requests = 0
        # A forked process (a DataLoader or PyDataset worker) cannot use the parent's
        # async file system (its event loop thread is gone): it makes its own.
        self._reconnect, self._pid = reconnect, os.getpid()

    def dup(self) -> RangeReader:
        return self

    def close(self) -> None:
        pass

    def readv(self, buffers: Sequence[memoryview], where: int) -> None:
        want = sum(len(b) for b in buffers)
        (data,) = self.fetch([(where, where + want)])
        view = memoryview(data)
        for buf in buffers:
            buf[:] = view[: len(buf)]
            view = view[len(buf) :]

    def start(self, ranges: Sequence[tuple[int, int]]) -> Future:
        """:meth:`fetch` of ``ranges`` begun in the background: its future."""
        return _background().submit(self.fetch, ranges)

    def fetch(self, ranges: Sequence[tuple[int, int]]) -> list[Any]:
        """The bytes of every ``(start, stop)`` range, in order (``bytes`` or a
        ``memoryview`` of a larger request's); neighbours fetched by one request, all
        requests in flight together."""
        for start, stop in ranges:
            if stop > self.size or start < 0:
                raise CorruptFileError(
                    f"cannot read '{self.label}': the object is {self.size} bytes but HDF5 "
                    f"expects data at bytes={start}-{stop - 1}: it is truncated or damaged"
                )
        requests = coalesce([r for r in ranges if r[1] > r[0]])
        data = self._fetch_all(requests)
        firsts = [a for a, _ in requests]
        out = []
        for start, stop in ranges:
            if stop <= start:
                out.append(b"")
                continue
            i = bisect.bisect_right(firsts, start) - 1  # the request holding the range
            a, b = requests[i]
            if (a, b) == (start, stop):
                out.append(data[i])  # no copy
            else:
                out.append(memoryview(data[i])[start - a : stop - a])
        return out

    def _fetch_all(self, requests: list[tuple[int, int]]) -> list[bytes]:
        """Every request's bytes, retrying transient faults (see :func:`_retried`)."""
        retries, backoff, timeout = remote_settings()
        results: dict[tuple[int, int], bytes] = {}
        todo = list(requests)
        for attempt in itertools.count():
            outcomes = self._send(todo, timeout)
            failed = []
            for rng, outcome in zip(todo, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    failed.append((rng, self._classify(rng, outcome)))
                else:
                    results[rng] = outcome
            if not failed:
                return [results[r] for r in requests]
            if attempt >= retries:
                (start, stop), err = failed[0]
                raise RemoteReadError(
                    f"cannot read '{self.label}' bytes={start}-{stop - 1}: "
                    f"{len(failed)} request(s) still failing after {retries} retries "
                    f"({_describe(err)})"
                ) from None
            todo = [rng for rng, _ in failed]
            _back_off(backoff, attempt)
        raise AssertionError("unreachable")

    def _classify(self, rng: tuple[int, int], err: BaseException) -> BaseException:
        start, stop = rng
        return transient_or_raise(f"'{self.label}' bytes={start}-{stop - 1}", err)

    def _send(self, requests: list[tuple[int, int]], timeout: float) -> list[Any]:
        """One attempt at every request: its bytes or the exception it raised."""
        self.requests += len(requests)
        _count(len(requests))
        if self._pid != os.getpid() and self._reconnect is not None:
            self.fs, self._pid = self._reconnect(), os.getpid()
        if getattr(self.fs, "async_impl", False):
            from fsspec.asyn import sync

            return sync(self.fs.loop, self._gather, requests, timeout)
        return [self._one_sync(a, b) for a, b in requests]

    async def _gather(self, requests: list[tuple[int, int]], timeout: float) -> list[Any]:
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(start: int, stop: int) -> bytes:
            async with gate:
                coro = self.fs._cat_file(self.path, start=start, end=stop)
                data = await asyncio.wait_for(coro, timeout)
            return self._checked(start, stop, data)

        return await asyncio.gather(*(one(a, b) for a, b in requests), return_exceptions=True)

    def _one_sync(self, start: int, stop: int) -> Any:
        try:
            return self._checked(start, stop, self.fs.cat_file(self.path, start=start, end=stop))
        except Exception as err:
            return err

    def _checked(self, start: int, stop: int, data: bytes) -> bytes:
        if len(data) == stop - start:
            return data
        if len(data) > stop - start:  # the whole object: the server ignored Range
            raise RemoteReadError(
                f"cannot read '{self.label}' bytes={start}-{stop - 1}: the server answered "
                f"{len(data)} bytes, it does not support HTTP Range requests"
            )
        raise _Transient(f"short read: {len(data)} of {stop - start} bytes")


def _background() -> ThreadPoolExecutor:
    """The threads that wait for background fetches (the requests themselves run on
    the file system's event loop, or one after another for a synchronous one)."""
    with _pool_lock:
        if _pool[0] is None:
            _pool[0] = ThreadPoolExecutor(_BACKGROUND, thread_name_prefix="lazyh5-fetch")
        return _pool[0]


def _reset_after_fork() -> None:
    global _pool_lock
    _pool[0], _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _back_off(backoff: float, attempt: int) -> None:
    wait = min(_MAX_WAIT, backoff * 2**attempt)
    time.sleep(wait / 2 + random.uniform(0, wait / 2))  # jitter: clients spread out


def transient_or_raise(where: str, err: BaseException) -> BaseException:
    """``err`` (met reading ``where``) if worth retrying; else raise the lazyh5 error
    it means (a missing object, a refused request)."""
    if isinstance(err, _Transient):
        return err
    if isinstance(err, Lazyh5Error):
        raise err
    if isinstance(err, FileNotFoundError):
        raise FileMissingError(f"cannot read {where}: no such object") from None
    status = getattr(err, "status", None) or getattr(err, "code", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
        raise RemoteReadError(
            f"cannot read {where}: the server refused it (HTTP {status})"
        ) from None
    if isinstance(err, PermissionError):
        raise RemoteReadError(f"cannot read {where}: access denied") from None
    if isinstance(err, OSError | asyncio.TimeoutError | TimeoutError | ConnectionError):
        return err
    if type(err).__module__.split(".")[0] in ("aiohttp", "botocore", "aiobotocore"):
        return err
    raise err


def object_size(fs: Any, path: str, label: str) -> int | None:
    """The size of the object at ``path`` (``None`` if the server does not say), its
    lookup retried like range requests."""
    retries, backoff, timeout = remote_settings()
    for attempt in itertools.count():
        try:
            if getattr(fs, "async_impl", False):
                from fsspec.asyn import sync

                return sync(fs.loop, _within, fs._size(path), timeout)
            return fs.size(path)
        except Exception as err:
            err = transient_or_raise(f"the size of '{label}'", err)
            if attempt >= retries:
                raise RemoteReadError(
                    f"cannot open '{label}': looking up its size still fails after "
                    f"{retries} retries ({_describe(err)})"
                ) from None
        _back_off(backoff, attempt)
    raise AssertionError("unreachable")


async def _within(coro: Any, timeout: float) -> Any:
    return await asyncio.wait_for(coro, timeout)


def _describe(err: BaseException) -> str:
    if isinstance(err, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    text = redact_text(str(err).split("\n")[0][:300])
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
