"""What the file says about one fed variable: shape, chunks, filters, chunk cache, sizes.

Read from metadata only; :func:`open_fed` also checks that the variables exist and share
the sample dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import h5py
import xarray as xr

from .._files import check_readable_hdf5
from .._filters import compression_label, filter_pipeline
from ..backend.chunking import row_chunks
from ..errors import DimensionError, ObjectNotFoundError
from ..feed.layout import H5PY_CHUNK_CACHE_BYTES, row_bytes, splits_rows
from ..open import open_dataset

# A prefix of about this many bytes (all fed variables) is measured on big files: the
# warm-up reads it once, and a few seconds per method cover it at least once.
PREFIX_BYTES = 256 << 20


@dataclass
class FedVariable:
    """What the file says about one fed variable (from metadata only)."""

    name: str
    path: str
    shape: list[int]
    dtype: str
    axis: int
    chunks: list[int] | None
    compression: str | None
    filters: list[str]
    row_bytes: int
    rows_per_chunk: int | None
    chunk_bytes: int | None
    splits_rows: int
    chunk_cache_bytes: int
    logical_bytes: int
    stored_bytes: int
    recommended_chunks: list[int] | None


def human(n: float) -> str:
    """A byte count in B, KiB, MiB or GiB.

    Examples
    --------
    >>> human(512), human(3 << 20)
    ('512 B', '3.0 MiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def open_fed(
    file: str, x: str, y: str | None, group: str | None, dim: str | None
) -> tuple[xr.Dataset, str, list[str]]:
    """The lazily opened dataset, the sample dimension and the fed variables, checked."""
    path = check_readable_hdf5(file)
    ds = open_dataset(path, group=group)
    where = f"'{path}'" + (f" group '{group}'" if group else "")
    names = [x] + ([y] if y and y != x else [])
    for name in names:
        if name not in ds.variables or "lazyh5_path" not in ds[name].encoding:
            raise ObjectNotFoundError(
                f"no dataset '{name}' in {where}; available: {sorted(map(str, ds.data_vars))}"
            )
    var = ds[x]
    dim = dim or ("sample" if "sample" in var.dims else (var.dims[0] if var.dims else None))
    for name in names:
        if dim is None or dim not in ds[name].dims:
            raise DimensionError(
                f"'{name}' in {where} has dims {ds[name].dims}, without the sample dimension "
                f"'{dim}'; pass --dim, or --x/--y variables that share it"
            )
    return ds, str(dim), names


def describe(f: h5py.File, ds: xr.Dataset, name: str, dim: str) -> FedVariable:
    """The :class:`FedVariable` of ``ds[name]``, read from the open file ``f``."""
    var = ds[name]
    dset = f[var.encoding["lazyh5_path"]]
    axis = var.dims.index(dim)
    shape = tuple(int(n) for n in dset.shape)
    chunks = list(dset.chunks) if dset.chunks else None
    try:
        cache = int(dset.id.get_access_plist().get_chunk_cache()[1])
    except (AttributeError, OSError):
        cache = H5PY_CHUNK_CACHE_BYTES
    recommended = row_chunks(shape, dset.dtype, axis, power_of_two=True)
    return FedVariable(
        name=name,
        path=dset.name,
        shape=list(shape),
        dtype=str(dset.dtype),
        axis=axis,
        chunks=chunks,
        compression=compression_label(dset),
        filters=[label for _code, label, _values in filter_pipeline(dset)],
        row_bytes=row_bytes(shape, dset.dtype, axis),
        rows_per_chunk=chunks[axis] if chunks else None,
        chunk_bytes=math.prod(chunks) * dset.dtype.itemsize if chunks else None,
        splits_rows=splits_rows(chunks, shape, axis),
        chunk_cache_bytes=cache,
        logical_bytes=int(dset.size * dset.dtype.itemsize),
        stored_bytes=int(dset.id.get_storage_size()),
        recommended_chunks=list(recommended) if recommended else None,
    )


def prefix_rows(n: int, fed: list[FedVariable], max_samples: int | None) -> int:
    """Rows measured: the first ``max_samples``, or about :data:`PREFIX_BYTES` worth."""
    if max_samples is not None:
        return min(n, max_samples)
    rows = PREFIX_BYTES // sum(v.row_bytes for v in fed)
    unit = fed[0].rows_per_chunk or 1
    if rows >= unit:
        rows = rows // unit * unit  # whole chunks of x
    return max(1, min(n, max(rows, unit)))
