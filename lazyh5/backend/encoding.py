"""How a dataset is stored, as xarray's ``encoding`` and lazyh5's storage labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import h5py
from dask.utils import format_bytes

from .._filters import compression_label
from .types import VariableType

_LAYOUTS = {h5py.h5d.COMPACT: "compact", h5py.h5d.VIRTUAL: "virtual"}


def storage_label(dset: h5py.Dataset) -> str:
    """How a dataset is stored, e.g. ``"chunks (256, 32, 32, 3) of 3 MiB, lzf"``."""
    if dset.chunks is None:
        layout = _LAYOUTS.get(dset.id.get_create_plist().get_layout(), "contiguous")
        return f"{layout}, not chunked"
    # The HDF5 type's size: h5py has no numpy dtype for some types read in part.
    nbytes = math.prod(dset.chunks) * dset.id.get_type().get_size()
    label = f"chunks {dset.chunks} of {format_bytes(nbytes)}"
    comp = compression_label(dset)
    return f"{label}, {comp}" if comp else f"{label}, uncompressed"


# HDF5 filter ids (or names h5py uses) -> netCDF4-python's names, as h5netcdf's
# Variable.filters() reports them (its ids and names, compressor flags and level).
_NC4_COMPRESSORS = {
    "1": "zlib", "2": "szip", "307": "bzip2", "32004": "blosc", "32015": "zstd",
    "zlib": "zlib", "szip": "szip", "bzip2": "bzip2", "blosc": "blosc", "zstd": "zstd",
}  # fmt: skip


def _filters(dset: h5py.Dataset) -> dict[str, Any]:
    """The filter flags h5netcdf's ``Variable.filters()`` gives xarray, the same way."""
    flags: dict[str, Any] = dict.fromkeys(("zlib", "szip", "bzip2", "blosc", "zstd"), False)
    flags.update(shuffle=dset.shuffle, fletcher32=dset.fletcher32)
    if dset.compression == "gzip":
        flags.update(zlib=True, complevel=dset.compression_opts)
    for filter_id, opts in getattr(dset, "_filters", {}).items():
        name = _NC4_COMPRESSORS.get(filter_id)
        if name is not None:
            flags[name] = True
            if opts:
                flags["complevel"] = opts[0]
    return flags


def variable_encoding(
    filename: str, path: str, dset: h5py.Dataset, dim_names: Sequence[str], kind: VariableType
) -> dict[str, Any]:
    """The encoding h5netcdf's xarray store gives, plus lazyh5's own ``lazyh5_*`` keys.

    xarray's writers drop keys they do not know when the encoding comes from the
    variable, so the ``lazyh5_*`` keys never reach a copy of the dataset.
    """
    # Shapes and chunks are the variable's: an array element type's axes are whole.
    enc: dict[str, Any] = dict(kind.encoding)  # "dtype" among them
    if dset.chunks:
        chunks = dset.chunks + kind.element_shape
        enc["contiguous"] = False
        enc["chunksizes"] = chunks
        enc["preferred_chunks"] = dict(zip(dim_names, chunks, strict=True))
    else:
        enc["contiguous"] = True
        enc["chunksizes"] = None
    enc.update(_filters(dset))
    if dset.compression == "gzip":  # netCDF4-python's names, as h5netcdf's store does
        enc["zlib"] = True
        enc["complevel"] = dset.compression_opts
    elif dset.compression is not None:
        enc["compression"] = dset.compression
        enc["compression_opts"] = dset.compression_opts
    enc["source"] = filename
    enc["original_shape"] = dset.shape + kind.element_shape
    enc["lazyh5_path"] = path
    enc["lazyh5_dims"] = tuple(dim_names)
    # How the file stores it, for the .h5 accessor's reprs (never an attribute:
    # attributes are written into copies of the dataset).
    enc["lazyh5_storage"] = storage_label(dset)
    label = compression_label(dset)
    if label:
        enc["lazyh5_filters"] = label
    return enc
