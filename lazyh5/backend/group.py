"""One group of an HDF5 file as a lazy ``xr.Dataset``: :func:`read_group`.

The steps, each a function below: list the group's members (checking links, leaving
out unreadable types with a warning), scan its dimension scales, name every axis
(``dims=`` first, then the scales, then lazyh5's default rule; in a tree, names an
ancestor uses with another length get the group's suffix), wrap each dataset as a
lazily indexed variable with h5netcdf's encoding, and CF-decode them with xarray's
own decoders.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import xarray as xr
from xarray import conventions
from xarray.backends.common import _decode_variable_name
from xarray.core import indexing

from .._warn import warn_user
from ..errors import ObjectNotFoundError
from . import dims as dimnames
from .array import H5BackendArray
from .attrs import read_attrs
from .encoding import variable_encoding
from .security import check_dataset, check_link
from .store import H5Store
from .types import VariableType, readable_types

NC4_NON_COORD = "_nc4_non_coord_"


def read_group(
    store: H5Store,
    group: str | None = None,
    *,
    dims: Mapping[str, Sequence[Hashable]] | None = None,
    drop_variables: Iterable[str] | None = None,
    inherited_dims: Mapping[str, int] | None = None,
    decode_kwargs: Mapping[str, Any] | None = None,
    in_tree: bool = False,
) -> xr.Dataset:
    """The lazy (not yet dask-chunked) Dataset of one group of ``store``.

    ``in_tree``: the group is read as part of a tree (``open_datatree``): ``dims``
    may name datasets of other groups, and a root holding only groups is expected.
    """
    with store.session():
        grp = store.group(group)
        prefix = _prefix(group)
        members = _members(store, grp, prefix, set(drop_variables or ()))
        scan = _scan_scales(grp, members.datasets, members.kinds)
        if in_tree:  # the tree's dims= names datasets of any of its groups
            dims = {k: v for k, v in (dims or {}).items() if k in scan.shapes}
        dim_map = _name_axes(store.filename, grp.name, scan, dims, inherited_dims or {})
        variables = _variables(store, prefix, members, scan, dim_map)
        ds = _decode(variables, read_attrs(grp, store.filename), decode_kwargs or {})
        ds.encoding["unlimited_dims"] = scan.unlimited | members.unlimited  # as h5netcdf
        if not in_tree and not members.datasets and members.subgroups and grp.name == "/":
            warn_user(
                f"'{store.filename}' has no datasets at its root, only groups "
                f"{sorted(members.subgroups)}: open one with group=..., or all of them "
                "with xr.open_datatree(path, engine='lazyh5')"
            )
    return ds


def check_dims_found(
    filename: str, dims: Mapping[str, Any] | None, tree: Mapping[str, xr.Dataset]
) -> None:
    """Raise if ``dims=`` of a tree names a dataset that no group of it has."""
    found = {
        var.encoding["lazyh5_path"].rsplit("/", 1)[-1]
        for ds in tree.values()
        for var in ds.variables.values()
        if "lazyh5_path" in var.encoding
    }
    unknown = sorted(set(dims or {}) - found)
    if unknown:
        raise ObjectNotFoundError(
            f"dims= names {unknown} but no group of '{filename}' has such a dataset; "
            f"available: {sorted(found)}"
        )


def _prefix(group: str | None) -> str:
    """The group's path as a prefix of its datasets' paths (``""`` for the root)."""
    path = (group or "").strip("/")
    return "/" + path if path else ""


@dataclass
class _Members:
    """What a group holds, as lazyh5 reads it."""

    datasets: dict[str, h5py.Dataset] = field(default_factory=dict)  # readable ones
    kinds: dict[str, VariableType] = field(default_factory=dict)  # and their types
    subgroups: list[str] = field(default_factory=list)
    unlimited: set[str] = field(default_factory=set)  # of the dimension scales dropped


def _members(store: H5Store, grp: h5py.Group, prefix: str, drop: set[str]) -> _Members:
    """The group's readable datasets (less ``drop``; each other one left out with a
    warning), its subgroups, and the unlimited dimensions of the scales dropped."""
    members = _Members()
    datasets: dict[str, h5py.Dataset] = {}
    for name in grp:
        check_link(store.filename, grp, name, store.allow_external)
        obj = grp.get(name)
        if obj is None:  # dangling soft link
            warn_user(
                f"skipping '{grp.name.rstrip('/')}/{name}' in '{store.filename}': "
                "it is a link to nothing"
            )
            continue
        if isinstance(obj, h5py.Group):
            members.subgroups.append(name)
        elif isinstance(obj, h5py.Dataset) and variable_name(name) not in drop:
            check_dataset(store.filename, obj, store.allow_external)
            datasets[name] = obj
        elif isinstance(obj, h5py.Dataset) and _unlimited_scale(obj):
            # a dropped variable's dimension stays in the file's dimensions (h5netcdf)
            members.unlimited.add(dimnames.scale_name(obj, name)[0])
    members.kinds = readable_types(store.filename, datasets, prefix)  # warns about the others
    members.datasets = {name: dset for name, dset in datasets.items() if name in members.kinds}
    return members


def _unlimited_scale(dset: h5py.Dataset) -> bool:
    return (
        dset.shape is not None
        and dset.ndim >= 1
        and dset.maxshape[0] is None
        and dimnames.is_dimension_scale(dset)
    )


def variable_name(name: str) -> str:
    """The netCDF name of a dataset: netCDF-C hides a multi-dimensional variable named
    like a dimension as ``_nc4_non_coord_<name>`` (h5netcdf renames it back too)."""
    return name.removeprefix(NC4_NON_COORD)


@dataclass
class _Scan:
    """What a group's dimension scales say about its datasets."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    scales: dict[str, list[str | None]] = field(default_factory=dict)  # names per axis
    coords: dict[str, str] = field(default_factory=dict)  # dataset -> coordinate name
    unlimited: set[str] = field(default_factory=set)  # dimensions that can grow


def _scan_scales(
    grp: h5py.Group,
    datasets: Mapping[str, h5py.Dataset],
    kinds: Mapping[str, VariableType],
) -> _Scan:
    """Dimension names from the group's HDF5 dimension scales (netCDF4's dimensions)."""
    scan = _Scan()
    # this group's dimension scales: object id -> (dimension name, has coordinate values)
    own = {
        dset.id: dimnames.scale_name(dset, name)
        for name, dset in datasets.items()
        if dset.shape is not None and dimnames.is_dimension_scale(dset)
    }
    for name, dset in datasets.items():
        if dset.shape is None:  # HDF5 null dataspace: nothing to hold
            continue
        if dset.id in own:
            dim, has_values = own[dset.id]
            if _unlimited_scale(dset):
                scan.unlimited.add(dim)
            if not has_values:
                continue  # a netCDF dimension without coordinate values
            if dset.ndim == 1 and not kinds[name].element_shape:
                scan.coords[name] = dim
                scan.shapes[name] = dset.shape
                scan.scales[name] = [dim]
                continue
            if "_Netcdf4Coordinates" in dset.attrs:
                # A multi-dimensional coordinate (netCDF-C's char-array coordinates):
                # its axes are named by netCDF dimension ids, as h5netcdf reads them.
                scan.coords[name] = dim
                scan.shapes[name] = dset.shape
                scan.scales[name] = _names_of_dimids(grp, dset)
                continue
        # An array element type adds trailing axes, named by the default rule.
        element = kinds[name].element_shape
        scan.shapes[name] = dset.shape + element
        scan.scales[name] = dimnames.scale_dims(dset, own) + [None] * len(element)
    return scan


def _names_of_dimids(grp: h5py.Group, dset: h5py.Dataset) -> list[str | None]:
    """Names of the netCDF dimension ids in ``dset``'s ``_Netcdf4Coordinates``."""
    by_id: dict[int, str] = {}
    node: h5py.Group | None = grp
    while node is not None:  # this group's dimensions shadow its ancestors'
        for name in node:
            obj = node.get(name)
            # netCDF-C also writes _Netcdf4Dimid on variables: only scales are dimensions
            if (
                isinstance(obj, h5py.Dataset)
                and "_Netcdf4Dimid" in obj.attrs
                and dimnames.is_dimension_scale(obj)
            ):
                by_id.setdefault(int(obj.attrs["_Netcdf4Dimid"]), dimnames.scale_name(obj, name)[0])
        node = None if node.name == "/" else node.parent
    return [by_id.get(int(i)) for i in dset.attrs["_Netcdf4Coordinates"]]


def _name_axes(
    filename: str,
    group_name: str,
    scan: _Scan,
    dims: Mapping[str, Sequence[Hashable]] | None,
    inherited: Mapping[str, int],
) -> dict[str, tuple[str, ...]]:
    """Every axis's dimension name: ``dims=``, then scales, then the default rule
    (:func:`~lazyh5.backend.dims.assign_dims`), clear of the ancestors' names."""
    dim_map = dimnames.assign_dims(filename, scan.shapes, scan.scales, dims)
    return _avoid_ancestor_conflicts(dim_map, scan, inherited, group_name)


def _avoid_ancestor_conflicts(
    dim_map: dict[str, tuple[str, ...]],
    scan: _Scan,
    inherited: Mapping[str, int],
    group_name: str,
) -> dict[str, tuple[str, ...]]:
    """In a tree, a name an ancestor uses with another length gets the group's suffix.

    Where h5netcdf's tree would be refused by xarray (a group reusing a dimension name
    with another length, as files by ``lazyh5.create`` with default names can), lazyh5
    gives the tree with the group's name appended to that dimension."""
    if not inherited:
        return dim_map
    suffix = group_name.rstrip("/").rsplit("/", 1)[-1]
    fixed = {}
    for var, names in dim_map.items():
        fixed[var] = tuple(
            f"{d}_{suffix}" if d in inherited and inherited[d] != n else d
            for d, n in zip(names, scan.shapes[var], strict=True)
        )
    return fixed


def _variables(
    store: H5Store,
    prefix: str,
    members: _Members,
    scan: _Scan,
    dim_map: Mapping[str, tuple[str, ...]],
) -> dict[str, xr.Variable]:
    """Every named dataset as a lazily indexed ``xr.Variable`` (data not read)."""
    filename = store.filename
    variables: dict[str, xr.Variable] = {}
    for name in scan.shapes:
        dset, kind = members.datasets[name], members.kinds[name]
        names = dim_map[name]
        # The path as reached from this file (dset.name would be the path inside the
        # target file when the group came through an external link).
        path = f"{prefix}/{name}"
        data = H5BackendArray(store, path, scan.shapes[name], kind)
        var_name = scan.coords.get(name, variable_name(name))
        if var_name in variables:
            var_name = name
        variables[var_name] = xr.Variable(
            names,
            indexing.LazilyIndexedArray(data),
            attrs=read_attrs(dset, filename),
            encoding=variable_encoding(filename, path, dset, names, kind),
        )
    return variables


def _decode(
    variables: dict[str, xr.Variable], attrs: dict[str, Any], decoders: Mapping[str, Any]
) -> xr.Dataset:
    """CF decoding exactly as xarray's ``StoreBackendEntrypoint`` does it.

    Coordinates get no index here: ``xr.open_dataset`` creates xarray's default ones
    (or none, with ``create_default_indexes=False``), as for every backend.
    """
    variables = {_decode_variable_name(k): v for k, v in variables.items()}
    kwargs = {"mask_and_scale": True, "decode_times": True, "decode_coords": True}
    kwargs.update(decoders)
    if kwargs.pop("decode_cf", True):
        vars_, attrs, coord_names = conventions.decode_cf_variables(variables, attrs, **kwargs)
    else:
        vars_, coord_names = variables, set()
    coord_vars, data_vars = {}, {}
    for name, var in vars_.items():
        is_coord = name in coord_names or var.dims == (name,)
        (coord_vars if is_coord else data_vars)[name] = var
    coords = xr.Coordinates(coord_vars, indexes={})
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
