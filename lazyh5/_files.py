"""Opening HDF5 files by path, with errors that say what is wrong.

Everything that touches ``h5py.File(...)`` goes through :func:`open_h5file`, so
every entry point (backend, ``create``, CLI, loader) validates paths and reports
problems the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py

from ._filters import load_filter_plugins
from .errors import (
    AlreadyExistsError,
    CorruptFileError,
    FileBusyError,
    FileMissingError,
    NotHDF5Error,
    ReadOnlyError,
)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# The superblock may follow a user block of 512, 1024, 2048... bytes.
SIGNATURE_OFFSETS = (0, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".nc", ".nc4")


def has_hdf5_signature(path: str | os.PathLike) -> bool:
    """Whether the file carries the HDF5 superblock signature at a valid offset."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            for offset in SIGNATURE_OFFSETS:
                if offset + 8 > size:
                    break
                f.seek(offset)
                if f.read(8) == HDF5_SIGNATURE:
                    return True
    except OSError:
        return False
    return False


def check_readable_hdf5(path: str | os.PathLike) -> str:
    """Validate that ``path`` names an existing HDF5 file; return it as a string."""
    p = Path(path)
    if not p.exists():
        raise FileMissingError(f"no such file: '{p}' (expected an existing HDF5 file)")
    if p.is_dir():
        raise FileMissingError(f"'{p}' is a directory, expected an HDF5 file")
    if p.stat().st_size == 0:
        raise NotHDF5Error(f"'{p}' is empty (0 bytes), expected an HDF5 file")
    if not has_hdf5_signature(p):
        raise NotHDF5Error(
            f"'{p}' is not an HDF5 file (no HDF5 signature found); "
            "expected a file written by h5py, netCDF4 or another HDF5 library"
        )
    return str(p)


def check_new_file_path(path: str | os.PathLike, mode: str, action: str = "create") -> str:
    """Validate a path that a new HDF5 file will be renamed to; return it as a string.

    Checked before anything is written: the folder exists, the path is not a
    directory, an existing file is only replaced with ``mode="w"`` and is not
    locked by a process writing it (replacing it would silently discard that
    process's writes).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileMissingError(
            f"cannot {action} '{path}': the folder '{folder}' does not exist "
            "(expected an existing folder to create the file in)"
        )
    if os.path.isdir(path):
        raise FileMissingError(
            f"cannot {action} '{path}': it is a directory, expected a path for an HDF5 file"
        )
    if os.path.exists(path):
        if mode in ("w-", "x"):
            raise AlreadyExistsError(
                f"cannot {action} '{path}': it already exists; pass mode='w' to replace it"
            )
        check_not_locked(path, mode)
    return path


def check_not_locked(path: str, mode: str) -> None:
    """Raise :class:`FileBusyError` if another process holds ``path`` open for writing."""
    if not has_hdf5_signature(path):
        return
    try:
        h5py.File(path, "r", locking=True).close()
    except OSError as err:
        low = str(err).lower()
        if "unable to lock" in low and ("errno = 11" in low or "temporarily unavailable" in low):
            raise FileBusyError(
                f"cannot replace '{path}' (mode={mode!r}): the file is locked by another "
                f"process (probably open for writing); close it there first ({err})"
            ) from err
        # Damaged, or locks unsupported here: nothing stops a replacement.


def source_label(variables: Any) -> str:
    """``"'path'"`` of the file a Dataset's variables were read from, for messages;
    ``"the dataset"`` when none was (built in memory, or computed)."""
    for var in variables.values():
        if "source" in var.encoding:
            return f"'{var.encoding['source']}'"
    return "the dataset"


def _translate_oserror(path: str, mode: str, err: OSError) -> Exception:
    msg = str(err)
    low = msg.lower()
    if "already open for read-only" in low:
        return FileBusyError(
            f"cannot open '{path}' with mode={mode!r}: this process already has it open "
            f"read-only (close those datasets with ds.close() first) ({msg})"
        )
    if "already open for write" in low or "file is already open" in low:
        return FileBusyError(
            f"cannot open '{path}' with mode={mode!r}: another writer has it open (or a "
            f"crashed writer left it marked open; `h5clear -s` clears that) ({msg})"
        )
    if "unable to lock" in low or "lock file" in low:
        return FileBusyError(
            f"cannot open '{path}' with mode={mode!r}: the file is locked by another process "
            f"(probably open for writing); close it there first ({msg})"
        )
    if "permission denied" in low or "read-only" in low:
        return ReadOnlyError(
            f"cannot open '{path}' with mode={mode!r}: permission denied; "
            f"open it with mode='r' or make it writable ({msg})"
        )
    return CorruptFileError(
        f"cannot read '{path}': it looks like HDF5 but is damaged or truncated ({msg})"
    )


def open_h5file(path: str, mode: str = "r", **kwargs: Any) -> h5py.File:
    """Open ``path`` with h5py, translating failures into lazyh5 errors.

    Readers default to ``locking="best-effort"``: HDF5's file locks still stop a
    reader from opening a file that another process is writing, but a file system
    without lock support (NFS, some containers) does not make reads fail.
    """
    load_filter_plugins()
    if mode in ("r", "r+") or (mode == "a" and os.path.lexists(path)):
        check_readable_hdf5(path)
        if mode != "r" and not os.access(path, os.W_OK):
            raise ReadOnlyError(
                f"cannot open '{path}' with mode={mode!r}: the file is not writable; "
                "open it with mode='r' or change its permissions"
            )
    kwargs.setdefault("locking", "best-effort")
    try:
        return h5py.File(path, mode, **kwargs)
    except FileExistsError as err:
        if isinstance(err, AlreadyExistsError):
            raise
        raise AlreadyExistsError(
            f"'{path}' already exists; pass mode='w' to overwrite it or choose another path"
        ) from err
    except OSError as err:
        if mode in ("w-", "x") and os.path.exists(path):
            raise AlreadyExistsError(
                f"'{path}' already exists; pass mode='w' to overwrite it or choose another path"
            ) from err
        raise _translate_oserror(path, mode, err) from err
