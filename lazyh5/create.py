"""Create HDF5 files with named dimensions, chunking and compression."""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import xarray as xr

from ._files import check_new_file_path, open_h5file
from .backend import dims as dimnames
from .errors import (
    AlreadyExistsError,
    DimensionError,
    InvalidArgumentError,
    Lazyh5Error,
    UnsupportedDtypeError,
)

# Target bytes per HDF5 chunk for chunks=True: big enough that per-chunk overhead is
# small, small enough that a batch of 32 images does not decode megabytes it discards.
_CHUNK_TARGET = 1 << 20

_PLUGIN_FILTERS = {"blosc": "Blosc", "zstd": "Zstd", "lz4": "LZ4", "blosc2": "Blosc2"}

VariableSpec = tuple[Sequence[int], Any] | tuple[Sequence[int], Any, Mapping[str, Any]]


def row_chunks(shape: tuple[int, ...], dtype: np.dtype, target: int = _CHUNK_TARGET) -> tuple:
    """HDF5 chunks of whole rows (axis 0) of about ``target`` bytes.

    Training reads whole samples, so chunks span every inner axis; h5py's own guess
    splits inner axes, which makes each sample cost several chunk decodes.
    """
    if not shape:
        return None
    row = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    if row > target * 4 and len(shape) > 1:
        return True  # huge rows: let h5py split the inner axes
    rows = max(1, min(max(shape[0], 1), target // max(row, 1)))
    return (rows, *(max(n, 1) for n in shape[1:]))


def _compression_kwargs(
    path: str, compression: Any, compression_opts: Any, shuffle: bool
) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if compression is None:
        pass
    elif isinstance(compression, int) and not isinstance(compression, bool):
        kw.update(compression="gzip", compression_opts=compression)
    elif isinstance(compression, str) and compression.lower() in ("gzip", "lzf", "szip"):
        kw["compression"] = compression.lower()
        if compression_opts is not None:
            kw["compression_opts"] = compression_opts
    elif isinstance(compression, str) and compression.lower() in _PLUGIN_FILTERS:
        try:
            import hdf5plugin
        except ImportError as err:
            raise Lazyh5Error(
                f"cannot create '{path}' with compression={compression!r}: it needs the "
                "hdf5plugin package; install it with `pip install lazyh5[plugins]`"
            ) from err
        factory = getattr(hdf5plugin, _PLUGIN_FILTERS[compression.lower()])
        opts = {} if compression_opts is None else {"clevel": int(compression_opts)}
        kw["compression"] = factory(**opts)
    elif isinstance(compression, h5py.filters.FilterRefBase):
        kw["compression"] = compression
    else:
        raise InvalidArgumentError(
            f"cannot create '{path}': unknown compression {compression!r}; expected "
            f"'gzip', 'lzf', a gzip level 0-9, or one of {sorted(_PLUGIN_FILTERS)} "
            "(with hdf5plugin installed)"
        )
    if shuffle:
        kw["shuffle"] = True
    return kw


def _normalise_specs(
    path: str, variables: Mapping[str, VariableSpec]
) -> dict[str, tuple[tuple[int, ...], np.dtype, dict[str, Any]]]:
    if not variables:
        raise InvalidArgumentError(
            f"cannot create '{path}': no variables given; expected {{name: (shape, dtype)}}"
        )
    specs = {}
    for name, spec in variables.items():
        clean = str(name).strip("/")
        if not clean or "//" in clean or clean.startswith("."):
            raise InvalidArgumentError(
                f"cannot create '{path}': invalid variable name {name!r}; expected a "
                "non-empty name or path like 'image' or 'train/image'"
            )
        if not isinstance(spec, tuple | list) or len(spec) not in (2, 3):
            raise InvalidArgumentError(
                f"cannot create '{path}': variable '{name}' must be (shape, dtype) or "
                f"(shape, dtype, attrs), got {spec!r}"
            )
        shape, dtype = spec[0], spec[1]
        attrs = dict(spec[2]) if len(spec) == 3 else {}
        if isinstance(shape, int | np.integer):
            shape = (int(shape),)
        try:
            shape = tuple(int(n) for n in shape)
        except TypeError as err:
            raise InvalidArgumentError(
                f"cannot create '{path}': shape of '{name}' must be a tuple of ints, "
                f"got {spec[0]!r}"
            ) from err
        if any(n < 0 for n in shape):
            raise InvalidArgumentError(
                f"cannot create '{path}': negative length in shape {shape} of '{name}'; "
                "expected lengths >= 0"
            )
        try:
            dtype = h5py.string_dtype() if dtype is str else np.dtype(dtype)
        except TypeError as err:
            raise UnsupportedDtypeError(
                f"cannot create '{path}': '{name}' has dtype {spec[1]!r}, not a numpy dtype"
            ) from err
        specs[clean] = (shape, dtype, attrs)
    return specs


def _per_var(value: Any, name: str, default: Any = None) -> Any:
    if isinstance(value, Mapping):
        return value.get(name, default)
    return value


def create(
    path: str | os.PathLike,
    variables: Mapping[str, VariableSpec],
    *,
    dims: Mapping[str, Sequence[Hashable]] | None = None,
    chunks: bool | tuple[int, ...] | Mapping[str, Any] | None = True,
    compression: Any = None,
    compression_opts: Any = None,
    shuffle: bool = False,
    fillvalue: Any = None,
    attrs: Mapping[str, Any] | None = None,
    mode: str = "w-",
) -> xr.Dataset | xr.DataTree:
    """Create HDF5 datasets with named dimensions and return the file opened lazily.

    Dimension names are stored as HDF5 dimension scales the way netCDF4 does, so
    :func:`lazyh5.open_dataset` and xarray's ``h5netcdf`` engine see the same dims.
    A new file is built under a temporary name and renamed into place, so a crash
    never leaves a half-made file at ``path``.

    Parameters
    ----------
    path
        File to create.
    variables
        ``{name: (shape, dtype)}`` or ``{name: (shape, dtype, attrs)}``; a name may
        contain ``/`` to place the dataset in a group (``"train/image"``).
    dims
        ``{name: ("sample", "y", "x", "channel")}``; unnamed axes follow the same
        default rule as :func:`lazyh5.open_dataset`.
    chunks
        ``True`` (default): chunks of whole rows of about 1 MiB, suited to reading
        samples. ``None``/``False``: contiguous. A tuple for every variable, or a
        ``{name: chunks}`` mapping.
    compression, compression_opts
        ``"gzip"`` (level in ``compression_opts``), ``"lzf"``, a gzip level, or
        ``"blosc"``, ``"zstd"``, ``"lz4"`` with ``hdf5plugin`` installed. A mapping
        gives per-variable values.
    shuffle
        Add HDF5's byte-shuffle filter (helps compression of numeric data).
    fillvalue
        Value of unwritten elements (one for all, or a ``{name: value}`` mapping).
    attrs
        Attributes of the file's root group. Per-variable attributes go in the third
        element of a ``variables`` entry.
    mode
        ``"w-"`` (default; fail if the file exists), ``"w"`` (replace it) or ``"a"``
        (add datasets to an existing file).

    Returns
    -------
    xarray.Dataset or xarray.DataTree
        The file opened with ``mode="r+"``: a Dataset when every variable is at the
        root, otherwise a DataTree.

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
    """
    path = os.fspath(path)
    if mode not in ("w-", "x", "w", "a"):
        raise InvalidArgumentError(
            f"cannot create '{path}': mode must be 'w-', 'w' or 'a', got {mode!r}"
        )
    specs = _normalise_specs(path, variables)
    if mode in ("w-", "x") and os.path.exists(path) and not os.path.isdir(path):
        raise AlreadyExistsError(
            f"cannot create '{path}': it already exists; pass mode='w' to replace it or "
            "mode='a' to add datasets to it"
        )
    if mode == "a" and not os.path.lexists(path):
        mode = "w-"
    if mode != "a":
        check_new_file_path(path, mode)

    # Validate everything before any byte is written.
    by_group: dict[str, dict[str, tuple[int, ...]]] = defaultdict(dict)
    for name, (shape, _dtype, _attrs) in specs.items():
        group, _, base = name.rpartition("/")
        by_group[group][base] = shape
    user_dims = dict(dims or {})
    unknown = sorted(set(user_dims) - set(specs))
    if unknown:
        raise DimensionError(
            f"cannot create '{path}': dims= names {unknown}, which are not in variables "
            f"{sorted(specs)}"
        )
    dim_names: dict[str, tuple[str, ...]] = {}
    for group, shapes in by_group.items():
        prefix = f"{group}/" if group else ""
        group_dims = {b: user_dims[prefix + b] for b in shapes if prefix + b in user_dims}
        # A 1-D variable named like a dimension used in its group is that coordinate.
        used = {d for named in group_dims.values() for d in named}
        for b, shape in shapes.items():
            if b not in group_dims and b in used and len(shape) == 1:
                group_dims[b] = (b,)
        named = dimnames.assign_dims(path, shapes, {}, group_dims)
        dim_names.update({prefix + b: d for b, d in named.items()})
    plans = {}
    for name, (shape, dtype, _attrs) in specs.items():
        vchunks = _per_var(chunks, name, True)
        if vchunks is True:
            vchunks = row_chunks(shape, dtype)
        elif vchunks is False:
            vchunks = None
        if isinstance(vchunks, tuple | list) and len(vchunks) != len(shape):
            raise InvalidArgumentError(
                f"cannot create '{path}': chunks {tuple(vchunks)} for '{name}' have "
                f"{len(vchunks)} axes, the shape {shape} has {len(shape)}"
            )
        comp = _compression_kwargs(
            path, _per_var(compression, name), _per_var(compression_opts, name), shuffle
        )
        if comp and vchunks is None and shape != ():
            vchunks = row_chunks(shape, dtype)
        plans[name] = dict(
            shape=shape,
            dtype=dtype,
            chunks=vchunks if shape != () else None,
            fillvalue=_per_var(fillvalue, name),
            **(comp if shape != () else {}),
        )

    if mode == "a":
        _check_appendable(path, specs, dim_names)
    target = path
    if mode in ("w-", "x", "w"):
        folder = os.path.dirname(os.path.abspath(path)) or "."
        fd, target = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder
        )
        os.close(fd)
        # mkstemp makes the file private (0600); give it the mode a plain open would.
        os.chmod(target, 0o666 & ~_umask())
    try:
        with open_h5file(target, "w" if target != path else "a") as f:
            if attrs:
                f.attrs.update(dict(attrs))
            write_layout(f, path, specs, plans, dim_names)
        if target != path:
            if mode in ("w-", "x") and os.path.exists(path):
                raise AlreadyExistsError(f"cannot create '{path}': it appeared while writing")
            os.replace(target, path)
    except BaseException:
        if target != path and os.path.exists(target):
            os.unlink(target)
        raise

    from .open import open_dataset, open_datatree

    if any("/" in name for name in specs):
        return open_datatree(path, mode="r+")
    return open_dataset(path, mode="r+")


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


def _check_appendable(path: str, specs, dim_names) -> None:
    """Refuse ``mode="a"`` before writing anything if a name or a dimension clashes.

    :func:`write_layout` checks the same while writing, when earlier datasets have
    already been added; checking first keeps the file unchanged on such an error.
    """
    with open_h5file(path, "r") as f:
        for name in specs:
            if name in f:
                raise AlreadyExistsError(
                    f"cannot create '{name}' in '{path}': it already exists; "
                    "use mode='w' to start a new file"
                )
        for name, dims in dim_names.items():
            group = name.rpartition("/")[0]
            for dim, n in zip(dims, specs[name][0], strict=True):
                key = f"{group}/{dim}" if group else dim
                existing = f.get(key)
                if existing is None or key in specs:
                    continue
                if not isinstance(existing, h5py.Dataset) or existing.shape != (n,):
                    raise DimensionError(
                        f"cannot create '{path}': dimension '{dim}' (length {n}) of "
                        f"'{name}' clashes with the existing object '/{key}'"
                    )


def write_layout(f: h5py.File, path: str, specs, plans, dim_names) -> dict[str, h5py.Dataset]:
    """Create the datasets of ``specs`` in ``f`` with netCDF4-style dimension scales.

    Shared by :func:`create` and :func:`lazyh5.to_hdf5`. ``specs`` maps a variable
    path to ``(shape, dtype, attrs)``, ``plans`` to its ``create_dataset`` keywords and
    ``dim_names`` to its dimension names; returns the created datasets by name.
    """
    # One dimension scale per (group, dim), netCDF4-style: a dataset named after the
    # dimension whose NAME marks it as "a dimension but not a variable", unless a
    # 1-D variable of the same name exists, which then becomes the coordinate.
    scales: dict[tuple[str, str], h5py.Dataset] = {}
    next_id = [0]

    def make_scale(grp: h5py.Group, dim: str, n: int) -> h5py.Dataset:
        key = (grp.name, dim)
        if key in scales:
            return scales[key]
        if dim in grp:
            existing = grp[dim]
            if not isinstance(existing, h5py.Dataset) or existing.shape != (n,):
                raise DimensionError(
                    f"cannot create '{path}': dimension '{dim}' (length {n}) clashes with "
                    f"the existing object '{grp.name.rstrip('/')}/{dim}'"
                )
            if not dimnames.is_dimension_scale(existing):
                existing.make_scale(dim)
            scale = existing
        else:
            scale = grp.create_dataset(dim, shape=(n,), dtype="f4")
            scale.make_scale(
                dimnames.NETCDF_PHONY_NAME + f"{n:>10}" if n else dimnames.NETCDF_PHONY_NAME
            )
        scale.attrs["_Netcdf4Dimid"] = np.int32(next_id[0])
        next_id[0] += 1
        scales[key] = scale
        return scale

    created = {}
    # Coordinate-like variables (1-D, named after their own dimension) first.
    order = sorted(specs, key=lambda n: dim_names[n] != (n.rsplit("/", 1)[-1],))
    for name in order:
        vattrs = specs[name][2]
        plan = plans[name]
        group_path, _, base = name.rpartition("/")
        grp = f.require_group(group_path) if group_path else f
        if base in grp:
            raise AlreadyExistsError(
                f"cannot create '{name}' in '{path}': it already exists; "
                "use mode='w' to start a new file"
            )
        dset = grp.create_dataset(base, **plan)
        for key, value in vattrs.items():
            dset.attrs[key] = value
        if dim_names[name] == (base,):
            dset.make_scale(base)
            scales[(grp.name, base)] = dset
        created[name] = (dset, grp)
    for name, (dset, grp) in created.items():
        for axis, dim in enumerate(dim_names[name]):
            scale = make_scale(grp, dim, dset.shape[axis])
            if scale != dset:
                dset.dims[axis].attach_scale(scale)
    return {name: dset for name, (dset, _grp) in created.items()}
