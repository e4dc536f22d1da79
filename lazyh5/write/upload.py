"""Writing HDF5 files to fsspec URLs (``s3://``, ``gs://``...): written locally, then
uploaded whole.

HDF5 cannot update an object in an object store in place, and a store shows an object
only once its upload is complete: :func:`write_url` writes the file in the temporary
folder, then uploads it with the file system's ``put_file`` (s3fs sends large files in
parts and completes the upload only once every part arrived, aborting it otherwise).
A failed write or upload therefore leaves no object at the URL, or the old one intact,
and the temporary file is removed either way.
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from ..backend.redact import redact_text, redact_url
from ..backend.remote import is_url
from ..errors import AlreadyExistsError, FileMissingError, InvalidArgumentError, RemoteWriteError

__all__ = ["is_url", "local_path", "write_url", "refuse_url"]


def local_path(url: str) -> str | None:
    """The path of a ``file://`` (or ``local://``) URL, or None for other URLs.

    Examples
    --------
    >>> from lazyh5.write.upload import local_path
    >>> local_path("file:///data/x.h5"), local_path("s3://bucket/x.h5")
    ('/data/x.h5', None)
    """
    for prefix in ("file://", "local://"):
        if url.startswith(prefix) and "::" not in url:
            return url[len(prefix) :]
    return None


def refuse_url(url: str, action: str, instead: str) -> None:
    """Raise :class:`InvalidArgumentError` if ``url`` is a remote URL: ``action``
    (e.g. ``"create"``) needs a local file; ``instead`` says what to do."""
    if is_url(url) and local_path(url) is None:
        raise InvalidArgumentError(
            f"cannot {action} '{redact_url(url)}': HDF5 files can only be {action}d on a "
            f"local file system; {instead}"
        )


def _filesystem(url: str, storage_options: Mapping[str, Any] | None, label: str) -> tuple:
    try:
        import fsspec
    except ImportError as err:
        raise ImportError(
            f"writing '{label}' needs fsspec and the file system's package (s3fs, gcsfs): "
            "pip install 'lazyh5[remote]'"
        ) from err
    try:
        return fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except ImportError as err:
        raise ImportError(
            f"writing '{label}' needs the package of its file system: {redact_text(str(err))}"
        ) from None
    except (ValueError, TypeError) as err:  # unknown protocol, bad options
        raise InvalidArgumentError(f"cannot write '{label}': {redact_text(str(err))}") from None


def _check_target(fs: Any, path: str, mode: str, label: str, when: str) -> None:
    """Refuse an existing object unless ``mode="w"``; ``when`` says at which step."""
    fs.invalidate_cache(path)  # a listing cached earlier may predate the object
    try:
        exists = fs.exists(path)
    except OSError as err:
        raise RemoteWriteError(
            f"cannot write '{label}': cannot tell whether it exists "
            f"({type(err).__name__}: {redact_text(str(err))})"
        ) from None
    if exists and mode in ("w-", "x"):
        raise AlreadyExistsError(
            f"cannot write '{label}': it already exists{when}; pass mode='w' to replace it"
        )


def write_url(
    url: str,
    write_local: Callable[[str], None],
    *,
    mode: str,
    resume: bool,
    storage_options: Mapping[str, Any] | None,
    upload_options: Mapping[str, Any] | None,
) -> None:
    """Write the file at the remote ``url``: ``write_local(path)`` writes it completely
    at a local ``path`` in a temporary folder, which is then uploaded and removed."""
    label = redact_url(url)
    if resume:
        raise InvalidArgumentError(
            f"cannot write '{label}' with resume=True: a remote file is written to a "
            "local temporary file that is removed when the run stops, so there is "
            "nothing to resume from; write to a local path with resume=True, then "
            "upload it (fsspec's put_file), or pass resume=False"
        )
    fs, path = _filesystem(url, storage_options, label)
    _check_target(fs, path, mode, label, "")
    with tempfile.TemporaryDirectory(prefix="lazyh5-upload-") as folder:
        local = os.path.join(folder, posixpath.basename(path.rstrip("/")) or "data.h5")
        write_local(local)
        _check_target(fs, path, mode, label, " (it appeared while the file was written)")
        try:
            fs.put_file(local, path, **dict(upload_options or {}))
        except FileNotFoundError as err:
            raise FileMissingError(
                f"cannot write '{label}': {redact_text(str(err))} (expected an existing "
                "bucket or folder)"
            ) from None
        except Exception as err:
            raise RemoteWriteError(
                f"cannot write '{label}': the upload failed ({type(err).__name__}: "
                f"{redact_text(str(err))}); the object there, if any, was not changed"
            ) from None
