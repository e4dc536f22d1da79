"""Public entry points of the read path: :func:`open_dataset` and :func:`open_datatree`."""

from __future__ import annotations

import glob
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import xarray as xr

from .backend.entrypoint import Lazyh5BackendEntrypoint
from .backend.redact import redact_url
from .backend.remote import is_url
from .errors import FileMissingError

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
    path: str | os.PathLike | Any,
    group: str | None = None,
    *,
    dims: Mapping[str, Sequence[Hashable]] | None = None,
    chunks: ChunksArg = "budget",
    mode: str = "r",
    allow_external: bool = False,
    drop_variables: str | Iterable[str] | None = None,
    decode_cf: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> xr.Dataset:
    """Open an HDF5 file (or one group of it) as a lazy, dask-backed ``xarray.Dataset``.

    Opening reads metadata only; data is read when computed, one dask chunk per task,
    and every dask chunk is a whole number of the dataset's HDF5 chunks.

    Parameters
    ----------
    path
        The HDF5 file (h5py, netCDF4/h5netcdf or any other HDF5 writer): a path, an
        fsspec URL (``s3://bucket/train.h5``, ``gs://...``, ``https://...``,
        ``file://...``; needs ``pip install 'lazyh5[remote]'``) or a readable,
        seekable file object. Datasets opened from paths and URLs pickle and reopen
        on dask.distributed workers; from a file object, they are read in this
        process only. Remote files are read-only.
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
    storage_options
        fsspec options for a URL: credentials (``key``, ``secret``, ``token``...),
        ``client_kwargs={"endpoint_url": ...}``, ``anon=True``... Credentials never
        appear in messages, reprs or pickles: a dask.distributed worker reopening the
        URL uses its own (environment variables, config files, instance roles).
        Retries and timeouts: :func:`lazyh5.set_options`.
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
        **_remote_kwargs(storage_options),
        **kwargs,
    )


def _remote_kwargs(storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    return {} if storage_options is None else {"storage_options": storage_options}


def open_datatree(
    path: str | os.PathLike | Any,
    group: str | None = None,
    *,
    dims: Mapping[str, Sequence[Hashable]] | None = None,
    chunks: ChunksArg = "budget",
    mode: str = "r",
    allow_external: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> xr.DataTree:
    """Open every group of an HDF5 file as a lazy ``xarray.DataTree``.

    Same options as :func:`open_dataset` (``path`` a path, URL or file object,
    ``storage_options`` for URLs); ``dims`` applies in every group:
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
        **_remote_kwargs(storage_options),
        **kwargs,
    )


def open_mfdataset(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    chunks: ChunksArg = "budget",
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> xr.Dataset:
    """Open many HDF5 files as one lazy Dataset: ``xarray.open_mfdataset`` with
    ``engine="lazyh5"``, whose glob patterns may be URLs too.

    xarray expands a glob (``"shards/*.h5"``) only for local paths; here a URL pattern
    such as ``"s3://bucket/shards/*.h5"`` is expanded by fsspec (sorted), then every
    file is opened as by :func:`open_dataset`.

    Parameters
    ----------
    paths
        A glob pattern (path or URL), or a list of paths and URLs.
    chunks
        As in :func:`open_dataset` (``"budget"`` by default).
    storage_options
        fsspec options for URLs (see :func:`open_dataset`).
    **kwargs
        Passed to :func:`xarray.open_mfdataset` (``combine``, ``concat_dim``,
        ``parallel``...) and to each file's opening (``group``, ``dims``...).

    Examples
    --------
    >>> import h5py, numpy as np, lazyh5
    >>> for i in range(3):
    ...     with h5py.File(f"shard{i}.h5", "w") as f:
    ...         _ = f.create_dataset("x", data=np.full(4, i))
    >>> ds = lazyh5.open_mfdataset("shard*.h5", combine="nested", concat_dim="sample")
    >>> ds["x"].values.tolist()
    [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    """
    xr_chunks, preferred = _xarray_chunks(chunks)
    if isinstance(paths, str) and is_url(paths) and glob.has_magic(paths):
        import fsspec

        fs, pattern = fsspec.core.url_to_fs(paths, **(storage_options or {}))
        found = [fs.unstrip_protocol(p) for p in sorted(fs.glob(pattern))]
        if not found:
            raise FileMissingError(f"no files match '{redact_url(paths)}'")
        paths = found
    return xr.open_mfdataset(
        paths,
        engine=Lazyh5BackendEntrypoint,
        chunks=xr_chunks,
        preferred_chunks=preferred,
        **_remote_kwargs(storage_options),
        **kwargs,
    )
