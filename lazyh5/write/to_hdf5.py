"""Stream a lazy Dataset/DataArray into a new HDF5 file, resumably."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import h5py
import numpy as np
import xarray as xr
from xarray import conventions

from .._files import check_new_file_path, open_h5file
from .._warn import warn_user
from ..backend.chunking import dask_chunks
from ..backend.redact import redact_url
from ..errors import AlreadyExistsError, InvalidArgumentError
from .graph import precompute_shared, store_blocks
from .layout import (
    HDF5Chunks,
    VariableLayout,
    check_creatable,
    group_path,
    variable_layout,
    write_layout,
)
from .upload import is_url, local_path, write_url

__all__ = ["to_hdf5", "partial_path"]

# Inside the partial file: the done marks, one bool per dask block of each variable.
_DONE_MARKS = "_lazyh5_done"
# CF encoding worth keeping when writing (the rest of a lazyh5 encoding describes the
# file it was read from, not the one being written).
_CF_ENCODING = ("units", "calendar", "_FillValue", "scale_factor", "add_offset")


def partial_path(path: str | os.PathLike) -> str:
    """The temporary file :func:`to_hdf5` writes ``path`` under until it is complete."""
    path = os.path.abspath(os.fspath(path))
    folder, base = os.path.split(path)
    return os.path.join(folder, f".{base}.lazyh5-partial")


def _prepare(ds: xr.Dataset) -> dict[str, xr.Variable]:
    """The variables to write, CF-encoded (times, fill values), by name."""
    out: dict[str, xr.Variable] = {}
    coords_of: dict[str, list[str]] = {}
    non_index = [c for c in ds.coords if c not in ds.indexes]
    for name, var in ds.variables.items():
        var = var.copy(deep=False)
        var.encoding = {k: v for k, v in var.encoding.items() if k in _CF_ENCODING}
        # xarray would add _FillValue=NaN to floats; lazyh5 files carry none unless the
        # data had one, so a written file can be opened and written through as is.
        var.encoding.setdefault("_FillValue", None)
        var.attrs = {k: v for k, v in var.attrs.items() if k != "coordinates"}
        if name in ds.data_vars:
            used = [c for c in non_index if set(ds[c].dims) <= set(var.dims)]
            if used:
                coords_of[str(name)] = [str(c) for c in used]
        out[str(name)] = conventions.encode_cf_variable(var, name=name)
    for name, used in coords_of.items():
        out[name].attrs["coordinates"] = " ".join(used)
    return out


def _fingerprint(layouts: Mapping[str, VariableLayout]) -> str:
    """What a partial file was started for: a resumed run must match it."""
    return json.dumps(
        {
            path: [
                list(layout.dims),
                list(layout.shape),
                str(layout.dtype),
                repr(layout.chunks),
                [_filter_key(layout.filters.get(k)) for k in _FILTER_KEYS],
            ]
            for path, layout in sorted(layouts.items())
        }
    )


_FILTER_KEYS = ("compression", "compression_opts", "shuffle")


def _filter_key(value: Any) -> Any:
    # hdf5plugin filters are objects without a stable repr: use their id and options.
    if isinstance(value, h5py.filters.FilterRefBase):
        return [value.filter_id, list(value.filter_options)]
    return repr(value)


def to_hdf5(
    path: str | os.PathLike,
    obj: xr.Dataset | xr.DataArray,
    *,
    group: str | None = None,
    mode: str = "w-",
    hdf5_chunks: HDF5Chunks = "auto",
    compression: Any = None,
    compression_opts: Any = None,
    shuffle: bool | Mapping[str, bool] = False,
    progress: bool = True,
    resume: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    upload_options: Mapping[str, Any] | None = None,
) -> None:
    """Compute a lazy Dataset or DataArray block by block into a new HDF5 file.

    Memory stays at a few dask blocks whatever the size of the result: each block is
    written as soon as it is computed (chunk-aligned), and reductions that every
    block needs (``x.mean()``) are computed first. Dimensions, coordinates and
    attributes are written netCDF4-style like :func:`lazyh5.create`, so
    :func:`lazyh5.open_dataset` and xarray's ``h5netcdf`` engine read the file back
    labeled.

    The file is written as ``.<name>.lazyh5-partial`` in the same folder and renamed
    into place only when complete. It records which blocks are done, so after an
    interruption ``resume=True`` computes only the missing blocks.

    ``path`` may be an fsspec URL (``s3://bucket/x.h5``, ``gs://...``): the file is then
    written in the temporary folder and uploaded when complete, so a failed run leaves
    no object at the URL (or the old one intact); see the remote files page.

    Parameters
    ----------
    path
        The file to create (first, as in :func:`dask.array.to_hdf5`).
    obj
        What to write; a DataArray is written as one variable (named ``obj.name``
        or ``"data"``).
    group
        Group to write the variables into (``"train"``); the root by default.
    mode
        ``"w-"`` (default): fail if ``path`` exists; ``"w"``: replace it.
    hdf5_chunks
        ``"auto"`` (default): the source's HDF5 chunks where known, else whole rows of
        about 1 MiB; ``None``: contiguous; a tuple, or ``{name: value}``.
    compression, compression_opts
        As in :func:`lazyh5.create` (``"gzip"``, ``"lzf"``, a gzip level,
        ``"blosc"``/``"zstd"``/``"lz4"`` with hdf5plugin), or per variable.
    shuffle
        Add HDF5's byte-shuffle filter before compression (helps numeric data), for all
        variables or ``{name: bool}``.
    progress
        Show a progress bar (only when stderr is a terminal).
    resume
        Continue an interrupted run of the same computation into the same ``path``
        (local paths only).
    storage_options
        For a URL: the options of its fsspec file system (credentials, endpoint).
    upload_options
        For a URL: keyword arguments of the file system's ``put_file``, such as s3fs's
        ``{"chunksize": 64 * 2**20}`` (the part size of a multipart upload).

    Examples
    --------
    >>> import numpy as np, xarray as xr, lazyh5
    >>> src = lazyh5.create("raw.h5", {"image": ((512, 8, 8, 3), "u1")},
    ...                     dims={"image": ("sample", "y", "x", "channel")})
    >>> norm = (src["image"].astype("f4") / 255.0).rename("image")
    >>> lazyh5.to_hdf5("norm.h5", norm, progress=False)
    >>> out = lazyh5.open_dataset("norm.h5")
    >>> out["image"].dtype, out["image"].dims
    (dtype('float32'), ('sample', 'y', 'x', 'channel'))
    """
    obj = _as_dataset(path, obj)
    if mode not in ("w-", "x", "w"):
        raise InvalidArgumentError(
            f"cannot write '{redact_url(str(path))}': mode must be 'w-' or 'w', got {mode!r}"
        )
    if is_url(path) and local_path(path) is None:
        local_options = dict(hdf5_chunks=hdf5_chunks, compression=compression, group=group)
        local_options.update(compression_opts=compression_opts, shuffle=shuffle)
        return write_url(
            path,
            lambda local: to_hdf5(local, obj, mode="w", progress=progress, **local_options),
            mode=mode,
            resume=resume,
            storage_options=storage_options,
            upload_options=upload_options,
        )
    if is_url(path):  # a file:// URL
        path = local_path(path)
    path = os.path.abspath(os.fspath(path))
    check_new_file_path(path, mode, action="write")
    grp = group_path(path, group, action="write")
    variables = _prepare(obj)
    if not variables:
        raise InvalidArgumentError(
            f"cannot write '{path}': the dataset has no variables; expected at least one"
        )
    options = dict(
        hdf5_chunks=hdf5_chunks,
        compression=compression,
        compression_opts=compression_opts,
        shuffle=shuffle,
    )
    layouts = {n: _layout(path, n, v, obj, **options) for n, v in variables.items()}
    prefix = f"{grp}/" if grp else ""
    arrays = {prefix + n: _lazy(v, layouts[n]) for n, v in variables.items()}
    fingerprint = _fingerprint({prefix + n: v for n, v in layouts.items()})
    check_creatable(path, list(layouts.values()), grp)  # before any file is made
    tmp = partial_path(path)
    f = _open_partial(tmp, fingerprint, resume)
    try:
        if _DONE_MARKS not in f:
            _start(f, path, grp, obj.attrs, list(layouts.values()), arrays, fingerprint)
        _write_all(f, path, arrays, progress)
        del f[_DONE_MARKS]
    finally:
        f.close()
    if mode in ("w-", "x") and os.path.exists(path):
        raise AlreadyExistsError(f"cannot write '{path}': it appeared while writing ({tmp} kept)")
    os.replace(tmp, path)


def _as_dataset(path: Any, obj: Any) -> xr.Dataset:
    """``obj`` as a Dataset; a clear error for the arguments in the wrong order."""
    if isinstance(path, xr.Dataset | xr.DataArray):
        raise TypeError(
            "to_hdf5(path, obj, ...): the path comes first, then the Dataset or DataArray "
            f"to write; got a {type(path).__name__} as the path"
        )
    if isinstance(obj, xr.DataArray):
        obj = obj.to_dataset(name=obj.name if obj.name is not None else "data")
    if not isinstance(obj, xr.Dataset):
        raise TypeError(f"cannot write '{path}': expected a Dataset or DataArray, got {obj!r}")
    return obj


def _start(
    f: h5py.File,
    path: str,
    group: str,
    attrs: Mapping[str, Any],
    layouts: Sequence[VariableLayout],
    arrays: Mapping[str, da.Array],
    fingerprint: str,
) -> None:
    """Lay a new partial file out: attributes, datasets, and all done marks unset."""
    marks = f.create_group(_DONE_MARKS)
    if attrs:
        target = f.require_group(group) if group else f
        target.attrs.update({k: v for k, v in attrs.items() if v is not None})
    write_layout(f, path, layouts, group)
    for i, (name, arr) in enumerate(arrays.items()):
        mask = marks.create_dataset(str(i), shape=arr.numblocks or (1,), dtype=bool)
        mask.attrs["variable"] = name
        # The marks refer to these blocks: a resumed run must use the same ones.
        mask.attrs["blocks"] = json.dumps([list(c) for c in arr.chunks])
    # Set last: a file without a fingerprint was killed while being laid out.
    marks.attrs["fingerprint"] = fingerprint
    f.flush()


def _write_all(f: h5py.File, path: str, arrays: Mapping[str, da.Array], progress: bool) -> None:
    """Compute and write every block not marked done, marking each once it is on disk."""
    marks = f[_DONE_MARKS]
    masks = {marks[k].attrs["variable"]: marks[k] for k in marks}
    lock = threading.Lock()
    for name, arr in arrays.items():
        dset, mask = f[name], masks[name]
        if arr.ndim == 0:
            if not mask[0]:
                dset[()] = np.asarray(arr.compute(), dtype=dset.dtype)
                mask[0] = True
            continue
        blocks = tuple(tuple(c) for c in json.loads(mask.attrs["blocks"]))
        if arr.chunks != blocks:
            arr = arr.rechunk(blocks)
        done = np.argwhere(mask[()])
        if len(done) == mask.size:
            continue

        def write(idx, region, block, dset=dset, mask=mask) -> None:
            block = np.asarray(block, dtype=dset.dtype)
            with lock:
                dset[region] = block
                # One flush per block: it puts this block's data (and the marks of
                # earlier blocks) on disk; this block's mark follows with the next
                # flush, so a mark never reaches the disk before its data. A crash
                # loses at most the last mark: that block is recomputed.
                f.flush()
                mask[idx] = True

        store_blocks(
            precompute_shared(arr),
            write,
            skip=[tuple(int(i) for i in d) for d in done],
            desc=f"{os.path.basename(path)}:{name}",
            progress=progress,
        )


def _open_partial(tmp: str, fingerprint: str, resume: bool) -> h5py.File:
    if resume and os.path.exists(tmp):
        try:
            f = open_h5file(tmp, "r+")
        except Exception as err:  # killed mid-flush: start over rather than fail
            warn_user(f"cannot resume from '{tmp}' ({err}); starting over")
        else:
            found = f[_DONE_MARKS].attrs.get("fingerprint") if _DONE_MARKS in f else None
            if found == fingerprint:
                return f
            f.close()
            if found is None:  # killed while laying the file out: nothing to keep
                return open_h5file(tmp, "w")
            raise InvalidArgumentError(
                f"cannot resume into '{tmp}': it was started for different data "
                "(variables, shapes, dtypes, chunks or filters differ); delete it or pass "
                "resume=False"
            )
    return open_h5file(tmp, "w")


def _layout(
    path: str, name: str, var: xr.Variable, ds: xr.Dataset, **options: Any
) -> VariableLayout:
    """The layout of the encoded variable ``var`` (``name`` in ``ds``)."""
    dtype = h5py.string_dtype() if var.dtype.kind in "OU" else var.dtype
    source = ds.variables[name].encoding.get("chunksizes") if name in ds.variables else None
    return variable_layout(
        path,
        name,
        var.shape,
        dtype,
        tuple(str(d) for d in var.dims),
        attrs={k: v for k, v in var.attrs.items() if v is not None},
        source_chunks=source,
        action="write",
        **options,
    )


def _lazy(var: xr.Variable, layout: VariableLayout) -> da.Array:
    """The variable as a dask array in blocks of whole HDF5 chunks (about a dask block)."""
    data = var.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=-1)
    if data.ndim == 0:
        return data
    hdf5 = layout.chunks
    if hdf5 is not None and all(
        all(c % h == 0 for c in axis[:-1]) for axis, h in zip(data.chunks, hdf5, strict=True)
    ):
        # Already whole HDF5 chunks per block: rechunking would only merge or split
        # blocks after they are computed (a float32 result of uint8 blocks is 4× bigger).
        return data
    return data.rechunk(dask_chunks(data.shape, hdf5, data.dtype))
