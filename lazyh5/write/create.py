"""Create HDF5 files with named dimensions, chunking and compression: :func:`create`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import xarray as xr

from .._files import check_new_file_path, open_h5file
from ..backend import dims as dimnames
from ..errors import (
    AlreadyExistsError,
    DimensionError,
    InvalidArgumentError,
    UnsupportedDtypeError,
)
from ..open import open_dataset
from .layout import HDF5Chunks, VariableLayout, group_path, variable_layout, write_layout
from .upload import local_path, refuse_url

__all__ = ["create", "VariableSpec"]

#: One entry of ``variables``: ``(shape, dtype)`` or ``(shape, dtype, attrs)``.
VariableSpec = tuple[Sequence[int], Any] | tuple[Sequence[int], Any, Mapping[str, Any]]


def _normalise_specs(
    path: str, variables: Mapping[str, VariableSpec]
) -> dict[str, tuple[tuple[int, ...], np.dtype, dict[str, Any]]]:
    """``{name: (shape, dtype, attrs)}`` checked, before any byte is written."""
    if not variables:
        raise InvalidArgumentError(
            f"cannot create '{path}': no variables given; expected {{name: (shape, dtype)}}"
        )
    specs = {}
    for name, spec in variables.items():
        name = str(name)
        if "/" in name:
            raise InvalidArgumentError(
                f"cannot create '{path}': variable name {name!r} contains '/'; pass the "
                "group as group= and plain variable names"
            )
        if not name or name.startswith("."):
            raise InvalidArgumentError(
                f"cannot create '{path}': invalid variable name {name!r}; expected a "
                "non-empty name like 'image'"
            )
        if not isinstance(spec, tuple | list) or len(spec) not in (2, 3):
            raise InvalidArgumentError(
                f"cannot create '{path}': variable '{name}' must be (shape, dtype) or "
                f"(shape, dtype, attrs), got {spec!r}"
            )
        specs[name] = (_shape(path, name, spec[0]), _dtype(path, name, spec[1]))
        specs[name] += (dict(spec[2]) if len(spec) == 3 else {},)
    return specs


def _shape(path: str, name: str, shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int | np.integer):
        shape = (int(shape),)
    try:
        shape = tuple(int(n) for n in shape)
    except TypeError as err:
        raise InvalidArgumentError(
            f"cannot create '{path}': shape of '{name}' must be a tuple of ints, got {shape!r}"
        ) from err
    if any(n < 0 for n in shape):
        raise InvalidArgumentError(
            f"cannot create '{path}': negative length in shape {shape} of '{name}'; "
            "expected lengths >= 0"
        )
    return shape


def _dtype(path: str, name: str, dtype: Any) -> np.dtype:
    try:
        return h5py.string_dtype() if dtype is str else np.dtype(dtype)
    except TypeError as err:
        raise UnsupportedDtypeError(
            f"cannot create '{path}': '{name}' has dtype {dtype!r}, not a numpy dtype"
        ) from err


def _dim_names(
    path: str, specs: Mapping[str, tuple], dims: Mapping[str, Sequence[Hashable]] | None
) -> dict[str, tuple[str, ...]]:
    """Every variable's dimension names: ``dims``, then lazyh5's default rule."""
    user_dims = {name: tuple(map(str, d)) for name, d in (dims or {}).items()}
    unknown = sorted(set(user_dims) - set(specs))
    if unknown:
        raise DimensionError(
            f"cannot create '{path}': dims= names {unknown}, which are not in variables "
            f"{sorted(specs)}"
        )
    shapes = {name: spec[0] for name, spec in specs.items()}
    # A 1-D variable named like a dimension used in the group is that coordinate.
    used = {d for named in user_dims.values() for d in named}
    for name, shape in shapes.items():
        if name not in user_dims and name in used and len(shape) == 1:
            user_dims[name] = (name,)
    return {n: tuple(d) for n, d in dimnames.assign_dims(path, shapes, {}, user_dims).items()}


def create(
    path: str | os.PathLike,
    variables: Mapping[str, VariableSpec],
    *,
    group: str | None = None,
    dims: Mapping[str, Sequence[Hashable]] | None = None,
    hdf5_chunks: HDF5Chunks = "auto",
    compression: Any = None,
    compression_opts: Any = None,
    shuffle: bool | Mapping[str, bool] = False,
    fillvalue: Any = None,
    attrs: Mapping[str, Any] | None = None,
    mode: str = "w-",
) -> xr.Dataset:
    """Create HDF5 datasets with named dimensions and return them opened lazily.

    Dimension names are stored as HDF5 dimension scales the way netCDF4 does, so
    :func:`lazyh5.open_dataset` and xarray's ``h5netcdf`` engine see the same dims.
    A new file is built under a temporary name and renamed into place, so a crash
    never leaves a half-made file at ``path``.

    Parameters
    ----------
    path
        File to create: a local path (a remote URL, ``s3://...``, is refused: the file
        is filled in place afterwards, which an object store cannot do;
        :func:`lazyh5.to_hdf5` writes to URLs).
    variables
        ``{name: (shape, dtype)}`` or ``{name: (shape, dtype, attrs)}``; plain names
        (no ``/``: a group is given with ``group=``).
    group
        Group to create the variables in (``"train"``); the root by default.
    dims
        ``{name: ("sample", "y", "x", "channel")}``; unnamed axes follow the same
        default rule as :func:`lazyh5.open_dataset`.
    hdf5_chunks
        ``"auto"`` (default): HDF5 chunks of whole rows of about 1 MiB, suited to
        reading samples. ``None``: contiguous. A tuple for every variable, or a
        ``{name: value}`` mapping.
    compression, compression_opts
        ``"gzip"`` (level in ``compression_opts``), ``"lzf"``, a gzip level, or
        ``"blosc"``, ``"zstd"``, ``"lz4"`` with ``hdf5plugin`` installed. A mapping
        gives per-variable values.
    shuffle
        Add HDF5's byte-shuffle filter (helps compression of numeric data), for all
        variables or ``{name: bool}``.
    fillvalue
        Value of unwritten elements (one for all, or a ``{name: value}`` mapping).
    attrs
        Attributes of the group (the file's root by default). Per-variable attributes
        go in the third element of a ``variables`` entry.
    mode
        ``"w-"`` (default; fail if the file exists), ``"w"`` (replace it) or ``"a"``
        (add datasets to an existing file, or create it).

    Returns
    -------
    xarray.Dataset
        The group written, opened with ``mode="r+"`` for ``ds["x"].h5[...] = ...``.

    Examples
    --------
    >>> import numpy as np, lazyh5
    >>> ds = lazyh5.create(
    ...     "new.h5",
    ...     {"image": ((1000, 32, 32, 3), "f4"), "label": ((1000,), "i8")},
    ...     dims={"image": ("sample", "y", "x", "channel")},
    ...     compression="lzf",
    ... )
    >>> dict(ds.sizes)
    {'sample': 1000, 'y': 32, 'x': 32, 'channel': 3}
    >>> test = lazyh5.create("new.h5", {"image": ((200, 32, 32, 3), "f4")}, group="test",
    ...                      mode="a")
    >>> test["image"].shape
    (200, 32, 32, 3)
    """
    path = os.fspath(path)
    refuse_url(
        path,
        "create",
        "create the file on a local path, fill it, then upload it (fsspec's put_file), or "
        "write a computed Dataset to the URL with lazyh5.to_hdf5(url, ds)",
    )
    path = local_path(path) or path  # a file:// URL
    mode = _check_mode(path, mode)
    grp = group_path(path, group)
    specs = _normalise_specs(path, variables)
    dim_names = _dim_names(path, specs, dims)
    layouts = [
        variable_layout(
            path,
            name,
            shape,
            dtype,
            dim_names[name],
            hdf5_chunks=hdf5_chunks,
            compression=compression,
            compression_opts=compression_opts,
            shuffle=shuffle,
            fillvalue=fillvalue,
            attrs=vattrs,
        )
        for name, (shape, dtype, vattrs) in specs.items()
    ]
    if mode == "a":
        _check_appendable(path, grp, layouts)
        _write(path, path, grp, layouts, attrs)
    else:
        _write_new(path, mode, grp, layouts, attrs)
    return open_dataset(path, group=grp or None, mode="r+")


def _check_mode(path: str, mode: str) -> str:
    """The mode to create ``path`` with (``"a"`` of a missing file is ``"w-"``), checked."""
    if mode not in ("w-", "x", "w", "a"):
        raise InvalidArgumentError(
            f"cannot create '{path}': mode must be 'w-', 'w' or 'a', got {mode!r}"
        )
    if mode in ("w-", "x") and os.path.exists(path) and not os.path.isdir(path):
        raise AlreadyExistsError(
            f"cannot create '{path}': it already exists; pass mode='w' to replace it or "
            "mode='a' to add datasets to it"
        )
    if mode == "a" and not os.path.lexists(path):
        mode = "w-"
    if mode != "a":
        check_new_file_path(path, mode)
    return mode


def _write(
    path: str,
    target: str,
    group: str,
    layouts: Sequence[VariableLayout],
    attrs: Mapping[str, Any] | None,
) -> None:
    """Lay ``layouts`` out in ``group`` of ``target`` (``path`` itself, or its new copy)."""
    with open_h5file(target, "a" if target == path else "w") as f:
        if attrs:
            (f.require_group(group) if group else f).attrs.update(dict(attrs))
        write_layout(f, path, layouts, group)


def _write_new(
    path: str,
    mode: str,
    group: str,
    layouts: Sequence[VariableLayout],
    attrs: Mapping[str, Any] | None,
) -> None:
    """Build a new file under a temporary name in the same folder, then rename it."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, target = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the mode a plain open would.
    os.chmod(target, 0o666 & ~_umask())
    try:
        _write(path, target, group, layouts, attrs)
        if mode in ("w-", "x") and os.path.exists(path):
            raise AlreadyExistsError(f"cannot create '{path}': it appeared while writing")
        os.replace(target, path)
    except BaseException:
        if os.path.exists(target):
            os.unlink(target)
        raise


def _check_appendable(path: str, group: str, layouts: Sequence[VariableLayout]) -> None:
    """Refuse ``mode="a"`` before writing anything if a name or a dimension clashes.

    :func:`write_layout` checks the same while writing, when earlier datasets have
    already been added; checking first keeps the file unchanged on such an error.
    """
    prefix = f"{group}/" if group else ""
    names = {prefix + layout.name for layout in layouts}
    with open_h5file(path, "r") as f:
        for layout in layouts:
            if prefix + layout.name in f:
                raise AlreadyExistsError(
                    f"cannot create '{prefix + layout.name}' in '{path}': it already "
                    "exists; use mode='w' to start a new file"
                )
        for layout in layouts:
            for dim, n in zip(layout.dims, layout.shape, strict=True):
                existing = f.get(prefix + dim)
                if existing is None or prefix + dim in names:
                    continue
                if not isinstance(existing, h5py.Dataset) or existing.shape != (n,):
                    raise DimensionError(
                        f"cannot create '{path}': dimension '{dim}' (length {n}) of "
                        f"'{prefix + layout.name}' clashes with the existing object "
                        f"'/{prefix + dim}'"
                    )


def _umask() -> int:
    """The process umask, read without changing it where Linux tells it (os.umask
    sets it, briefly affecting files other threads create)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
