"""The loader's arguments: their checks, the structure of a batch they ask for, and the
warning about recomputed dask chunks."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from .._warn import warn_user
from ..errors import (
    DimensionError,
    InvalidArgumentError,
    InvalidIndexError,
    ObjectNotFoundError,
    UnsupportedDtypeError,
)
from .plan import BlockPlan

Names = str | Sequence[str] | Mapping[str, str] | None


def flat(names: Names) -> list[str]:
    """The variable names of an ``x``/``y`` argument."""
    if names is None:
        return []
    if isinstance(names, str):
        return [names]
    if isinstance(names, Mapping):
        return list(names.values())
    return list(names)


def _pack(arrays: dict[str, np.ndarray], names: Names) -> Any:
    if isinstance(names, str):
        return arrays[names]
    if isinstance(names, Mapping):
        return {key: arrays[var] for key, var in names.items()}
    return tuple(arrays[n] for n in names)


def pack(arrays: dict[str, np.ndarray], x: Names, y: Names, sample_weight: str | None) -> Any:
    """A batch as the loader's ``x``, ``y``, ``sample_weight`` ask: ``x``, ``(x, y)`` or
    ``(x, y, w)``, each an array, a tuple or a dict of arrays."""
    xs = _pack(arrays, x)
    if y is None and sample_weight is None:
        return xs
    ys = None if y is None else _pack(arrays, y)
    if sample_weight is None:
        return xs, ys
    return xs, ys, arrays[sample_weight]


def check_variables(
    ds: xr.Dataset, groups: Sequence[Names], dim: Hashable, where: str
) -> list[str]:
    """The fed variables, each checked: present, with ``dim``, numeric."""
    names: list[str] = []
    for group in groups:
        # Iterating an array to find its names would read it row by row.
        if not isinstance(group, str) and (hasattr(group, "__array__") or hasattr(group, "dims")):
            named = getattr(group, "name", None)
            raise InvalidArgumentError(
                f"cannot feed {where}: x, y and sample_weight take variable names (a name, "
                f"a list or a dict of names), not arrays; got a {type(group).__name__}"
                + (f" (pass its name, {named!r})" if named is not None else "")
            )
        for name in flat(group):
            if not isinstance(name, str) and (
                not isinstance(name, Hashable) or hasattr(name, "__array__")
            ):
                raise InvalidArgumentError(
                    f"cannot feed {where}: variable names must be strings, got {name!r:.80}"
                )
            if name not in names:
                names.append(name)
    if dim not in ds.dims:
        raise DimensionError(
            f"dimension '{dim}' is not in {where} (dims: {list(ds.dims)}); "
            "pass dim= or name it with lazyh5.open_dataset(..., dims=...)"
        )
    for name in names:
        if name not in ds.variables:
            raise ObjectNotFoundError(
                f"no variable '{name}' in {where}; available: "
                f"{sorted(map(str, ds.data_vars))} (datasets lazyh5 cannot read, "
                "such as variable-length numeric ones, are skipped with a warning when "
                "the file is opened)"
            )
        var = ds[name]
        if var.ndim == 0 or dim not in var.dims:
            raise DimensionError(
                f"variable '{name}' in {where} has dims {var.dims}; every variable "
                f"fed to BatchLoader needs the sample dimension '{dim}'"
            )
        if var.dtype.kind not in "biufc":
            raise UnsupportedDtypeError(
                f"variable '{name}' in {where} has dtype {var.dtype}; BatchLoader "
                "feeds numeric and bool data (encode strings as integers first)"
            )
    return names


def check_batch_size(batch_size: Any, where: str) -> int:
    """``batch_size`` checked: a positive integer."""
    if not isinstance(batch_size, int | np.integer) or batch_size <= 0:
        raise InvalidArgumentError(
            f"cannot feed {where}: batch_size must be a positive integer, got {batch_size!r}"
        )
    return int(batch_size)


def check_range(
    start: int | None, end: int | None, n: int, dim: Hashable, where: str
) -> tuple[int, int]:
    """``[start, end)`` checked against ``n`` rows."""
    s = 0 if start is None else int(start)
    e = n if end is None else int(end)
    if not (0 <= s <= n and 0 <= e <= n):
        raise InvalidIndexError(
            f"start={start}, end={end} out of range for {n} rows along '{dim}' "
            f"in {where}; expected 0 <= start <= end <= {n}"
        )
    if e <= s:
        raise InvalidArgumentError(
            f"no rows to feed from {where}: start={s}, end={e} along '{dim}' "
            f"(of {n} rows); expected at least one row (start < end)"
        )
    return s, e


def warn_if_blocks_recompute_chunks(
    arrays: dict[str, Any], direct: dict[str, Any], plan: BlockPlan, dim: Hashable, where: str
) -> None:
    """Warn when a computed variable's dask chunks hold several blocks.

    dask does not push a block's row slice through a transform
    (``(ds.image * 2)[a:b]`` computes the whole dask chunk, then slices), so every
    block would compute its whole chunk, many times the rows it needs.
    """
    for name, arr in arrays.items():
        if direct[name] is not None or not isinstance(arr, da.Array):
            continue
        edges = np.concatenate([[0], np.cumsum(arr.chunks[0])])
        first = np.searchsorted(edges, plan.starts, side="right") - 1
        last = np.searchsorted(edges, plan.stops, side="left")
        computed = (edges[last] - edges[first]).sum()
        factor = computed / max(plan.rows, 1)
        if factor > 1.5:
            rows = int(plan.sizes.max())
            warn_user(
                f"'{name}' in {where} is computed by dask in chunks of up to "
                f"{max(arr.chunks[0])} rows along '{dim}', but BatchLoader reads "
                f"blocks of {rows} rows: each block computes its whole chunk, "
                f"{factor:.1f}x the rows it needs (dask does not slice before a "
                "transform). Open the file with dask chunks no bigger than a block "
                "before transforming (lazyh5.open_dataset's default chunks are; "
                f"or pass chunks={{'{dim}': {rows}}}), or pass BatchLoader a "
                "block_size as large as the dask chunks.",
            )
