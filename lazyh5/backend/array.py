"""The lazily indexed wrapper around one HDF5 dataset."""

from __future__ import annotations

import numpy as np
from xarray.backends import BackendArray
from xarray.core import indexing

from .._files import damage_reported
from . import decode


class H5BackendArray(BackendArray):
    """One HDF5 dataset, read only when indexed.

    It holds the store (a picklable file manager + lock) and the dataset's path, never
    an h5py object, so it pickles and reopens the file by path on dask workers.
    """

    __slots__ = ("_decode_strings", "dtype", "path", "shape", "store")

    def __init__(self, store, path: str, shape: tuple[int, ...], dtype: np.dtype, strings: bool):
        self.store = store
        self.path = path
        self.shape = shape
        self.dtype = dtype
        self._decode_strings = strings

    def get_array(self, needs_lock: bool = True):
        return self.store.acquire(needs_lock)[self.path]

    def _dataset_unlocked(self):
        return self.get_array(needs_lock=False)

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        # h5py takes basic slices plus one increasing integer list per selection;
        # xarray decomposes anything else (steps < 0, unsorted or repeated indices).
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER_1VECTOR, self._getitem
        )

    def _getitem(self, key: tuple, out: np.ndarray | None = None) -> np.ndarray:
        with damage_reported(
            f"'{self.path}' in '{self.store.filename}': the file is damaged or truncated "
            "where this dataset's data is stored"
        ):
            return self._read(key, out)

    def _read(self, key: tuple, out: np.ndarray | None = None) -> np.ndarray:
        """``dset[key]``; into ``out`` when given (numeric data, slices only)."""
        if not self._decode_strings:
            # Chunked, decodable datasets: only the raw-chunk read holds the lock.
            got = decode.read(self._dataset_unlocked, self.store.lock, self.shape, key, out=out)
            if got is not None:
                return got
        with self.store.lock:
            dset = self.get_array(needs_lock=False)
            if self._decode_strings:
                return np.asarray(dset.asstr()[key], dtype=object)
            if out is not None:
                dset.read_direct(out, source_sel=tuple(key))
                return out
            return np.asarray(dset[key])
