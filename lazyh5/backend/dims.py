"""Dimension names for HDF5 datasets.

Plain HDF5 has no dimension names, so lazyh5 decides them in this order:

1. ``dims={"image": ("sample", "y", "x", "channel")}`` given by the caller wins.
2. HDF5 dimension scales attached to an axis (netCDF4 / h5netcdf files, or h5py's
   ``dset.dims[i].attach_scale``) name it.
3. Otherwise the **default rule**: the *sample length* of a group is the leading
   length of its largest dataset (most elements; ties go to the longer axis 0). Axis 0
   of every dataset with that length is named ``sample``; every other unnamed axis
   ``i`` of dataset ``var`` is named ``{var}_dim_{i}``. So ``image`` (1000, 32, 32, 3)
   and ``label`` (1000,) share ``sample``, and two axes of different lengths never
   share a name.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import h5py

from ..errors import DimensionError

SAMPLE_DIM = "sample"
# The NAME netCDF4 gives a dimension scale that is a dimension but holds no coordinate.
NETCDF_PHONY_NAME = "This is a netCDF dimension but not a netCDF variable."


def _decode(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def is_dimension_scale(dset: h5py.Dataset) -> bool:
    """Whether ``dset`` is an HDF5 dimension scale (``CLASS == "DIMENSION_SCALE"``)."""
    cls = dset.attrs.get("CLASS")
    return cls is not None and _decode(cls) == "DIMENSION_SCALE"


def scale_name(scale: h5py.Dataset, base: str | None = None) -> tuple[str, bool]:
    """The dimension name a scale gives, and whether it carries coordinate values.

    ``base`` is the scale's own name in its group, when the caller knows it: h5py's
    ``.name`` asks HDF5 to search the file for the object's path, which grows with
    the size of the group.
    """
    if base is None:
        base = scale.name.rsplit("/", 1)[-1]
    name = scale.attrs.get("NAME")
    if name is None:
        return base, True
    name = _decode(name)
    if name.startswith(NETCDF_PHONY_NAME):
        return base, False
    return (name or base), True


def scale_dims(
    dset: h5py.Dataset, known: Mapping[Any, tuple[str, bool]] | None = None
) -> list[str | None]:
    """Names from dimension scales attached to each axis of ``dset`` (``None`` if none).

    ``known`` maps the object ids (``scale.id``: file and address) of scales already
    named to their :func:`scale_name`, so they are not looked up again.
    """
    names: list[str | None] = [None] * dset.ndim
    if dset.ndim == 0 or "DIMENSION_LIST" not in dset.attrs:
        return names
    known = known or {}
    for axis in range(dset.ndim):
        proxy = dset.dims[axis]
        if len(proxy):
            scale = proxy[0]
            names[axis] = (known.get(scale.id) or scale_name(scale))[0]
    return names


def sample_length(shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """The leading length of the largest dataset (ties: the longer axis 0)."""
    ranked = [(math.prod(shape), shape[0]) for shape in shapes.values() if len(shape) >= 1]
    return max(ranked)[1] if ranked else None


def assign_dims(
    filename: str,
    shapes: Mapping[str, tuple[int, ...]],
    from_scales: Mapping[str, Sequence[str | None]],
    user_dims: Mapping[str, Sequence[Hashable]] | None,
) -> dict[str, tuple[str, ...]]:
    """Name every axis of every dataset; validate that each name has one length."""
    user_dims = dict(user_dims or {})
    unknown = sorted(set(user_dims) - set(shapes))
    if unknown:
        from ..errors import ObjectNotFoundError

        raise ObjectNotFoundError(
            f"dims= names {unknown} but '{filename}' has no such dataset here; "
            f"available: {sorted(shapes)}"
        )
    n_sample = sample_length({k: s for k, s in shapes.items() if not any(from_scales.get(k, ()))})
    result: dict[str, tuple[str, ...]] = {}
    for var, shape in shapes.items():
        if var in user_dims:
            given = user_dims[var]
            if isinstance(given, str):
                given = (given,)
            given = tuple(given)
            if len(given) != len(shape):
                raise DimensionError(
                    f"dims= for '{var}' in '{filename}' has {len(given)} name(s) {given}, "
                    f"but the dataset has {len(shape)} axes (shape {shape})"
                )
            if len(set(given)) != len(given):
                raise DimensionError(f"dims= for '{var}' in '{filename}' repeats a name: {given}")
            result[var] = tuple(str(d) for d in given)
            continue
        scaled = list(from_scales.get(var, [None] * len(shape)))
        names = []
        for axis, n in enumerate(shape):
            if scaled[axis] is not None:
                names.append(scaled[axis])
            elif axis == 0 and n == n_sample:
                names.append(SAMPLE_DIM)
            else:
                names.append(f"{var.rsplit('/', 1)[-1]}_dim_{axis}")
        result[var] = tuple(names)
    _check_consistent(filename, shapes, result)
    return result


def _check_consistent(
    filename: str, shapes: Mapping[str, tuple[int, ...]], dims: Mapping[str, tuple[str, ...]]
) -> None:
    seen: dict[str, tuple[int, str]] = {}
    for var, names in dims.items():
        for name, n in zip(names, shapes[var], strict=True):
            if name in seen and seen[name][0] != n:
                other_n, other_var = seen[name]
                raise DimensionError(
                    f"dimension '{name}' in '{filename}' has length {n} in '{var}' but "
                    f"{other_n} in '{other_var}'; give them different names with dims="
                )
            seen.setdefault(name, (n, var))
