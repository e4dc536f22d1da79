"""BlockPlan: which rows each block holds, aligned to the file's HDF5 chunks."""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass

import dask.array as da
import numpy as np
import xarray as xr

from ..backend.positions import Untraceable, view_positions
from ..backend.view import h5_sources
from ..errors import InvalidArgumentError
from ..options import computes_here
from .elementwise import Mapped


@dataclass(frozen=True)
class BlockPlan:
    """Blocks of consecutive rows ``[starts[i], stops[i])`` along one dimension.

    Block edges fall on HDF5 chunk edges of the feed's variables (where the rows map to
    file rows), so every HDF5 chunk is decoded by exactly one block.
    """

    starts: np.ndarray
    stops: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def rows(self) -> int:
        return int(self.stops[-1] - self.starts[0])

    @property
    def sizes(self) -> np.ndarray:
        return self.stops - self.starts


def chunk_rows(var: xr.DataArray, dim: Hashable) -> int:
    """Rows per HDF5 chunk along ``dim`` (1 for contiguous or computed variables)."""
    chunks = var.encoding.get("chunksizes")
    axis = file_axis(var, dim)
    return int(chunks[axis]) if chunks and axis is not None else 1


def file_axis(var: xr.DataArray, dim: Hashable) -> int | None:
    """The axis of ``var``'s HDF5 dataset that ``dim`` runs along, ``None`` if none.

    By name, unless ``var``'s dimensions are not the file's (renamed, after an axis
    was dropped or not): then by position among the file axes a traced view keeps
    (``ds.isel(sample=3).rename(x_dim_1="sample")`` runs along the file's axis 1).
    """
    dims = tuple(var.encoding.get("lazyh5_dims") or ())
    if var.dims != dims and dim in var.dims:
        kept = _kept_file_axes(var)
        if kept is not None and len(kept) == var.ndim:
            return kept[var.dims.index(dim)]
    return dims.index(dim) if dim in dims else None


def _kept_file_axes(var: xr.DataArray) -> list[int] | None:
    """The file axes a view of one dataset keeps, in order (a dask graph that only
    indexes keeps their order); ``None`` when it cannot be traced."""
    sources = h5_sources(var.variable._data)
    if not isinstance(var.data, da.Array) or len(sources) != 1:
        return None
    try:
        axes = view_positions(var.variable._data, sources[0])
    except Untraceable:
        return None
    return [i for i, positions in enumerate(axes) if not isinstance(positions, int)]


def _file_offset(var: xr.DataArray, dim: Hashable) -> int:
    """File row of the view's first row along ``dim`` (0 when it cannot be traced)."""
    axis = file_axis(var, dim)
    sources = h5_sources(var.variable._data)
    if axis is None or len(sources) != 1 or not var.sizes.get(dim):
        return 0
    try:
        positions = view_positions(var.variable._data, sources[0])[axis]
    except Untraceable:
        return 0
    return 0 if isinstance(positions, int) else int(positions[0])


def plan_blocks(
    ds: xr.Dataset,
    names: list[Hashable],
    dim: Hashable,
    start: int,
    end: int,
    block_bytes: int,
    mapped: dict[Hashable, Mapped] | None = None,
) -> BlockPlan:
    """Blocks over rows ``[start, end)`` of about ``block_bytes`` (all variables together);
    ``mapped``: the variables fed as functions of a plain view (see
    :mod:`lazyh5.feed.elementwise`), whose blocks follow that view's chunks.
    Needs ``start < end`` (the loader refuses an empty range)."""
    row_bytes = sum(
        max(1, int(np.prod([n for d, n in ds[v].sizes.items() if d != dim]))) * ds[v].dtype.itemsize
        for v in names
    )
    # Align to the chunks of the heaviest variable: re-reading part of a small variable's
    # chunk (labels) costs little, splitting an image chunk costs a whole decode.
    heaviest = max(names, key=lambda v: ds[v].size * ds[v].dtype.itemsize)
    block_rows = max(1, block_bytes // max(row_bytes, 1))
    var = ds[heaviest]
    found = (mapped or {}).get(heaviest)
    if found is not None and computes_here():
        # Read from the view's rows (see lazyh5.feed.elementwise): its chunks are the file's.
        unit = chunk_rows(found.base, dim)
        offset = found.source.key[found.source.row_axis].start
    elif "lazyh5_path" not in var.encoding and isinstance(var.data, da.Array):
        # Computed by dask: a block must not cut a dask chunk (dask computes the whole
        # chunk for any slice of it), so blocks are runs of whole chunks, or equal parts
        # of one chunk bigger than a block (then BatchLoader warns).
        sizes = var.data.chunks[var.dims.index(dim)]
        return _blocks_of_chunks(sizes, start, end, block_rows)
    else:
        unit, offset = chunk_rows(var, dim), _file_offset(var, dim)
    per_block = max(unit, block_rows // unit * unit)
    # Edges at file rows that are multiples of `per_block` (so also of the chunk size).
    first_edge = ((offset + start) // per_block + 1) * per_block - offset
    # first_edge > start always: the first edge past the start
    edges = np.arange(first_edge, end, per_block, dtype=np.int64)
    bounds = np.concatenate([[start], edges, [end]]).astype(np.int64)
    return BlockPlan(bounds[:-1], bounds[1:])


def _blocks_of_chunks(sizes: tuple[int, ...], start: int, end: int, block_rows: int) -> BlockPlan:
    """Blocks over ``[start, end)`` that group whole dask chunks up to ``block_rows``
    rows, and split a bigger chunk into equal parts."""
    edges = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    bounds = [start]
    for lo, hi in itertools.pairwise(edges.tolist()):
        lo, hi = max(int(lo), start), min(int(hi), end)
        if hi <= lo:
            continue
        if hi - lo > block_rows:  # one chunk, several blocks
            parts = -(-(hi - lo) // block_rows)
            cuts = lo + (np.arange(1, parts) * (hi - lo)) // parts
            if bounds[-1] != lo:
                bounds.append(lo)
            bounds.extend(int(c) for c in cuts)
            bounds.append(hi)
        elif hi - bounds[-1] > block_rows:  # start a new block at this chunk
            bounds.append(lo)
    if bounds[-1] != end:
        bounds.append(end)
    b = np.asarray(bounds, np.int64)
    return BlockPlan(b[:-1], b[1:])


def split_rows(start: int, end: int, fraction: float, unit: int) -> int:
    """Row where ``fraction`` of ``[start, end)`` ends, rounded to a chunk edge if close."""
    if not 0 < fraction < 1:
        raise InvalidArgumentError(f"split fraction must be between 0 and 1, got {fraction}")
    cut = start + round((end - start) * fraction)
    aligned = round(cut / unit) * unit  # cut itself when unit is 1
    if start < aligned < end and abs(aligned - cut) <= 0.01 * (end - start):
        cut = aligned
    return cut
