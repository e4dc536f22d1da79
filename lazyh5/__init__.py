"""lazyh5: HDF5 files as labeled, lazy, out-of-core arrays, fed straight into training.

The package is laid out by the path data takes through it:

- read path: :mod:`lazyh5.backend` (the xarray backend ``engine="lazyh5"``) and
  :mod:`lazyh5.open` (:func:`open_dataset`, :func:`open_datatree`);
- write path: :mod:`lazyh5.write` (:func:`create`, the ``.h5`` accessor,
  :func:`to_hdf5`);
- feed path: :mod:`lazyh5.feed` (:class:`BatchLoader`, Keras and tf.data adapters);
- compatibility: :mod:`lazyh5.compat` (:class:`HDF5Matrix`);
- command line: :mod:`lazyh5.cli`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import Lazyh5Error
from .open import open_dataset, open_datatree, open_mfdataset
from .options import set_options
from .write import accessor as _accessor  # noqa: F401  (registers .h5)
from .write.create import create

__version__ = "0.1.0"  # the only place: pyproject.toml reads it (dynamic version)

__all__ = [
    "open_dataset",
    "open_datatree",
    "open_mfdataset",
    "create",
    "to_hdf5",
    "BatchLoader",
    "HDF5Matrix",
    "Lazyh5Error",
    "set_options",
]

# Heavier parts load on first use, so `import lazyh5` stays quick for the read path.
_LAZY = {
    "to_hdf5": "lazyh5.write.to_hdf5",
    "BatchLoader": "lazyh5.feed.loader",
    "HDF5Matrix": "lazyh5.compat.hdf5matrix",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lazyh5' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
