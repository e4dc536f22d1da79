"""Recognising h5py's reports of a damaged file, and reporting them as one error.

Every read of a file's contents (the backend's metadata and data reads, ``lazyh5
info``, ``HDF5Matrix``, the loader's direct reads) runs inside :func:`damage_reported`,
so a damaged or truncated file always gives a :class:`~lazyh5.errors.CorruptFileError`
naming the file (and the dataset, when one was being read).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import CorruptFileError, Lazyh5Error


def is_damage(err: BaseException) -> bool:
    """Whether ``err``, met while reading a file, is h5py reporting damaged contents.

    h5py reports damaged object headers, heaps, B-trees and chunks as ``OSError`` or
    ``RuntimeError`` (``UnicodeDecodeError`` for names); a damaged datatype or object
    type surfaces as ``ValueError``, ``TypeError`` or ``KeyError`` raised inside h5py
    itself. Those three carry nothing that tells h5py's from any other, so where they
    were raised decides. lazyh5's own errors, and errors raised outside h5py, are not
    damage.

    Examples
    --------
    >>> is_damage(OSError("Can't read data (wrong B-tree signature)"))
    True
    >>> is_damage(KeyError("image"))  # not raised inside h5py
    False
    """
    if isinstance(err, Lazyh5Error):
        return False
    if isinstance(err, OSError | RuntimeError | UnicodeDecodeError):
        return True
    if isinstance(err, KeyError | ValueError | TypeError):
        tb = err.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        return tb is not None and "h5py" in Path(tb.tb_frame.f_code.co_filename).parts
    return False


@contextlib.contextmanager
def damage_reported(
    filename: str,
    dataset: str | None = None,
    *,
    missing_filter: Callable[[], Exception | None] | None = None,
) -> Iterator[None]:
    """Turn h5py's reports of damage met inside the block into a ``CorruptFileError``.

    Parameters
    ----------
    filename
        The file being read, named in the message.
    dataset
        The dataset being read, named in the message; ``None`` while reading the
        file's structure (groups, dataset headers, attributes).
    missing_filter
        Called when damage is met; an error it returns is raised instead (a read of a
        dataset whose HDF5 filter is not installed fails the same way as a damaged one).

    Other errors pass through unchanged (see :func:`is_damage`).

    Examples
    --------
    >>> with damage_reported("data.h5", "image"):
    ...     raise OSError("Can't read data (inflate() failed)")
    Traceback (most recent call last):
    ...
    lazyh5.errors.CorruptFileError: cannot read 'image' in 'data.h5': the file is damaged or truncated where this dataset is stored (Can't read data (inflate() failed))
    """  # noqa: E501
    try:
        yield
    except Exception as err:
        if not is_damage(err):
            raise
        missing = missing_filter() if missing_filter is not None else None
        if missing is not None:
            raise missing from err
        if dataset is None:
            what = (
                f"'{filename}': its structure (groups, dataset headers or attributes) "
                "is damaged or truncated"
            )
        else:
            what = (
                f"'{dataset}' in '{filename}': the file is damaged or truncated where this "
                "dataset is stored"
            )
        raise CorruptFileError(f"cannot read {what} ({err})") from err
