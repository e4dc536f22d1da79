"""HDF5 attributes as xarray attributes, exactly as ``engine="h5netcdf"`` gives them.

netCDF-C stores every numeric attribute as a 1-element array and strings as fixed-length
byte strings; h5netcdf (and netCDF4-python) hand them to xarray as scalars and ``str``.
Reading them the same way is what makes ``engine="lazyh5"`` a drop-in replacement:
xarray's CF decoders expect scalars (an array ``_FillValue`` is unhashable).
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np

from .._warn import warn_user

# Attributes that encode HDF5/netCDF structure rather than user metadata (h5netcdf's
# list: dimension scales and netCDF-C bookkeeping).
HIDDEN_ATTRS = frozenset(
    {
        "CLASS",
        "NAME",
        "DIMENSION_LIST",
        "REFERENCE_LIST",
        "DIMENSION_LABELS",
        "_Netcdf4Dimid",
        "_Netcdf4Coordinates",
        "_nc3_strict",
        "_NCProperties",
    }
)
# Left as bytes by xarray's h5netcdf store: they must keep the variable's type.
_RAW_BYTES = ("_FillValue", "missing_value")


def _value(attrs: h5py.AttributeManager, key: str) -> Any:
    """One attribute as h5netcdf's ``Attributes.__getitem__`` returns it."""
    value = attrs[key]
    dtype = attrs.get_id(key).dtype
    if isinstance(value, h5py.Empty):
        info = h5py.check_string_dtype(value.dtype)
        return b"" if info and info.length == 1 else np.array([], dtype=dtype)
    info = h5py.check_string_dtype(dtype)
    if info is not None:
        # Fixed-length strings are decoded; "S1" char arrays stay bytes (netCDF-C's
        # convention, see Unidata/netcdf4-python#271); string arrays become lists.
        if info.length is not None and info.length > 1:
            if np.isscalar(value):
                value = value.decode(info.encoding, "surrogateescape")
            else:
                value = [b.decode(info.encoding, "surrogateescape") for b in value.flat]
        elif not np.isscalar(value):
            value = value.tolist()
    if not np.isscalar(value) and len(value) == 1:
        return value[0]
    return value


def read_attrs(obj: h5py.HLObject, filename: str) -> dict[str, Any]:
    """The attributes of a group or dataset, as xarray's h5netcdf store reads them.

    An attribute h5py cannot read (an unsupported HDF5 type) is skipped with a
    warning naming it, so the rest of the file still opens.
    """
    attrs: dict[str, Any] = {}
    for key in obj.attrs:
        if key in HIDDEN_ATTRS:
            continue
        try:
            value = _value(obj.attrs, key)
        except (OSError, TypeError, ValueError) as err:
            warn_user(
                f"skipping attribute '{key}' of '{obj.name}' in '{filename}': "
                f"h5py cannot read it ({err})"
            )
            continue
        if key not in _RAW_BYTES and isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                warn_user(
                    f"'utf-8' codec can't decode bytes for attribute {key!r} of "
                    f"'{obj.name}' in '{filename}', returning bytes undecoded.",
                    UnicodeWarning,
                )
        attrs[key] = value
    return attrs
