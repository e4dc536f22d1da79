"""lazyh5: HDF5 files as labeled, lazy, out-of-core arrays, fed straight into training.

The package is laid out by path through it:

- read path: :mod:`lazyh5.backend` (xarray backend ``engine="lazyh5"``), :mod:`lazyh5.open`
- write path: :mod:`lazyh5.create`
- command line: :mod:`lazyh5.cli`
"""

from __future__ import annotations

from .create import create
from .errors import Lazyh5Error
from .open import open_dataset, open_datatree

__version__ = "0.1.0"

__all__ = [
    "open_dataset",
    "open_datatree",
    "create",
    "Lazyh5Error",
]
