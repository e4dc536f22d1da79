"""The xarray backend entry point, registered as ``engine="lazyh5"``."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import h5py
import xarray as xr
from xarray.backends import BackendEntrypoint
from xarray.backends.common import datatree_from_dict_with_io_cleanup
from xarray.core.utils import close_on_error

from .._damage import damage_reported
from .._files import HDF5_SIGNATURE, HDF5_SUFFIXES, has_hdf5_signature
from .chunking import dask_chunks
from .group import check_dims_found, read_group
from .remote import is_url
from .store import H5Store, open_store

_DECODERS = (
    "mask_and_scale",
    "decode_times",
    "decode_timedelta",
    "use_cftime",
    "decode_coords",
    "concat_characters",
)


class Lazyh5BackendEntrypoint(BackendEntrypoint):
    """Open any HDF5 file lazily: plain h5py files, netCDF4 files, nested groups.

    Use through ``xr.open_dataset(path, engine="lazyh5", chunks={})`` (or
    :func:`lazyh5.open_dataset`, which picks block-sized dask chunks for you).

    Extra keyword arguments:

    - ``group``: path of the group to open (``"a/b"``).
    - ``dims``: ``{"image": ("sample", "y", "x", "channel")}`` names axes of datasets
      without HDF5 dimension scales (in a tree: of the datasets so named in any group).
    - ``mode``: ``"r"`` (default) or ``"r+"`` for write-through assignment.
    - ``allow_external``: follow external links / virtual / external storage that
      leave the file's folder (refused by default).
    - ``preferred_chunks``: ``"hdf5"`` (default) reports the HDF5 chunks to xarray;
      ``"blocks"`` reports whole multiples of them sized by lazyh5's memory budget
      (see :func:`lazyh5.set_options`), so ``chunks={}`` gives those dask chunks.
    - ``storage_options``: fsspec options (credentials, endpoint) for a URL such as
      ``s3://bucket/file.h5``; file objects are accepted too, for use in this process.
    """

    description = "Open HDF5 files (h5py, netCDF4, nested groups) lazily with lazyh5"
    supports_groups = True
    url = "https://github.com/lazyh5/lazyh5"
    open_dataset_parameters = (
        "filename_or_obj",
        "drop_variables",
        "group",
        "dims",
        "mode",
        "allow_external",
        "lock",
        "preferred_chunks",
        "file_kwargs",
        "storage_options",
        *_DECODERS,
    )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """HDF5 files by their signature; paths that cannot be checked by suffix.

        A netCDF3 ``.nc`` file is not HDF5, so it is not claimed.
        """
        if not isinstance(filename_or_obj, (str, os.PathLike)):
            return _file_object_is_hdf5(filename_or_obj)
        path = os.fspath(filename_or_obj)
        if is_url(path):
            return path.split("?")[0].lower().endswith(HDF5_SUFFIXES)
        if os.path.isfile(path) and os.access(path, os.R_OK):
            return has_hdf5_signature(path)
        return path.lower().endswith(HDF5_SUFFIXES)

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        dims: Mapping[str, Sequence[Hashable]] | None = None,
        mode: str = "r",
        allow_external: bool = False,
        lock: Any = None,
        preferred_chunks: Literal["hdf5", "blocks"] = "hdf5",
        file_kwargs: Mapping[str, Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        decode_timedelta: bool | None = None,
        use_cftime: bool | None = None,
        decode_coords: bool = True,
        concat_characters: bool = True,
    ) -> xr.Dataset:
        """The group ``group`` (default: the root) as a lazy Dataset."""
        decoders = {
            "mask_and_scale": mask_and_scale,
            "decode_times": decode_times,
            "decode_timedelta": decode_timedelta,
            "use_cftime": use_cftime,
            "decode_coords": decode_coords,
            "concat_characters": concat_characters,
        }
        store = open_store(
            filename_or_obj,
            mode,
            lock=lock,
            allow_external=allow_external,
            file_kwargs=file_kwargs,
            storage_options=storage_options,
        )
        options = _ReadOptions(dims, _names(drop_variables), preferred_chunks, decoders)
        return _read(store, group, options, tree=False)["/"]

    def open_groups_as_dict(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        group: str | None = None,
        dims: Mapping[str, Sequence[Hashable]] | None = None,
        mode: str = "r",
        allow_external: bool = False,
        lock: Any = None,
        preferred_chunks: Literal["hdf5", "blocks"] = "hdf5",
        file_kwargs: Mapping[str, Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        **decoders: Any,
    ) -> dict[str, xr.Dataset]:
        """Every group below ``group`` as a Dataset, keyed by its path.

        ``dims`` applies in every group: ``{"image": (...)}`` names the axes of each
        dataset called ``image``. Dimension names stay consistent down each branch: a
        default name that an ancestor uses with another length gets the group's name
        as a suffix.
        """
        store = open_store(
            filename_or_obj,
            mode,
            lock=lock,
            allow_external=allow_external,
            file_kwargs=file_kwargs,
            storage_options=storage_options,
        )
        options = _ReadOptions(dims, _names(drop_variables), preferred_chunks, decoders)
        return _read(store, group, options, tree=True)

    def open_datatree(self, filename_or_obj: Any, **kwargs: Any) -> xr.DataTree:  # type: ignore[override]
        """Every group below ``group`` as a ``DataTree`` (see :meth:`open_groups_as_dict`)."""
        return datatree_from_dict_with_io_cleanup(
            self.open_groups_as_dict(filename_or_obj, **kwargs)
        )


@dataclass(frozen=True)
class _ReadOptions:
    """How every group is read (the keyword arguments of the entry point)."""

    dims: Mapping[str, Sequence[Hashable]] | None
    drop_variables: list[str] | None
    preferred_chunks: Literal["hdf5", "blocks"]
    decoders: Mapping[str, Any]


def _read(
    store: H5Store, group: str | None, options: _ReadOptions, *, tree: bool
) -> dict[str, xr.Dataset]:
    """The group (``tree=False``, keyed ``"/"``) or every group below it, keyed by path
    relative to it; the store is closed if reading fails, else when they all are."""
    read = functools.partial(
        read_group,
        store,
        dims=options.dims,
        drop_variables=options.drop_variables,
        decode_kwargs=options.decoders,
        in_tree=tree,
    )
    with (
        close_on_error(store),
        damage_reported(store.filename),
        store.session(),  # a cluster-locked file stays open for all the reads
    ):
        if tree:
            result = _walk(store, group, read)
            check_dims_found(store.filename, options.dims, result)
        else:
            result = {"/": read(group)}
    for ds in result.values():
        if store.source is not None:  # xarray would name the URL as given, credentials too
            ds.encoding["source"] = store.filename
        if options.preferred_chunks == "blocks":
            _prefer_blocks(ds)
        ds.set_close(store.close)
    return result


def _walk(
    store: H5Store, group: str | None, read: Callable[..., xr.Dataset]
) -> dict[str, xr.Dataset]:
    """``read`` of every group below ``group``, each given the dimension lengths of
    its ancestors, keyed by its path relative to ``group``."""
    root = "/" + (group or "").strip("/")
    result: dict[str, xr.Dataset] = {}

    def visit(path: str, inherited: dict[str, int]) -> None:
        ds = read(path, inherited_dims=inherited)
        result["/" + path[len(root) :].strip("/") if path != root else "/"] = ds
        here = {**inherited, **{str(k): v for k, v in ds.sizes.items()}}
        grp = store.group(path)
        for name in grp:
            if isinstance(grp.get(name), h5py.Group):
                visit(f"{path.rstrip('/')}/{name}", here)

    visit(root, {})
    return result


def _file_object_is_hdf5(obj: Any) -> bool:
    """Whether ``obj`` is a readable, seekable file object starting with the HDF5
    signature (its position left as it was)."""
    read, seek, tell = (getattr(obj, m, None) for m in ("read", "seek", "tell"))
    if not (callable(read) and callable(seek) and callable(tell)):
        return False
    try:
        where = tell()
        seek(0)
        head = read(8)
        seek(where)
    except (OSError, ValueError):
        return False
    return head == HDF5_SIGNATURE


def _names(drop_variables: str | Iterable[str] | None) -> list[str] | None:
    if isinstance(drop_variables, str):
        return [drop_variables]
    return None if drop_variables is None else list(drop_variables)


def _prefer_blocks(ds: xr.Dataset) -> None:
    for var in ds.variables.values():
        enc = var.encoding
        if "lazyh5_path" not in enc or var.ndim == 0:
            continue
        planned = dask_chunks(var.shape, enc.get("chunksizes"), var.dtype)
        enc["preferred_chunks"] = dict(zip(var.dims, planned, strict=True))
