"""Exceptions raised by lazyh5.

Every lazyh5 error subclasses :class:`Lazyh5Error` *and* the builtin exception a
caller would naturally catch (``FileNotFoundError``, ``KeyError``, ``ValueError``...),
so ``except KeyError`` keeps working while ``except lazyh5.Lazyh5Error`` catches
everything lazyh5 raises on purpose.
"""

from __future__ import annotations

__all__ = [
    "Lazyh5Error",
    "FileMissingError",
    "NotHDF5Error",
    "CorruptFileError",
    "MissingFilterError",
    "ObjectNotFoundError",
    "GroupNotFoundError",
    "DimensionError",
    "ReadOnlyError",
    "ExternalReferenceError",
    "UnsupportedDtypeError",
    "UnmappableViewError",
    "FileBusyError",
    "AlreadyExistsError",
    "InvalidArgumentError",
    "InvalidIndexError",
    "RemoteReadError",
    "RemoteWriteError",
]


class Lazyh5Error(Exception):
    """Base class of all errors raised by lazyh5."""


class FileMissingError(Lazyh5Error, FileNotFoundError):
    """The path does not exist or is not a regular file."""


class NotHDF5Error(Lazyh5Error, ValueError):
    """The file exists but is not an HDF5 file."""


class CorruptFileError(Lazyh5Error, OSError):
    """The file looks like HDF5 but cannot be read (truncated or damaged)."""


class MissingFilterError(Lazyh5Error, OSError):
    """A dataset's data is compressed (or otherwise filtered) with an HDF5 filter that is
    not installed; the file itself is intact. The message names the filter and the
    package that provides it."""


class ObjectNotFoundError(Lazyh5Error, KeyError):
    """A group, dataset or variable named by the caller does not exist."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class GroupNotFoundError(ObjectNotFoundError, OSError):
    """A group named by the caller does not exist (an ``OSError`` too, as xarray's
    netCDF backends raise for a missing group)."""


class DimensionError(Lazyh5Error, ValueError):
    """Dimensions do not fit the data: wrong count, conflicting lengths, or a value
    whose shape does not broadcast to the selection it is written to."""


class ReadOnlyError(Lazyh5Error, PermissionError):
    """A write was attempted on a file opened read-only (or not writable)."""


class ExternalReferenceError(Lazyh5Error, PermissionError):
    """The file refers to data in other files and that was not allowed."""


class UnsupportedDtypeError(Lazyh5Error, TypeError):
    """A dtype cannot be represented or used for this purpose: a dataset's HDF5 type,
    or a value's dtype that does not cast (``same_kind``) to the dataset's."""


class UnmappableViewError(Lazyh5Error, ValueError):
    """An array cannot be traced back to a region of an HDF5 dataset."""


class FileBusyError(Lazyh5Error, OSError):
    """The file is locked by another process (for example open for writing)."""


class AlreadyExistsError(Lazyh5Error, FileExistsError):
    """A file or dataset to be created already exists (and replacing it was not asked)."""


class InvalidArgumentError(Lazyh5Error, ValueError):
    """An argument has a value that cannot work (a non-positive batch size, an unknown
    mode, no rows to feed, a value out of the range of the dataset's dtype...)."""


class InvalidIndexError(Lazyh5Error, IndexError):
    """An index, a ``start``/``end`` or a key is out of range or not a valid key."""


class RemoteReadError(Lazyh5Error, OSError):
    """A remote file (an fsspec URL) could not be read: the store kept failing after
    the retries set by ``lazyh5.set_options(remote_retries=...)``, or refused the
    request. The message names the URL (credentials and query string redacted) and
    the byte range, ``bytes=first-last``."""


class RemoteWriteError(Lazyh5Error, OSError):
    """A file could not be uploaded to a remote URL; nothing was left looking finished
    there. The message names the URL (credentials and query string redacted)."""
