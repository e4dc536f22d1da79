"""Opening HDF5 files behind fsspec URLs (``s3://``, ``gs://``, ``https://``...) and
file objects.

HDF5 reads a file's metadata a few hundred bytes at a time; over an object store each
read would pay the store's latency. h5py reads it here through a :class:`BlockFile`:
blocks of :data:`BLOCK_SIZE` bytes, each fetched once by the file's
:class:`~lazyh5.backend.ranges.RangeReader` (with its retries) and kept in a small
cache, so opening a file of 1,000 datasets costs a few requests. Chunk data does not
go through it: the read path fetches chunks by their byte ranges
(:mod:`lazyh5.backend.read`, :mod:`lazyh5.backend.rows`).

A :class:`Remote` (URL and ``storage_options``) pickles without its credentials: a
dask.distributed worker reopens the URL with its own (environment, config files,
instance roles). A :class:`FileObject` (a user's open file) cannot be reopened
elsewhere, so it refuses to pickle.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import gc
import io
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import h5py

from .._files import HDF5_SIGNATURE, SIGNATURE_OFFSETS
from .._filters import load_filter_plugins
from ..errors import (
    CorruptFileError,
    FileMissingError,
    InvalidArgumentError,
    Lazyh5Error,
    NotHDF5Error,
    ReadOnlyError,
    RemoteReadError,
)
from .ranges import RangeReader, object_size
from .redact import (
    public_options,
    redact_text,
    redact_url,
    remember_secrets,
    url_password,
    without_password,
)

#: Bytes per metadata block, and how many blocks each open file keeps.
BLOCK_SIZE = 2 << 20
CACHED_BLOCKS = 8

# Open remote h5py files: closed before the interpreter exits (HDF5 closing a file
# object's file during shutdown can crash the process).
_open_files: weakref.WeakSet = weakref.WeakSet()
# The readers of this process by Remote.key(): a Remote unpickled here (a dataset
# pickled and loaded in one process) reuses the credentials it was opened with.
_readers: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_readers_lock = threading.Lock()


def is_url(obj: Any) -> bool:
    """Whether ``obj`` is an fsspec URL (``protocol://...`` or chained ``a::b``).

    Examples
    --------
    >>> from lazyh5.backend.remote import is_url
    >>> is_url("s3://bucket/x.h5"), is_url("/data/x.h5"), is_url("C:/data/x.h5")
    (True, False, False)
    """
    if not isinstance(obj, str):
        return False
    head = obj.split("::")[0]
    scheme, sep, _ = head.partition("://")
    return (bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()) or "::" in obj


def read_only_message(label: str) -> str:
    """Why a remote file cannot be written, for :class:`ReadOnlyError`."""
    return (
        f"cannot write to '{label}': HDF5 cannot update a remote object in place; "
        "open it read-only (mode='r') and write a new file with "
        "lazyh5.to_hdf5(ds, url), which writes a local file and uploads it whole"
    )


class Remote:
    """An HDF5 file behind an fsspec URL, with the ``storage_options`` to reach it.

    ``label`` (the URL without credentials or query string) names it in messages and
    reprs. Pickled, it keeps the URL (without user and password) and
    :func:`~lazyh5.backend.redact.public_options`.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise InvalidArgumentError(
                f"storage_options must be a dict of fsspec options, got "
                f"{type(storage_options).__name__}"
            )
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.label = redact_url(url)
        remember_secrets(self.storage_options)
        remember_secrets({"password": url_password(url)})
        self._reader: RangeReader | None = None
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple:
        return (Remote, (without_password(self.url), public_options(self.storage_options)))

    def __repr__(self) -> str:
        return f"Remote({self.label!r}, {public_options(self.storage_options)!r})"

    def key(self) -> tuple:
        """What identifies the file for xarray's file cache (no credentials)."""
        return (self.label, without_password(self.url), repr(public_options(self.storage_options)))

    def reader(self) -> RangeReader:
        """The file's :class:`RangeReader` (the file system and size looked up once)."""
        with self._lock:
            if self._reader is None:
                with _readers_lock:
                    self._reader = _readers.get(self.key())
                if self._reader is None:
                    self._reader = self._connect()
                    with _readers_lock:
                        _readers.setdefault(self.key(), self._reader)
            return self._reader

    def _connect(self) -> RangeReader:
        try:
            import fsspec
        except ImportError as err:
            raise ImportError(
                f"opening '{self.label}' needs fsspec and the file system's package "
                "(s3fs, gcsfs, aiohttp): pip install 'lazyh5[remote]'"
            ) from err
        try:
            fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
            size = object_size(fs, path, self.label)
        except (FileNotFoundError, FileMissingError):
            raise FileMissingError(
                f"no such file: '{self.label}' (expected an existing HDF5 object)"
            ) from None
        except Lazyh5Error:
            raise
        except ImportError as err:
            raise ImportError(
                f"opening '{self.label}' needs the package of its file system: "
                f"{redact_text(str(err))}"
            ) from None
        except (ValueError, TypeError) as err:  # unknown protocol, bad options
            raise InvalidArgumentError(
                f"cannot open '{self.label}': {redact_text(str(err))}"
            ) from None
        except Exception as err:  # no credentials, access denied, unreachable...
            raise RemoteReadError(
                f"cannot open '{self.label}': {type(err).__name__}: {redact_text(str(err))}"
            ) from None
        if size is None:
            raise InvalidArgumentError(
                f"cannot open '{self.label}': the server does not say its size (HDF5 "
                "needs random access by byte range)"
            )
        reconnect = functools.partial(_file_system, self.url, self.storage_options)
        return RangeReader(fs, path, self.label, int(size), reconnect)


def _file_system(url: str, storage_options: dict[str, Any]) -> Any:
    import fsspec

    return fsspec.core.url_to_fs(url, **storage_options)[0]


class BlockFile(io.RawIOBase):
    """A read-only file object over a :class:`RangeReader`, for h5py's ``fileobj``
    driver: reads come from blocks of :data:`BLOCK_SIZE` bytes, fetched on first use
    and kept (the last :data:`CACHED_BLOCKS`); reads of a block or more are fetched
    as they are.

    A hand-written cache rather than fsspec's own file objects: their reads do not
    retry, and this way every byte of a remote file comes through one reader (one
    place for retries, error messages and request counts).
    """

    def __init__(self, reader: RangeReader, block_size: int = BLOCK_SIZE) -> None:
        super().__init__()
        self.reader, self.block_size = reader, block_size
        self.pos = 0
        self.blocks: collections.OrderedDict[int, bytes] = collections.OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.reader.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, buf: Any) -> int:
        # HDF5 calls this in the middle of its own work. A garbage collection meanwhile
        # (here, or in the event loop thread that does the requests) could run
        # finalizers of other h5py objects, which call back into HDF5 (not re-entrant)
        # or wait for h5py's lock held by this thread: a deadlock. So none runs.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._readinto(buf)
        finally:
            if enabled:
                gc.enable()

    def _readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        start = self.pos
        stop = min(start + len(view), self.reader.size)
        if stop <= start:
            return 0
        if stop - start >= self.block_size:
            (data,) = self.reader.fetch([(start, stop)])
            view[: stop - start] = data
        else:
            self._copy_blocks(view, start, stop)
        self.pos = stop
        return stop - start

    def _copy_blocks(self, view: memoryview, start: int, stop: int) -> None:
        size = self.block_size
        wanted = range(start // size, (stop - 1) // size + 1)
        missing = [b for b in wanted if b not in self.blocks]
        if missing:
            ranges = [(b * size, min((b + 1) * size, self.reader.size)) for b in missing]
            for b, data in zip(missing, self.reader.fetch(ranges), strict=True):
                self.blocks[b] = data
        for b in wanted:
            self.blocks.move_to_end(b)
            data = self.blocks[b]
            lo, hi = max(start, b * size), min(stop, (b + 1) * size)
            view[lo - start : hi - start] = data[lo - b * size : hi - b * size]
        while len(self.blocks) > CACHED_BLOCKS:
            self.blocks.popitem(last=False)


def open_remote_h5(remote: Remote, mode: str = "r", **kwargs: Any) -> h5py.File:
    """``remote`` opened read-only by h5py through a :class:`BlockFile`; damage and a
    missing signature reported as lazyh5 errors naming the URL."""
    if mode != "r":
        raise ReadOnlyError(read_only_message(remote.label))
    load_filter_plugins()
    reader = remote.reader()
    fileobj = BlockFile(reader)
    if reader.size == 0:
        raise NotHDF5Error(f"'{remote.label}' is empty (0 bytes), expected an HDF5 file")
    kwargs.pop("locking", None)  # no file locks on a file object
    try:
        f = h5py.File(fileobj, "r", **kwargs)
    except Lazyh5Error:
        raise
    except OSError as err:
        if not _signed(fileobj):
            raise NotHDF5Error(
                f"'{remote.label}' is not an HDF5 file (no HDF5 signature found)"
            ) from None
        raise CorruptFileError(
            f"cannot read '{remote.label}': it looks like HDF5 but is damaged or "
            f"truncated ({redact_text(str(err))})"
        ) from None
    _open_files.add(f)
    return f


def _signed(fileobj: BlockFile) -> bool:
    """Whether the HDF5 signature is where HDF5 looks for it (after a user block)."""
    for offset in SIGNATURE_OFFSETS:
        if offset + 8 > fileobj.reader.size:
            break
        fileobj.seek(offset)
        if fileobj.read(8) == HDF5_SIGNATURE:
            return True
    return False


class FileObject:
    """A file object a user opened (``open(...)``, an fsspec file, ``io.BytesIO``).

    It can only be read in this process: pickling it (sending a dataset to a
    dask.distributed cluster) raises an error saying to open the file by path or URL.
    """

    def __init__(self, obj: Any) -> None:
        for method in ("read", "seek", "tell"):
            if not callable(getattr(obj, method, None)):
                raise InvalidArgumentError(
                    f"lazyh5 opens paths, URLs and readable, seekable file objects; got "
                    f"{type(obj).__name__} (no {method}() method)"
                )
        self.obj = obj
        name = getattr(obj, "path", None) or getattr(obj, "name", None)
        self.label = f"<file object {type(obj).__name__}"
        self.label += f" {redact_url(str(name))}>" if isinstance(name, str) else ">"

    def __reduce__(self) -> tuple:
        raise TypeError(
            f"cannot pickle a dataset opened from {self.label}: a file object cannot be "
            "reopened in another process (a dask.distributed worker); open the file by "
            "its path or URL instead, e.g. lazyh5.open_dataset('s3://bucket/file.h5', "
            "storage_options=...)"
        )

    def __repr__(self) -> str:
        return f"FileObject({self.label!r})"

    def key(self) -> tuple:
        return (self.label, id(self.obj))


def open_fileobj_h5(source: FileObject, mode: str = "r", **kwargs: Any) -> h5py.File:
    """``source``'s file object opened by h5py (read-only)."""
    if mode != "r":
        raise ReadOnlyError(
            f"cannot open {source.label} with mode={mode!r}: lazyh5 writes through files "
            "opened by path only"
        )
    load_filter_plugins()
    kwargs.pop("locking", None)
    source.obj.seek(0)
    try:
        f = h5py.File(_Guarded(source.obj), "r", **kwargs)
    except Lazyh5Error:
        raise
    except OSError as err:
        source.obj.seek(0)
        head = source.obj.read(8)
        if head != HDF5_SIGNATURE:
            raise NotHDF5Error(f"{source.label} is not an HDF5 file ({head!r}...)") from None
        raise CorruptFileError(f"cannot read {source.label}: {err}") from None
    _open_files.add(f)
    return f


class _Guarded(io.RawIOBase):
    """A user's file object read by HDF5 without garbage collections during the reads
    (see :meth:`BlockFile.readinto`: an fsspec file object waits for the network)."""

    def __init__(self, obj: Any) -> None:
        super().__init__()
        self.obj = obj

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.obj.seek(offset, whence)

    def tell(self) -> int:
        return self.obj.tell()

    def readinto(self, buf: Any) -> int:
        enabled = gc.isenabled()
        gc.disable()
        try:
            data = self.obj.read(len(memoryview(buf).cast("B")))
        finally:
            if enabled:
                gc.enable()
        view = memoryview(buf).cast("B")
        view[: len(data)] = data
        return len(data)


@atexit.register
def _close_open_files() -> None:
    for f in list(_open_files):
        with contextlib.suppress(Exception):  # exiting: nothing left to report to
            f.close()
