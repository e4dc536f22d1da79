"""The layout of the datasets the write path creates: one :class:`VariableLayout` each.

:func:`variable_layout` is the one place where the options of :func:`lazyh5.create`,
:func:`lazyh5.to_hdf5` and ``lazyh5 rechunk`` (``hdf5_chunks``, ``compression``,
``shuffle``, ``fillvalue``) become HDF5 creation settings; :func:`write_layout` creates
the datasets of a group with netCDF4-style dimension scales, so
:func:`lazyh5.open_dataset` and xarray's ``h5netcdf`` engine see the same dims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from ..backend import dims as dimnames
from ..backend.chunking import row_chunks
from ..errors import DimensionError, InvalidArgumentError, Lazyh5Error

__all__ = [
    "VariableLayout",
    "variable_layout",
    "write_layout",
    "per_variable",
    "group_path",
    "HDF5Chunks",
]

#: What ``hdf5_chunks=`` takes: ``"auto"``, ``None`` (contiguous), a tuple of chunk
#: lengths, or a ``{name: value}`` mapping of those.
HDF5Chunks = str | Sequence[int] | Mapping[str, Any] | None

_PLUGIN_FILTERS = {"blosc": "Blosc", "zstd": "Zstd", "lz4": "LZ4", "blosc2": "Blosc2"}


@dataclass(frozen=True)
class VariableLayout:
    """How one variable is stored: what :func:`write_layout` creates.

    Examples
    --------
    >>> layout = variable_layout("new.h5", "x", (1000, 16), "f4", ("sample", "x_dim_1"))
    >>> layout.chunks, layout.filters
    ((1000, 16), {})
    """

    #: Name in its group (never a path).
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    dims: tuple[str, ...]
    #: HDF5 chunks, ``None`` for contiguous storage.
    chunks: tuple[int, ...] | None
    #: ``create_dataset`` keywords of the filters (``compression``, ``shuffle``, ...).
    filters: Mapping[str, Any] = field(default_factory=dict)
    fillvalue: Any = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def dataset_kwargs(self) -> dict[str, Any]:
        """Keywords of ``h5py.Group.create_dataset`` for this variable."""
        return dict(
            shape=self.shape,
            dtype=self.dtype,
            chunks=self.chunks,
            fillvalue=self.fillvalue,
            **self.filters,
        )


def per_variable(value: Any, name: str, default: Any = None) -> Any:
    """``value[name]`` (``default`` if missing) for a mapping, else ``value`` itself."""
    # A filter object (hdf5plugin.Blosc()) is a Mapping of create_dataset keywords,
    # but one value for every variable, not a {name: value} mapping.
    if isinstance(value, Mapping) and not isinstance(value, h5py.filters.FilterRefBase):
        return value.get(name, default)
    return value


def group_path(path: str, group: str | None, action: str = "create") -> str:
    """``group`` without leading or trailing ``/`` (``""`` for the root), checked."""
    clean = (group or "").strip("/")
    if "//" in clean or any(part.startswith(".") for part in clean.split("/") if part):
        raise InvalidArgumentError(
            f"cannot {action} '{path}': invalid group {group!r}; expected a path like "
            "'train' or 'train/images'"
        )
    return clean


def variable_layout(
    path: str,
    name: str,
    shape: Sequence[int],
    dtype: npt.DTypeLike,
    dims: Sequence[str],
    *,
    hdf5_chunks: HDF5Chunks = "auto",
    compression: Any = None,
    compression_opts: Any = None,
    shuffle: bool | Mapping[str, bool] = False,
    fillvalue: Any = None,
    attrs: Mapping[str, Any] | None = None,
    source_chunks: Sequence[int] | None = None,
    action: str = "create",
) -> VariableLayout:
    """The layout of variable ``name`` from the write options (each maybe per variable).

    ``hdf5_chunks="auto"`` keeps ``source_chunks`` (the HDF5 chunks the data was read
    from) where given, else takes :func:`lazyh5.backend.chunking.row_chunks`: whole rows
    of about 1 MiB. ``None`` is contiguous, unless a filter needs chunks (then rows
    again). Scalars and empty arrays are stored contiguous and unfiltered, as HDF5
    requires. ``action`` names the call in error messages (``"create"``, ``"write"``).

    Examples
    --------
    >>> variable_layout("new.h5", "image", (20_000, 32, 32, 3), "u1",
    ...                 ("sample", "y", "x", "channel"), compression="lzf").chunks
    (341, 32, 32, 3)
    >>> variable_layout("new.h5", "t", (100,), "f8", ("t",), hdf5_chunks=None).chunks
    """
    shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
    where = f"cannot {action} '{path}'"
    filters = _filter_kwargs(
        where,
        per_variable(compression, name),
        per_variable(compression_opts, name),
        bool(per_variable(shuffle, name, False)),
    )
    chunks = _chunks(where, name, shape, dtype, per_variable(hdf5_chunks, name, "auto"))
    if chunks == "auto" and source_chunks is not None and len(source_chunks) == len(shape):
        chunks = tuple(max(1, min(int(c), n)) for c, n in zip(source_chunks, shape, strict=True))
    if chunks == "auto" or (chunks is None and filters):
        chunks = row_chunks(shape, dtype)
    if not shape or 0 in shape:
        chunks, filters = None, {}
    return VariableLayout(
        name=name,
        shape=shape,
        dtype=dtype,
        dims=tuple(dims),
        chunks=chunks,
        filters=filters,
        fillvalue=per_variable(fillvalue, name),
        attrs=dict(attrs or {}),
    )


def _chunks(where: str, name: str, shape: tuple[int, ...], dtype: np.dtype, value: Any) -> Any:
    """``value`` of ``hdf5_chunks`` checked: ``"auto"``, ``None`` or a tuple."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise InvalidArgumentError(
            f"{where}: hdf5_chunks={value!r} for '{name}'; expected 'auto' (whole rows of "
            "about 1 MiB), None (contiguous), a tuple of chunk lengths, or {name: value}"
        )
    if len(value) != len(shape):
        raise InvalidArgumentError(
            f"{where}: hdf5_chunks {tuple(value)} for '{name}' have {len(value)} axes, "
            f"the shape {shape} has {len(shape)}"
        )
    return tuple(int(c) for c in value)


def _filter_kwargs(
    where: str, compression: Any, compression_opts: Any, shuffle: bool
) -> dict[str, Any]:
    """``create_dataset`` keywords of one variable's compression and shuffle filters."""
    kw: dict[str, Any] = {}
    name = compression.lower() if isinstance(compression, str) else None
    if compression is None:
        pass
    elif isinstance(compression, int) and not isinstance(compression, bool):
        kw.update(compression="gzip", compression_opts=compression)
    elif name in ("gzip", "lzf", "szip"):
        kw["compression"] = name
        if compression_opts is not None:
            kw["compression_opts"] = compression_opts
    elif name in _PLUGIN_FILTERS:
        try:
            import hdf5plugin
        except ImportError as err:
            raise Lazyh5Error(
                f"{where} with compression={compression!r}: it needs the hdf5plugin "
                "package; install it with `pip install lazyh5[plugins]`"
            ) from err
        factory = getattr(hdf5plugin, _PLUGIN_FILTERS[name])
        opts = {} if compression_opts is None else {"clevel": int(compression_opts)}
        kw["compression"] = factory(**opts)
    elif isinstance(compression, h5py.filters.FilterRefBase):
        kw["compression"] = compression
    else:
        raise InvalidArgumentError(
            f"{where}: unknown compression {compression!r}; expected 'gzip', 'lzf', a gzip "
            f"level 0-9, or one of {sorted(_PLUGIN_FILTERS)} (with hdf5plugin installed)"
        )
    if shuffle:
        kw["shuffle"] = True
    return kw


def write_layout(
    f: h5py.File, path: str, layouts: Sequence[VariableLayout], group: str = ""
) -> dict[str, h5py.Dataset]:
    """Create the datasets of ``layouts`` in ``group`` of ``f``, with dimension scales.

    One dimension scale per dimension, netCDF4-style: a dataset named after the
    dimension whose ``NAME`` marks it "a dimension but not a variable", unless a 1-D
    variable of that name exists, which then is the coordinate. Returns the created
    datasets by variable name.
    """
    check_creatable(path, layouts, group)
    grp = f.require_group(group) if group else f
    scales = _Scales(grp, path)
    created = {}
    # Coordinate-like variables (1-D, named after their own dimension) first.
    # Names are new: create() refuses existing ones first, to_hdf5 writes a new file.
    for layout in sorted(layouts, key=lambda v: v.dims != (v.name,)):
        dset = grp.create_dataset(layout.name, **layout.dataset_kwargs())
        for key, value in layout.attrs.items():
            dset.attrs[key] = value
        if layout.dims == (layout.name,):
            scales.add(layout.name, dset)
        created[layout.name] = dset
    for layout in layouts:
        dset = created[layout.name]
        for axis, dim in enumerate(layout.dims):
            scale = scales.get(dim, dset.shape[axis])
            if scale != dset:
                dset.dims[axis].attach_scale(scale)
    return created


def check_creatable(path: str, layouts: Sequence[VariableLayout], group: str) -> None:
    """Raise :class:`InvalidArgumentError` unless HDF5 accepts every layout (filter
    options such as a gzip level of 99 are only checked by h5py when it creates the
    dataset): each is created first in a scratch file in memory, so that a bad one
    leaves nothing half-created in ``path``."""
    with h5py.File("scratch", "w", driver="core", backing_store=False) as scratch:
        for layout in layouts:
            try:
                scratch.create_dataset(layout.name, **layout.dataset_kwargs())
            except (ValueError, TypeError) as err:
                raise InvalidArgumentError(
                    f"cannot create '{_join(group, layout.name)}' in '{path}': {err}"
                ) from None


def _join(group: str, name: str) -> str:
    return f"{group}/{name}" if group else name


class _Scales:
    """The dimension scales of one group: coordinate variables, else made on first use."""

    def __init__(self, grp: h5py.Group, path: str) -> None:
        self.grp, self.path = grp, path
        self.scales: dict[str, h5py.Dataset] = {}
        self.numbered = 0

    def add(self, dim: str, dset: h5py.Dataset) -> None:
        """Make the coordinate variable ``dset`` the scale of ``dim``."""
        dset.make_scale(dim)
        self.scales[dim] = dset

    def get(self, dim: str, n: int) -> h5py.Dataset:
        """The scale of ``dim`` (length ``n``): known, an existing dataset, or a new one."""
        if dim in self.scales:
            return self.scales[dim]
        grp = self.grp
        if dim in grp:
            scale = grp[dim]
            if not isinstance(scale, h5py.Dataset) or scale.shape != (n,):
                raise DimensionError(
                    f"cannot create '{self.path}': dimension '{dim}' (length {n}) clashes "
                    f"with the existing object '{grp.name.rstrip('/')}/{dim}'"
                )
            if not dimnames.is_dimension_scale(scale):
                scale.make_scale(dim)
        else:
            scale = grp.create_dataset(dim, shape=(n,), dtype="f4")
            phony = dimnames.NETCDF_PHONY_NAME
            scale.make_scale(phony + f"{n:>10}" if n else phony)
        scale.attrs["_Netcdf4Dimid"] = np.int32(self.numbered)
        self.numbered += 1
        self.scales[dim] = scale
        return scale
