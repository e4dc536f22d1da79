"""What each HDF5 datatype becomes in xarray: a numpy dtype, extra dimensions, or a skip.

HDF5 has more types than numpy and xarray can hold. lazyh5 decides from the HDF5 type
itself (not from h5py's numpy dtype, which h5py cannot even build for some types) so
that one unreadable dataset is skipped, with a warning naming it and its type, while
the rest of the file opens:

- integer, float, complex: h5py's dtype (byte order as stored);
- bitfield (PyTables' bools): the unsigned integer of its size, as h5py reads it;
- enum: its base integer type, the mapping kept in ``encoding["dtype"].metadata["enum"]``
  (where xarray's h5netcdf and netCDF4 backends keep it); h5py's FALSE/TRUE enum: bool;
- string, variable length: ``str`` (object), decoded as h5py's ``asstr()`` does; fixed
  length: bytes, as h5py and h5netcdf give them (xarray decodes ``_Encoding``);
- compound, nested too: a structured dtype in native byte order (HDF5 converts);
- array element ``T[3]``: ``T``, with one more trailing dimension per array axis;
- time, opaque, references, variable-length sequences, floats numpy cannot hold
  (quad precision): skipped with a warning.

Compound members of the skipped kinds (PyTables' ``Time64Col`` is an ``H5T_TIME``) are
left out of the variable, with a warning naming them; the other members are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np
from h5py import h5t
from xarray.coding.strings import create_vlen_dtype

from .._warn import warn_user
from ..errors import UnsupportedDtypeError

__all__ = [
    "VariableType",
    "describe",
    "dtype_label",
    "readable_types",
    "storage_dtype",
    "variable_type",
]


@dataclass(frozen=True)
class VariableType:
    """How one HDF5 dataset is presented as an xarray variable.

    Attributes
    ----------
    dtype
        The variable's dtype.
    element_shape
        Trailing dimensions from an HDF5 array element type (``()`` otherwise).
    strings
        Variable-length strings, decoded to ``str`` on read.
    read_dtype
        The dtype HDF5 converts the values to on read (compounds stored in another byte
        order), including the element shape; ``None`` when values are read as stored.
    encoding
        Entries for the variable's ``encoding``: its ``dtype`` (with an enum's mapping).
    left_out
        Compound members not read, as ``(member path, HDF5 type)``.
    """

    dtype: np.dtype
    element_shape: tuple[int, ...] = ()
    strings: bool = False
    read_dtype: np.dtype | None = None
    encoding: Mapping[str, Any] = field(default_factory=dict)
    left_out: tuple[tuple[str, str], ...] = ()


# Type classes skipped: h5py has no dtype for time; references, ragged sequences and
# opaque blobs come back as Python objects or raw void bytes, not values to compute with.
_NEVER_READ = frozenset({h5t.TIME, h5t.OPAQUE, h5t.REFERENCE, h5t.VLEN})


def describe(tid: h5t.TypeID) -> str:
    """A short description of an HDF5 type for messages, e.g. ``"128-bit float"``."""
    cls = tid.get_class()
    size = tid.get_size()
    if cls == h5t.TIME:
        return f"H5T_TIME ({8 * size}-bit time)"
    if cls == h5t.FLOAT:
        return f"{8 * size}-bit float (precision {tid.get_precision()} bits)"
    if cls == h5t.INTEGER:
        return f"{8 * size}-bit integer"
    if cls == h5t.OPAQUE:
        tag = tid.get_tag().decode("utf-8", "replace")
        return f"opaque ({size} bytes{f', tag {tag!r}' if tag else ''})"
    if cls == h5t.REFERENCE:
        if tid.equal(h5t.STD_REF_DSETREG):
            return "region reference"
        return "object reference" if tid.equal(h5t.STD_REF_OBJ) else "reference"
    if cls == h5t.VLEN:  # variable-length strings are of the string class
        return f"variable-length sequence of {describe(tid.get_super())}"
    if cls == h5t.ARRAY:
        return f"array {tid.get_array_dims()} of {describe(tid.get_super())}"
    if cls == h5t.STRING:
        return "variable-length string" if tid.is_variable_str() else f"{size}-byte string"
    if cls == h5t.COMPOUND:
        return f"compound of {tid.get_nmembers()} members"
    if cls == h5t.ENUM:
        return f"enum of {describe(tid.get_super())}"
    if cls == h5t.BITFIELD:
        return f"{8 * size}-bit bitfield"
    return f"HDF5 type class {cls}"


def _unreadable(tid: h5t.TypeID, member: str = "") -> list[tuple[str, str]]:
    """The parts of ``tid`` that cannot be presented, as ``(member, HDF5 type)``.

    ``member`` is ``""`` for the whole type; compound members are reported by their
    path (``"nested/t"``), so the rest of a compound can still be read.
    """
    cls = tid.get_class()
    if cls in _NEVER_READ:
        return [(member, describe(tid))]
    if cls == h5t.COMPOUND:
        found = []
        for i in range(tid.get_nmembers()):
            name = tid.get_member_name(i).decode("utf-8", "replace")
            found += _unreadable(tid.get_member_type(i), f"{member}/{name}" if member else name)
        return found
    if cls == h5t.ARRAY:
        inner = _unreadable(tid.get_super(), member)
        return [(member, describe(tid))] if inner else []
    if cls in (h5t.FLOAT, h5t.INTEGER, h5t.BITFIELD, h5t.ENUM):
        try:
            tid.dtype  # noqa: B018  h5py refuses what numpy cannot hold (quad floats)
        except (TypeError, ValueError):
            return [(member, f"{describe(tid)} that numpy cannot hold")]
    return []


def _native(tid: h5t.TypeID, skip: set[str], member: str = "") -> np.dtype | None:
    """The dtype to read ``tid`` into: native byte order, members in ``skip`` left out;
    ``None`` when nothing of it is left. HDF5 converts compounds member by member,
    matched by name, so this layout need not be the file's."""
    if member in skip:
        return None
    cls = tid.get_class()
    if cls == h5t.ARRAY:
        base = _native(tid.get_super(), skip, member)
        return None if base is None else np.dtype((base, tuple(tid.get_array_dims())))
    if cls != h5t.COMPOUND or not any(m.startswith(f"{member}/") or not member for m in skip):
        return tid.dtype.newbyteorder("=")  # h5py's (complex numbers are compounds in HDF5)
    fields = []
    for i in range(tid.get_nmembers()):
        name = tid.get_member_name(i).decode("utf-8", "replace")
        sub = _native(tid.get_member_type(i), skip, f"{member}/{name}" if member else name)
        if sub is not None:
            fields.append((name, sub))
    return np.dtype(fields) if fields else None


def _enum_encoding(dtype: np.dtype) -> dict[str, Any]:
    mapping = h5py.check_enum_dtype(dtype)
    if mapping is None:  # h5py's FALSE/TRUE enum, read as bool
        return {"dtype": dtype}
    return {"dtype": np.dtype(dtype.str, metadata={"enum": dict(mapping)})}


def variable_type(dset: h5py.Dataset, filename: str, path: str) -> VariableType:
    """How dataset ``path`` of ``filename`` becomes a variable.

    Raises
    ------
    UnsupportedDtypeError
        The dataset's type (or every member of its compound type) has no numpy or
        xarray counterpart; the message names the file, the dataset and the HDF5 type.
    """
    tid = dset.id.get_type()
    element: tuple[int, ...] = ()
    if tid.get_class() == h5t.ARRAY:
        element = tuple(tid.get_array_dims())
        tid = tid.get_super()
    bad = _unreadable(tid)
    if bad and (bad[0][0] == "" or _native(tid, {m for m, _ in bad}) is None):
        label = "; ".join(f"{t} (member '{m}')" if m else t for m, t in bad)
        label = f"array {element} of {label}" if element else label
        raise UnsupportedDtypeError(
            f"dataset '{path}' in '{filename}' has the HDF5 type {label}, "
            "which lazyh5 does not read; the file's other datasets are read"
        )
    if bad:  # a compound with some members lazyh5 cannot read: read the others
        native = _native(tid, {m for m, _ in bad})
        return VariableType(
            native,
            element,
            read_dtype=np.dtype((native, element)) if element else native,
            encoding={"dtype": native},
            left_out=tuple(bad),
        )
    dtype = tid.dtype
    info = h5py.check_string_dtype(dtype)
    if info is not None and info.length is None:
        # As h5netcdf: variable-length strings are decoded (encoding dtype ``str``);
        # fixed-length ones stay bytes for xarray's CF decoders (``_Encoding``, chars).
        return VariableType(create_vlen_dtype(str), element, strings=True, encoding={"dtype": str})
    if tid.get_class() == h5t.ENUM:
        return VariableType(np.dtype(dtype.str), element, encoding=_enum_encoding(dtype))
    if dtype.names is None:
        return VariableType(dtype, element, encoding={"dtype": dtype})
    native = dtype.newbyteorder("=")  # keeps h5py's layout (offsets, itemsize)
    converted = native != dtype
    read_dtype = (np.dtype((native, element)) if element else native) if converted else None
    return VariableType(native, element, read_dtype=read_dtype, encoding={"dtype": native})


def dtype_label(dset: h5py.Dataset) -> str:
    """h5py's dtype of ``dset`` as text; the HDF5 type's description where h5py has none
    (``lazyh5 info`` lists every dataset, read or not)."""
    try:
        return str(dset.dtype)
    except (TypeError, ValueError):
        return f"{describe(dset.id.get_type())} (no numpy dtype)"


def storage_dtype(dset: h5py.Dataset) -> np.dtype:
    """h5py's dtype of ``dset``; raw bytes of the HDF5 type's size where h5py has none."""
    try:
        return dset.dtype
    except (TypeError, ValueError):
        return np.dtype(f"V{dset.id.get_type().get_size()}")


def readable_types(
    filename: str, datasets: Mapping[str, h5py.Dataset], prefix: str = ""
) -> dict[str, VariableType]:
    """The :class:`VariableType` of each dataset lazyh5 can read, by name.

    Each of the others is left out with a ``UserWarning`` naming the file, the dataset
    and its HDF5 type.
    """
    found: dict[str, VariableType] = {}
    for name, dset in datasets.items():
        path = f"{prefix}/{name}"
        try:
            found[name] = kind = variable_type(dset, filename, path)
        except UnsupportedDtypeError as err:
            warn_user(f"skipping: {err}")
            continue
        for member, label in kind.left_out:
            warn_user(
                f"leaving out member '{member}' of dataset '{path}' in '{filename}': it "
                f"has the HDF5 type {label}, which lazyh5 does not read; the dataset's "
                "other members are read"
            )
    return found
