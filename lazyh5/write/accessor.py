"""The ``.h5`` accessor: write-through assignment into the HDF5 file behind a view::

ds["label"].h5[10:20] = np.arange(10.0)
ds.isel(sample=slice(100, 200))["label"].h5[0:5] = 1  # rows 100..104 of the file
"""

from __future__ import annotations

import html
from collections.abc import Hashable, Mapping
from typing import Any

import xarray as xr

from .._files import source_label
from ..backend.view import label_key, target_of
from ..errors import InvalidIndexError, ObjectNotFoundError
from .assign import assign, checked_value

__all__ = ["H5DataArrayAccessor", "H5DatasetAccessor"]


@xr.register_dataarray_accessor("h5")
class H5DataArrayAccessor:
    """Write into the HDF5 dataset a lazyh5 variable (or a view of it) reads from.

    ``da.h5[key] = value`` writes ``value`` (numpy broadcasting, ``same_kind``
    casting) at positions ``key`` of the view: ints, slices (any step), 1-D integer
    or boolean arrays per axis (orthogonal, like ``DataArray[...]``), or a
    ``{dim: key}`` mapping. ``da.h5.loc[...]`` takes coordinate labels instead.
    Positions of a view (``isel``/``sel``) map back to the rows of the file.

    The value may be a numpy array, a scalar, or a lazy dask/xarray expression
    (even of the same variable); lazy values are computed and written block by
    block with bounded memory. The file must be open with ``mode="r+"``.

    Examples
    --------
    >>> import numpy as np, lazyh5
    >>> ds = lazyh5.create("acc.h5", {"label": ((100,), "f8")})
    >>> ds["label"].h5[10:20] = np.arange(10.0)
    >>> ds.isel(sample=slice(50, 60))["label"].h5[0] = 7.0  # row 50 of the file
    >>> float(ds["label"][50]), float(ds["label"][12])
    (7.0, 2.0)
    """

    def __init__(self, obj: xr.DataArray):
        self._obj = obj

    def __repr__(self) -> str:
        return _text([_row(self._obj.name, self._obj)])

    def _repr_html_(self) -> str:
        return _html([_row(self._obj.name, self._obj)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self.assign(key, value)

    def assign(self, key: Any, value: Any, *, progress: bool = True) -> None:
        """Write ``value`` at positions ``key`` (as ``self[key] = value``).

        Parameters
        ----------
        key
            Positional key on the view (see the class docstring).
        value
            Scalar, numpy array, or lazy dask / xarray expression.
        progress
            Show a progress bar for lazy values (only when stderr is a terminal).
        """
        target = target_of(self._obj).select(key)
        assign(target, value, progress=progress)

    @property
    def loc(self) -> _LocIndexer:
        """Label-based assignment: ``da.h5.loc[{"sample": 7}] = value``."""
        return _LocIndexer(self._obj)


class _LocIndexer:
    def __init__(self, obj: xr.DataArray):
        self._obj = obj

    def __setitem__(self, key: Any, value: Any) -> None:
        self.assign(key, value)

    def assign(self, key: Any, value: Any, *, progress: bool = True) -> None:
        obj = self._obj
        if not isinstance(key, Mapping):
            key = key if isinstance(key, tuple) else (key,)
            if len(key) > obj.ndim:
                raise InvalidIndexError(f"too many labels {key} for dims {obj.dims}")
            key = dict(zip(obj.dims, key, strict=False))
        target = target_of(obj)
        positions = label_key(obj, key, target.label)
        assign(target.select(positions), value, progress=progress)


@xr.register_dataset_accessor("h5")
class H5DatasetAccessor:
    """Write several variables of a lazyh5 Dataset at once.

    ``ds.h5[{"sample": slice(0, 10)}] = {"image": img, "label": 3}`` writes each
    value into its variable at that (dimension-named) selection; variables that
    lack a named dimension ignore it. All are validated before any is written.

    Examples
    --------
    >>> import lazyh5
    >>> ds = lazyh5.create("dsacc.h5", {"a": ((10,), "f4"), "b": ((10,), "i4")})
    >>> ds.h5[{"sample": slice(0, 3)}] = {"a": 1.5, "b": 2}
    >>> ds["b"].values[:4].tolist()
    [2, 2, 2, 0]
    """

    def __init__(self, obj: xr.Dataset):
        self._obj = obj

    def __repr__(self) -> str:
        return _text([_row(n, v) for n, v in self._obj.variables.items() if _from_file(v)])

    def _repr_html_(self) -> str:
        return _html([_row(n, v) for n, v in self._obj.variables.items() if _from_file(v)])

    def __setitem__(self, key: Mapping[Hashable, Any], values: Mapping[Hashable, Any]) -> None:
        self.assign(key, values)

    def assign(
        self,
        key: Mapping[Hashable, Any],
        values: Mapping[Hashable, Any],
        *,
        progress: bool = True,
    ) -> None:
        """Write ``values[name]`` into each variable at the ``{dim: key}`` selection."""
        if not isinstance(key, Mapping):
            raise TypeError("ds.h5[...] takes a {dim: key} mapping; use ds[name].h5[...]")
        writes = []
        for name, value in values.items():
            if name not in self._obj.variables:
                raise ObjectNotFoundError(
                    f"cannot write to {source_label(self._obj.variables)}: no variable "
                    f"'{name}'; expected one of {sorted(map(str, self._obj.data_vars))}"
                )
            var = self._obj[name]
            sub = {d: k for d, k in key.items() if d in var.dims}
            target = target_of(var).select(sub)
            checked_value(value, target)  # validate all before writing any
            writes.append((target, value))
        for target, value in writes:
            assign(target, value, progress=progress)


# -- reprs: where each variable lives in its file, and how it is stored -----------------
_COLUMNS = ("variable", "file", "dataset", "dims", "dask chunks", "HDF5 storage")


def _from_file(var: xr.Variable | xr.DataArray) -> bool:
    return "lazyh5_path" in var.encoding


def _row(name: Hashable, var: xr.Variable | xr.DataArray) -> tuple[str, ...]:
    enc = var.encoding
    chunks = getattr(var, "chunksizes", None) or {}
    dask_chunks = ", ".join(f"{d}: {max(c)}" for d, c in chunks.items()) or "in memory"
    return (
        str(name),
        str(enc.get("source", "-")),
        str(enc.get("lazyh5_path", "not from a file")),
        ", ".join(f"{d}: {n}" for d, n in var.sizes.items()),
        dask_chunks,
        str(enc.get("lazyh5_storage", "-")) if _from_file(var) else "-",
    )


def _text(rows: list[tuple[str, ...]]) -> str:
    lines = ["<lazyh5 HDF5 storage>"]
    for name, source, path, dims, chunks, storage in rows:
        lines.append(f"  {name}: '{source}' {path} ({dims})")
        lines.append(f"      {storage}; dask chunks {chunks}")
    return "\n".join(lines if rows else [*lines, "  (no variables read from an HDF5 file)"])


def _html(rows: list[tuple[str, ...]]) -> str:
    cells = "".join(f"<th>{c}</th>" for c in _COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"
