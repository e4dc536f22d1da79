"""The store: one HDF5 file, opened through xarray's file manager, and its lock.

:func:`open_store` is how the read path opens a file, by path, fsspec URL or file
object; every lazily indexed array holds its store, which pickles as the path or URL
(and reopens the file on dask workers; see :mod:`lazyh5.backend.remote`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from typing import Any

import h5py
from xarray.backends import CachingFileManager

from .._files import open_h5file
from ..errors import (
    FileBusyError,
    GroupNotFoundError,
    InvalidArgumentError,
    ObjectNotFoundError,
    ReadOnlyError,
)
from . import locks
from .locks import ClusterFileLock, access_lock, file_lock
from .ranges import RangeReader
from .remote import (
    FileObject,
    Remote,
    is_url,
    open_fileobj_h5,
    open_remote_h5,
    read_only_message,
)
from .security import check_link


def open_store(
    filename_or_obj: Any,
    mode: str = "r",
    *,
    lock: Any = None,
    allow_external: bool = False,
    file_kwargs: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> H5Store:
    """Open an HDF5 file for the read path (``mode="r+"``: writes through it too).

    Parameters
    ----------
    filename_or_obj
        The file's path, an fsspec URL (``s3://``, ``https://``, ``file://``...) or
        a readable, seekable file object. Paths and URLs pickle and reopen on dask
        workers; file objects are read in this process only.
    mode
        ``"r"`` or ``"r+"``.
    lock
        The lock to take for every access (default: xarray's HDF5 locks).
    allow_external
        Follow links and storage that leave the file's folder.
    file_kwargs
        More keyword arguments for ``h5py.File``.
    storage_options
        fsspec options for a URL (credentials, endpoint...); ignored for paths.

    Examples
    --------
    >>> import h5py
    >>> with h5py.File("s.h5", "w") as f:
    ...     _ = f.create_dataset("x", data=[1, 2, 3])
    >>> store = open_store("s.h5")
    >>> store.acquire()["x"].shape
    (3,)
    >>> store.close()
    """
    source: Remote | FileObject | None = None
    if is_url(filename_or_obj):
        source = Remote(filename_or_obj, storage_options)
    elif not isinstance(filename_or_obj, str | os.PathLike):
        source = FileObject(filename_or_obj)
    return H5Store(
        filename_or_obj,
        mode,
        lock=lock,
        allow_external=allow_external,
        file_kwargs=file_kwargs,
        source=source,
    )


class H5Store:
    """An HDF5 file opened through xarray's ``CachingFileManager``.

    The manager id is derived from the path (or URL) and mode, so every lazyh5 object
    for the same file and mode in a process shares one h5py handle: reads see writes
    made through the ``.h5`` accessor at once, and HDF5 never sees the file opened
    twice with conflicting modes.

    ``source`` is the :class:`~lazyh5.backend.remote.Remote` (URL) or
    :class:`~lazyh5.backend.remote.FileObject` the file is read from, ``None`` for a
    path; :attr:`filename` names the file in messages (a URL without credentials).
    """

    def __init__(
        self,
        filename: Any,
        mode: str = "r",
        *,
        lock: Any = None,
        allow_external: bool = False,
        file_kwargs: Mapping[str, Any] | None = None,
        source: Remote | FileObject | None = None,
    ):
        label = source.label if source is not None else os.fspath(filename)
        if mode not in ("r", "r+"):
            raise InvalidArgumentError(
                f"cannot open '{label}' with mode={mode!r}: mode must be 'r' "
                "(read) or 'r+' (read and write through ds[name].h5[...])"
            )
        if mode == "r+" and isinstance(source, Remote):
            raise ReadOnlyError(read_only_message(source.label))
        self.source = source
        self.filename = label if source is not None else os.path.abspath(label)
        self.mode = mode
        self.allow_external = allow_external
        kwargs = dict(file_kwargs or {})
        self._manager = _manager(self.filename, mode, kwargs, source)
        self._base_lock = file_lock(self.filename, mode, lock)
        self.lock = access_lock(self._base_lock, mode, self._manager, self.filename)
        # Fail now, with a clear message, rather than inside the first dask task.
        with self.session():
            self.acquire(needs_lock=not self.cluster_locked)

    @property
    def remote(self) -> bool:
        """Whether the file is read from a URL (read-only; no ``.h5[...] =``)."""
        return isinstance(self.source, Remote)

    def read_only_reason(self) -> str | None:
        """Why the file cannot be written whatever its mode, or ``None``."""
        return read_only_message(self.filename) if self.remote else None

    def ranges(self) -> RangeReader | None:
        """The byte ranges of a remote file (chunks are fetched by them, outside the
        HDF5 lock), ``None`` for a path or a file object."""
        return self.source.reader() if isinstance(self.source, Remote) else None

    @property
    def cluster_locked(self) -> bool:
        """Whether the file is writable and shared by a dask.distributed cluster.

        Then it is open in a process only while that process holds :attr:`lock`
        (see :class:`ClusterFileLock`).
        """
        return isinstance(self.lock, ClusterFileLock)

    def session(self) -> Any:
        """Hold the file's lock for several accesses (opening reads many objects).

        A no-op context unless :attr:`cluster_locked`; then the file stays open until
        the outermost session or lock hold ends.
        """
        return self.lock if self.cluster_locked else contextlib.nullcontext()

    def acquire(self, needs_lock: bool = True) -> h5py.File:
        """The open h5py file (opened now if it is not open in this process).

        For a :attr:`cluster_locked` store, call this while holding :attr:`lock`. A
        ``FileBusyError`` there is retried for up to ``CLUSTER_BUSY_WAIT`` seconds:
        read-only handles that workers cache for an earlier computation of the same
        file close a moment after it ends.
        """
        if locks.exiting():
            raise RuntimeError(f"cannot access '{self.filename}': Python is exiting")
        if not self.cluster_locked:
            with self._manager.acquire_context(needs_lock) as f:
                return f
        deadline = time.monotonic() + locks.CLUSTER_BUSY_WAIT
        while True:
            try:
                with self._manager.acquire_context(needs_lock) as f:
                    return f
            except FileBusyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self._manager.close()

    def group(self, path: str | None) -> h5py.Group:
        if path is not None and not isinstance(path, str):
            raise InvalidArgumentError(
                f"cannot open group {path!r} of '{self.filename}': group must be a string "
                "path such as 'a/b'"
            )
        root = self.acquire()
        if path in (None, "", "/"):
            return root
        path = "/" + path.strip("/")
        parent, _, name = path.rpartition("/")
        node: h5py.Group = root
        for part in [p for p in parent.split("/") if p] + [name]:
            if part not in node:
                groups = sorted(k for k in node if isinstance(node.get(k), h5py.Group))
                raise GroupNotFoundError(
                    f"no group '{path}' in '{self.filename}'; groups at '{node.name}': {groups}"
                )
            check_link(self.filename, node, part, self.allow_external)
            node = node[part]
        if not isinstance(node, h5py.Group):
            raise ObjectNotFoundError(
                f"'{path}' in '{self.filename}' is a dataset, not a group; "
                "open its parent group and select the variable"
            )
        return node

    def __getstate__(self):
        return {
            "filename": self.filename,
            "mode": self.mode,
            "allow_external": self.allow_external,
            "source": self.source,
            "manager": self._manager,
            "lock": self._base_lock,
        }

    def __setstate__(self, state):
        self.filename = state["filename"]
        self.mode = state["mode"]
        self.allow_external = state["allow_external"]
        self.source = state["source"]
        self._manager = state["manager"]
        self._base_lock = state["lock"]
        self.lock = access_lock(self._base_lock, self.mode, self._manager, self.filename)


def _manager(
    filename: str, mode: str, kwargs: dict[str, Any], source: Remote | FileObject | None
) -> CachingFileManager:
    """xarray's file manager opening the file (its id holds no credentials)."""
    opts = tuple(sorted(kwargs.items()))
    if source is None:
        opener, arg, key = open_h5file, filename, (filename,)
    else:
        opener = open_remote_h5 if isinstance(source, Remote) else open_fileobj_h5
        arg, key = source, source.key()
    manager_id = ("lazyh5", *key, mode, opts)
    return CachingFileManager(opener, arg, mode=mode, kwargs=kwargs, manager_id=manager_id)
