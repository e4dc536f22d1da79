"""Public entry points of the read path: :func:`open_dataset` and :func:`open_datatree`."""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import xarray as xr

from .backend.entrypoint import Lazyh5BackendEntrypoint

ChunksArg = Mapping[Hashable, Any] | str | int | None


def _xarray_chunks(chunks: ChunksArg) -> tuple[Any, str]:
    """xarray's ``chunks`` and the backend's ``preferred_chunks`` for ``chunks``.

    ``"budget"`` is xarray's ``{}`` (the preferred chunks) with the backend preferring
    whole multiples of the HDF5 chunks sized by the memory budget
    (:func:`lazyh5.backend.chunking.dask_chunks`). Anything else is xarray's own, with
    the true HDF5 chunks preferred (so xarray warns when user chunks would split them).

    >>> _xarray_chunks("budget"), _xarray_chunks(None)
    (({}, 'blocks'), (None, 'hdf5'))
    """
    if isinstance(chunks, str) and chunks == "budget":
        return {}, "blocks"
    return chunks, "hdf5"


def open_dataset(
    path: str | os.PathLike,
    group: str | None = None,
    *,
    dims: Mapping[str, Sequence[Hashable]] | None = None,
    chunks: ChunksArg = "budget",
    mode: str = "r",
    allow_external: bool = False,
    drop_variables: str | Iterable[str] | None = None,
    decode_cf: bool = True,
    **kwargs: Any,
) -> xr.Dataset:
    """Open an HDF5 file (or one group of it) as a lazy, dask-backed ``xarray.Dataset``.

    Opening reads metadata only; data is read when computed, one dask chunk per task,
    and every dask chunk is a whole number of the dataset's HDF5 chunks.

    Parameters
    ----------
    path
        The HDF5 file (h5py, netCDF4/h5netcdf or any other HDF5 writer).
    group
        Group to open, e.g. ``"train/images"``; the root by default.
    dims
        Names for the axes of datasets that have no HDF5 dimension scales, e.g.
        ``{"image": ("sample", "y", "x", "channel")}``. Unnamed axes follow the
        default rule: axis 0 of the datasets sharing the most common leading length
        is ``sample``; other axes are ``{var}_dim_{i}``.
    chunks
        Dask chunks. ``"budget"`` (default): whole HDF5 chunks per dask chunk, as many
        as fit in the memory budget's share of one thread counted as float64
        (128 MiB / threads by default: 64 MiB of float64 on 2 cores, 8 MiB on 16; see
        :func:`lazyh5.set_options` and ``docs/concepts.md``). Any other value has
        xarray's meaning: ``None`` for no dask (xarray's lazily indexed arrays), ``{}``
        for the HDF5 chunks themselves, ``"auto"`` (dask's ``array.chunk-size`` of
        stored bytes), an int, or a ``{dim: size}`` mapping.
    mode
        ``"r"`` or ``"r+"`` (writable, for ``ds["x"].h5[...] = ...``).
    allow_external
        Follow external links, virtual datasets and external storage that point
        outside the file's folder. Refused by default: an untrusted file must not
        make lazyh5 read other files on the machine.
    drop_variables
        Datasets to skip.
    decode_cf
        Apply CF decoding (``_FillValue``, ``scale_factor``, time units) as xarray does.
    **kwargs
        Passed to :func:`xarray.open_dataset` (``decode_times``, ``lock``, ...).

    Returns
    -------
    xarray.Dataset
        Variables are dask arrays (unless ``chunks=None``). Dimensions without
        coordinate values get no coordinate, as in xarray: select them by position
        with ``isel``. On netCDF4 files the content is what ``engine="h5netcdf"``
        gives (docs/concepts.md).

    Examples
    --------
    >>> import h5py, numpy as np, lazyh5
    >>> with h5py.File("images.h5", "w") as f:
    ...     _ = f.create_dataset("image", (1000, 32, 32, 3), "f4", chunks=(100, 32, 32, 3))
    ...     _ = f.create_dataset("label", data=np.arange(1000) % 10)
    >>> ds = lazyh5.open_dataset("images.h5")
    >>> ds["image"].dims
    ('sample', 'image_dim_1', 'image_dim_2', 'image_dim_3')
    >>> ds.isel(sample=slice(0, 800)).sizes["sample"]
    800
    >>> ds = lazyh5.open_dataset("images.h5", dims={"image": ("sample", "y", "x", "channel")})
    >>> ds["image"].dims
    ('sample', 'y', 'x', 'channel')
    """
    xr_chunks, preferred = _xarray_chunks(chunks)
    return xr.open_dataset(
        path,
        engine=Lazyh5BackendEntrypoint,
        group=group,
        dims=dims,
        chunks=xr_chunks,
        mode=mode,
        allow_external=allow_external,
        drop_variables=drop_variables,
        decode_cf=decode_cf,
        preferred_chunks=preferred,
        **kwargs,
    )


def open_datatree(
    path: str | os.PathLike,
    group: str | None = None,
    *,
    dims: Mapping[str, Sequence[Hashable]] | None = None,
    chunks: ChunksArg = "budget",
    mode: str = "r",
    allow_external: bool = False,
    **kwargs: Any,
) -> xr.DataTree:
    """Open every group of an HDF5 file as a lazy ``xarray.DataTree``.

    Same options as :func:`open_dataset`; ``dims`` applies in every group:
    ``{"x": ("sample", "feature")}`` names the axes of each dataset called ``x``.
    Equivalent to ``xr.open_datatree(path, engine="lazyh5")`` with lazyh5's
    ``chunks="budget"``.

    Examples
    --------
    >>> import h5py, lazyh5
    >>> with h5py.File("tree.h5", "w") as f:
    ...     _ = f.create_dataset("train/x", (80, 4), "f4")
    ...     _ = f.create_dataset("test/x", (20, 4), "f4")
    >>> tree = lazyh5.open_datatree("tree.h5")
    >>> tree["train"]["x"].shape, tree["test"]["x"].shape
    ((80, 4), (20, 4))
    """
    xr_chunks, preferred = _xarray_chunks(chunks)
    return xr.open_datatree(
        path,
        engine=Lazyh5BackendEntrypoint,
        group=group,
        dims=dims,
        chunks=xr_chunks,
        mode=mode,
        allow_external=allow_external,
        preferred_chunks=preferred,
        **kwargs,
    )
