"""Warnings meant for the user, shown at the user's line."""

from __future__ import annotations

import os
import sys
import warnings

import xarray

_PACKAGES = tuple(
    os.path.dirname(module.__file__) + os.sep for module in (sys.modules[__package__], xarray)
)
_XARRAY_TESTS = os.path.join(os.path.dirname(xarray.__file__), "tests") + os.sep


def _internal(filename: str) -> bool:
    return filename.startswith(_PACKAGES) and not filename.startswith(_XARRAY_TESTS)


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn at the first line outside lazyh5 and xarray: the user's call.

    xarray's ``emit_user_level_warning`` skips only xarray's own frames, so from a
    backend it points at the backend's line; this skips lazyh5's too (the frames of
    ``lazyh5.open_dataset`` and of the backend under ``xr.open_dataset``).

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_user("skipping x")
    >>> str(caught[0].message), caught[0].filename.endswith("_warn.py")
    ('skipping x', False)
    """
    frame, level = sys._getframe(1), 2
    while frame is not None and _internal(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
