"""``lazyh5 rechunk IN OUT``: copy a file's variables with new HDF5 chunks and compression.

Built on :func:`lazyh5.to_hdf5`: out of core (a few dask blocks in memory whatever the
file size), written under a temporary name and renamed into place when complete, and
resumable after an interruption with ``--resume``. Each variable's new layout is a
:class:`~lazyh5.write.layout.VariableLayout` built by the write path's one rule.
``--for-training`` picks the layout batch feeding wants (see :mod:`lazyh5.feed.layout`):
whole rows along the sample dimension, a power of two of them in 1 MiB (h5py's chunk
cache), lzf.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import h5py
import xarray as xr

from .._files import check_readable_hdf5, open_h5file
from .._filters import compression_label
from ..backend.chunking import row_chunks
from ..errors import (
    AlreadyExistsError,
    DimensionError,
    FileMissingError,
    InvalidArgumentError,
    ObjectNotFoundError,
)
from ..write.layout import VariableLayout, variable_layout

_COMPRESSIONS = ("lzf", "gzip", "gzip:LEVEL", "zstd", "lz4", "blosc", "szip", "none")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rechunk",
        help="copy a file with new HDF5 chunks/compression (out of core, resumable)",
    )
    p.add_argument("input", help="HDF5 file to read")
    p.add_argument("output", help="HDF5 file to write")
    p.add_argument(
        "--for-training",
        action="store_true",
        help="chunks for batch feeding: whole rows along the sample dimension, a power of "
        "two of them per chunk of at most 1 MiB, lzf unless --compression says otherwise",
    )
    p.add_argument(
        "--hdf5-chunks",
        default=None,
        metavar="VAR=ROWS,...",
        help="rows per chunk along the sample dimension for these variables (other axes whole)",
    )
    p.add_argument(
        "--compression",
        default=None,
        metavar="|".join(_COMPRESSIONS[:2] + _COMPRESSIONS[-1:]) + "|...",
        help=f"one of {', '.join(_COMPRESSIONS)} (default: lzf with --for-training, "
        "else each variable keeps its own)",
    )
    p.add_argument("--group", default=None, help="group to copy (default: the root)")
    p.add_argument(
        "--dim", default=None, help="sample dimension (default: 'sample', else the leading one)"
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bar on a terminal (default: on)",
    )
    p.set_defaults(run=run)


def _check_paths(args: argparse.Namespace) -> tuple[str, str]:
    src = check_readable_hdf5(args.input)
    out = os.path.abspath(args.output)
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise FileMissingError(f"cannot write '{args.output}': folder '{folder}' does not exist")
    if os.path.exists(out):
        if os.path.samefile(out, src):
            raise InvalidArgumentError(
                f"cannot rechunk '{args.input}' into itself; choose another OUTPUT file"
            )
        if not args.overwrite:
            raise AlreadyExistsError(
                f"'{args.output}' already exists; pass --overwrite to replace it"
                + (" (a finished run is not resumed)" if args.resume else "")
            )
    return src, out


def _sample_dim(ds: xr.Dataset, dim: str | None, where: str) -> str:
    if dim is not None:
        if dim not in ds.dims:
            raise DimensionError(
                f"no dimension '{dim}' in {where}; dims: {sorted(map(str, ds.dims))}"
            )
        return dim
    if "sample" in ds.dims:
        return "sample"
    arrays = [v for v in ds.data_vars.values() if v.ndim]
    if not arrays:
        raise DimensionError(f"no array variables in {where} to find a sample dimension in")
    biggest = max(arrays, key=lambda v: v.size * v.dtype.itemsize)
    return str(biggest.dims[0])


def _parse_rows(spec: str | None, ds: xr.Dataset, dim: str, where: str) -> dict[str, int]:
    if not spec:
        return {}
    rows = {}
    for item in spec.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or not value.strip().isdigit() or int(value) <= 0:
            raise InvalidArgumentError(
                f"--hdf5-chunks {spec!r}: expected VAR=ROWS,... with positive whole ROWS, "
                f"got {item!r}"
            )
        if name not in ds.variables:
            raise ObjectNotFoundError(
                f"--hdf5-chunks: no variable '{name}' in {where}; available: "
                f"{sorted(map(str, ds.variables))}"
            )
        if dim not in ds[name].dims:
            raise DimensionError(
                f"--hdf5-chunks: '{name}' in {where} has dims {ds[name].dims}, without the "
                f"sample dimension '{dim}'"
            )
        rows[name] = int(value)
    return rows


def _hdf5_chunks(var: xr.Variable, dim: str, for_training: bool, rows: int | None) -> Any:
    """New HDF5 chunks of ``var``; ``"auto"`` keeps the source's."""
    if dim not in var.dims:
        return "auto"
    axis = var.dims.index(dim)
    if rows is not None:
        n = max(1, min(rows, var.shape[axis]))
        return tuple(n if i == axis else max(s, 1) for i, s in enumerate(var.shape))
    if for_training and var.dtype.kind != "O":
        return row_chunks(var.shape, var.dtype, axis, power_of_two=True)
    return "auto"


def _layouts(
    out: str, ds: xr.Dataset, dim: str, args: argparse.Namespace, rows: dict[str, int]
) -> dict[str, VariableLayout]:
    """The new layout of every variable of ``ds``."""
    compression, opts = _compression(args.compression, ds, args.for_training)
    # Keeping a variable's filter keeps its shuffle filter too (gzip+shuffle stays so).
    keep = args.compression is None and not args.for_training
    layouts = {}
    for name, var in ds.variables.items():
        name = str(name)
        layouts[name] = variable_layout(
            out,
            name,
            var.shape,
            var.encoding.get("dtype", var.dtype),  # the stored dtype, as to_hdf5 writes it
            tuple(map(str, var.dims)),
            hdf5_chunks=_hdf5_chunks(var, dim, args.for_training, rows.get(name)),
            compression=compression,
            compression_opts=opts,
            shuffle=keep and bool(var.encoding.get("shuffle")),
            source_chunks=var.encoding.get("chunksizes"),
            action="write",
        )
    return layouts


def _to_hdf5_options(layouts: dict[str, VariableLayout]) -> dict[str, Any]:
    """The :func:`lazyh5.to_hdf5` arguments that give each variable its layout."""
    return dict(
        hdf5_chunks={n: v.chunks for n, v in layouts.items()},
        compression={n: v.filters.get("compression") for n, v in layouts.items()},
        compression_opts={n: v.filters.get("compression_opts") for n, v in layouts.items()},
        shuffle={n: bool(v.filters.get("shuffle")) for n, v in layouts.items()},
    )


def _compression(spec: str | None, ds: xr.Dataset, for_training: bool) -> tuple[Any, Any]:
    """``(compression, compression_opts)`` for :func:`lazyh5.to_hdf5`."""
    if spec is None:
        if for_training:
            return "lzf", None
        comp, opts = {}, {}
        for name, var in ds.variables.items():  # keep each variable's own filter
            enc = var.encoding
            if enc.get("zlib"):
                comp[str(name)], opts[str(name)] = "gzip", enc.get("complevel")
            elif enc.get("compression"):
                comp[str(name)], opts[str(name)] = enc["compression"], enc.get("compression_opts")
            else:
                label = str(enc.get("lazyh5_filters", ""))
                plugin = next((p for p in ("zstd", "lz4", "blosc") if p in label.split("+")), None)
                if plugin:
                    comp[str(name)] = plugin
        return comp, opts
    name, _, level = spec.lower().partition(":")
    if name == "none":
        return None, None
    if name not in {c.split(":")[0] for c in _COMPRESSIONS}:
        raise InvalidArgumentError(
            f"--compression {spec!r}: expected one of {', '.join(_COMPRESSIONS)}"
        )
    if level and not level.isdigit():
        raise InvalidArgumentError(
            f"--compression {spec!r}: the level after ':' must be a whole number"
        )
    return name, (int(level) if level else None)


def _partial_note(tmp: str, resume: bool) -> str | None:
    from ..write.to_hdf5 import _DONE_MARKS

    if not os.path.exists(tmp):
        return "nothing to resume: starting from the beginning" if resume else None
    if not resume:
        return f"an interrupted run left '{tmp}': starting over (--resume continues it)"
    try:
        with open_h5file(tmp, "r") as f:
            masks = [d[()] for d in f[_DONE_MARKS].values()]
        done, total = sum(int(m.sum()) for m in masks), sum(m.size for m in masks)
        return f"resuming '{tmp}': {done} of {total} blocks already written"
    except (OSError, KeyError, ValueError):
        return f"resuming '{tmp}'"


def _describe(dset: h5py.Dataset) -> str:
    layout = "contiguous" if not dset.chunks else "x".join(map(str, dset.chunks))
    return f"{layout}, {compression_label(dset) or 'uncompressed'}"


def run(args: argparse.Namespace) -> int:
    from ..open import open_dataset
    from ..write.to_hdf5 import partial_path, to_hdf5

    src, out = _check_paths(args)
    where = f"'{src}'" + (f" group '{args.group}'" if args.group else "")
    ds = open_dataset(src, group=args.group)
    dim = _sample_dim(ds, args.dim, where)
    layouts = _layouts(out, ds, dim, args, _parse_rows(args.hdf5_chunks, ds, dim, where))
    note = _partial_note(partial_path(out), args.resume)
    if note:
        print(note, flush=True)
    started = time.perf_counter()
    to_hdf5(
        out,
        ds,
        group=args.group,
        mode="w" if args.overwrite else "w-",
        progress=args.progress,
        resume=args.resume,
        **_to_hdf5_options(layouts),
    )
    took = time.perf_counter() - started
    size = sum(v.size * v.dtype.itemsize for v in ds.data_vars.values())
    print(
        f"rechunked {args.input} -> {args.output} (group {args.group or '/'}): "
        f"{len(ds.data_vars)} variables, {size / 2**20:.1f} MiB in {took:.1f} s"
    )
    prefix = f"{args.group.strip('/')}/" if args.group else ""
    with open_h5file(src, "r") as fin, open_h5file(out, "r") as fout:
        rows = []
        for name, var in ds.variables.items():
            path = var.encoding.get("lazyh5_path")
            new = fout.get(prefix + str(name))
            if path is None or not isinstance(new, h5py.Dataset):
                continue
            rows.append((str(name), _describe(fin[path]), _describe(new)))
        subgroups = [k for k, v in fin[args.group or "/"].items() if isinstance(v, h5py.Group)]
    width = max((len(r[0]) for r in rows), default=0)
    left = max((len(r[1]) for r in rows), default=0)
    for name, old, new in rows:
        print(f"  {name:<{width}}  {old:<{left}}  ->  {new}")
    if subgroups:
        print(
            f"note: subgroups {', '.join(sorted(subgroups))} of {where} were not copied "
            "(rechunk them with --group into other files)"
        )
    return 0
