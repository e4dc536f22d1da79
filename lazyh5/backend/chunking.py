"""Dask chunks planned from HDF5 chunks: whole multiples, never splitting one."""

from __future__ import annotations

import dask
import numpy as np
from dask.array.core import normalize_chunks

# Object (string) arrays have no fixed item size; assume short strings for planning.
_OBJECT_ITEMSIZE = 16


def plan_chunks(
    shape: tuple[int, ...],
    hdf5_chunks: tuple[int, ...] | None,
    dtype: np.dtype,
    target: str | int | None = None,
) -> tuple[int, ...]:
    """Dask chunk sizes of about ``target`` bytes (dask's ``array.chunk-size``).

    Each size is a whole multiple of the HDF5 chunk along that axis (or the full
    axis), so every HDF5 chunk is decoded by exactly one dask task. Dask's own
    ``"auto"`` already grows ``previous_chunks`` by whole multiples; we only feed it
    an item size for string data, which it cannot estimate.

    >>> plan_chunks((200_000, 32, 32, 3), (256, 32, 32, 3), np.dtype("f4"), "64MiB")
    (5376, 32, 32, 3)
    """
    if len(shape) == 0:
        return ()
    target = target or dask.config.get("array.chunk-size")
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        dtype = np.dtype(f"S{_OBJECT_ITEMSIZE}")
    chunks = normalize_chunks("auto", shape, limit=target, dtype=dtype, previous_chunks=hdf5_chunks)
    return tuple(max(c[0], 1) if c else 1 for c in chunks)
