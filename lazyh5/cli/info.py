"""``lazyh5 info FILE [--json]``: the tree of groups and datasets, from metadata only."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import h5py
import numpy as np

from .. import options
from .._damage import damage_reported
from .._files import check_readable_hdf5, open_h5file
from .._filters import compression_label
from ..backend import dims as dimnames
from ..backend.chunking import chunk_memory, dask_chunks
from ..backend.types import dtype_label, storage_dtype


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show the groups and datasets of an HDF5 file")
    p.add_argument("file", help="HDF5 file")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _attrs(obj: h5py.HLObject) -> dict[str, Any]:
    out = {}
    for key in obj.attrs:
        if key in ("CLASS", "NAME", "DIMENSION_LIST", "REFERENCE_LIST", "_Netcdf4Dimid"):
            continue
        try:
            out[key] = _jsonable(obj.attrs[key])
        except (OSError, TypeError, ValueError):
            out[key] = "<unreadable>"
    return out


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Describe every group and dataset of ``path`` (metadata only, links not followed).

    Examples
    --------
    >>> import h5py, numpy as np
    >>> from lazyh5.cli.info import describe
    >>> with h5py.File("d.h5", "w") as f:
    ...     _ = f.create_dataset("label", data=np.arange(10))
    >>> describe("d.h5")["groups"]["/"]["datasets"]["label"]["shape"]
    [10]
    """
    path = check_readable_hdf5(path)
    groups: dict[str, Any] = {}
    with damage_reported(path), open_h5file(path, "r") as f:
        _describe_file(f, path, groups)
    return {
        "file": path,
        "file_bytes": os.path.getsize(path),
        # What lazyh5.open_dataset's dask chunks follow on this machine (see dask_chunks).
        "memory_budget": options.memory_budget(),
        "threads": options.threads(),
        "groups": groups,
    }


def _describe_file(f: h5py.File, path: str, groups: dict[str, Any]) -> None:
    """Fill ``groups`` with the description of every group of the open file ``f``."""

    def visit(grp: h5py.Group) -> None:
        entry: dict[str, Any] = {"attrs": _attrs(grp), "datasets": {}, "links": {}}
        groups[grp.name] = entry
        shapes, scales, dsets = {}, {}, {}
        for name in grp:
            link = grp.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                entry["links"][name] = f"external link to {link.filename}:{link.path}"
                continue
            obj = grp.get(name)
            if isinstance(obj, h5py.Group):
                continue
            if not isinstance(obj, h5py.Dataset) or obj.shape is None:
                continue
            if dimnames.is_dimension_scale(obj) and not dimnames.scale_name(obj)[1]:
                continue  # a netCDF dimension without values
            dsets[name] = obj
            shapes[name] = obj.shape
            scales[name] = dimnames.scale_dims(obj)
        try:
            named = dimnames.assign_dims(path, shapes, scales, None)
        except ValueError:
            named = {k: tuple(f"{k}_dim_{i}" for i in range(len(s))) for k, s in shapes.items()}
        for name, dset in dsets.items():
            entry["datasets"][name] = {
                "shape": list(dset.shape),
                "dtype": dtype_label(dset),
                "dims": list(named[name]),
                "chunks": list(dset.chunks) if dset.chunks else None,
                "dask_chunks": list(dask_chunks(dset.shape, dset.chunks, storage_dtype(dset)))
                if dset.ndim
                else None,
                "compression": compression_label(dset),
                "logical_bytes": int(dset.size * dset.id.get_type().get_size()),
                "stored_bytes": int(dset.id.get_storage_size()),
                "virtual": bool(dset.is_virtual),
                "attrs": _attrs(dset),
            }
        for name in grp:
            if not isinstance(grp.get(name, getlink=True), h5py.ExternalLink) and isinstance(
                grp.get(name), h5py.Group
            ):
                visit(grp[name])

    visit(f)


def render(info: dict[str, Any]) -> str:
    """The human-readable tree printed by ``lazyh5 info``."""
    lines = [
        f"{info['file']}  ({_human(info['file_bytes'])} on disk)",
        f"dask chunks of lazyh5.open_dataset: up to "
        f"{_human(chunk_memory(info['memory_budget'], info['threads']))} each as float64 "
        f"(memory budget {_human(info['memory_budget'])} shared by {info['threads']} threads; "
        "lazyh5.set_options(memory_budget=...))",
    ]
    for gname, group in info["groups"].items():
        lines.append(f"{gname}")
        for key, value in group["attrs"].items():
            lines.append(f"  @{key} = {value!r}")
        for name, target in group["links"].items():
            lines.append(f"  {name} -> {target}")
        for name, d in group["datasets"].items():
            shape = str(tuple(d["shape"]))
            dims = "(" + ", ".join(d["dims"]) + ")"
            chunks = (
                "contiguous" if d["chunks"] is None else "chunks " + "×".join(map(str, d["chunks"]))
            )
            comp = d["compression"] or "uncompressed"
            lines.append(f"  {name:<16} {d['dtype']:<8} {shape:<20} dims {dims}")
            lines.append(
                f"  {'':<16} {chunks}, {comp}, {_human(d['logical_bytes'])} logical, "
                f"{_human(d['stored_bytes'])} stored" + (", virtual" if d["virtual"] else "")
            )
            if d["dask_chunks"]:
                lines.append(f"  {'':<16} dask chunks " + "×".join(map(str, d["dask_chunks"])))
            for key, value in d["attrs"].items():
                lines.append(f"  {'':<16} @{key} = {value!r}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    info = describe(args.file)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0
