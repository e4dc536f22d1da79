"""The store: one HDF5 file (by path), its lock, and its datasets as xarray variables."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import pandas as pd
import xarray as xr
from dask.utils import format_bytes
from xarray import conventions
from xarray.backends import CachingFileManager
from xarray.backends.locks import (
    HDF5_LOCK,
    DummyLock,
    acquire,
    combine_locks,
    ensure_lock,
    get_write_lock,
)
from xarray.core.indexes import PandasIndex

from .._files import open_h5file
from .._filters import compression_label
from ..errors import FileBusyError, ObjectNotFoundError
from . import dims as dimnames
from .array import H5BackendArray
from .security import check_dataset, check_link
from .types import VariableType, readable_types

# Attributes that encode HDF5/netCDF structure rather than user metadata.
_HIDDEN_ATTRS = {
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


def _is_cluster_lock(lock: Any) -> bool:
    if "distributed" not in sys.modules:
        return False
    from distributed import Lock

    return isinstance(lock, Lock)


# Per thread: {filename: [depth, {id(manager): manager}]} of the ClusterFileLocks held.
_HELD = threading.local()
# Seconds a cluster-locked open waits for other processes' handles to close.
CLUSTER_BUSY_WAIT = 5.0


class ClusterFileLock:
    """The lock of one HDF5 file opened writable (``mode="r+"``) on a dask.distributed cluster.

    HDF5 keeps a per-process cache of a file's metadata and takes an exclusive OS lock
    on a file opened for writing, so a writable file may be open in one process at a
    time, and a process that opens it must not trust what it cached before another
    process wrote. This lock makes that so for every process of the cluster (the
    client and the workers) and every access (reads included):

    - acquiring takes the ``distributed.Lock`` named by the file's path (cluster-wide,
      first) and then the process-local locks (``HDF5_LOCK``);
    - the file is opened inside the lock, on first use (``H5Store.acquire``);
    - releasing flushes and **closes** the file, then releases the locks, so the next
      holder, in any process, opens it afresh and sees everything written before.

    It is re-entrant within one thread (the file is closed when the outermost hold
    ends), so opening a dataset can hold it across all of its metadata reads.

    Parameters
    ----------
    lock
        The locks to take: a ``CombinedLock`` of ``HDF5_LOCK`` and
        ``distributed.Lock(path)``, or any lock that contains a ``distributed.Lock``.
    manager
        The file manager whose file is closed on release.
    key
        What identifies the file for re-entrancy (its absolute path).
    """

    def __init__(self, lock: Any, manager: CachingFileManager, key: str):
        locks = list(getattr(lock, "locks", (lock,)))
        self.lock = lock
        self.cluster_locks = sorted(
            (lk for lk in locks if _is_cluster_lock(lk)), key=lambda lk: lk.name
        )
        local = [lk for lk in locks if not _is_cluster_lock(lk)]
        self.local_lock = combine_locks(local) if local else DummyLock()
        self.manager = manager
        self.key = key

    @staticmethod
    def _held() -> dict[str, list[Any]]:
        held = getattr(_HELD, "files", None)
        if held is None:
            held = _HELD.files = {}
        return held

    def acquire(self, blocking: bool = True) -> bool:
        """Take the cluster-wide lock, then the local ones (no-op when this thread holds it)."""
        held = self._held()
        entry = held.get(self.key)
        if entry is not None:
            entry[0] += 1
            entry[1][id(self.manager)] = self.manager
            return True
        taken = []
        for lk in [*self.cluster_locks, self.local_lock]:
            if not acquire(lk, blocking):
                for t in reversed(taken):
                    t.release()
                return False
            taken.append(lk)
        held[self.key] = [1, {id(self.manager): self.manager}]
        return True

    def release(self) -> None:
        """Close the file (flushing it) and release the locks, at the outermost release."""
        held = self._held()
        entry = held[self.key]
        entry[0] -= 1
        if entry[0] > 0:
            return
        del held[self.key]
        try:
            for manager in entry[1].values():
                manager.close()
        finally:
            self.local_lock.release()
            for lk in reversed(self.cluster_locks):
                lk.release()

    def locked(self) -> bool:
        """Whether any process or thread holds the lock."""
        return any(lk.locked() for lk in [*self.cluster_locks, self.local_lock])

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"ClusterFileLock({self.key!r}, {[*self.cluster_locks, self.local_lock]!r})"


class H5Store:
    """An HDF5 file opened by path through xarray's ``CachingFileManager``.

    The manager id is derived from the path and mode, so every lazyh5 object for the
    same file and mode in a process shares one h5py handle: reads see writes made
    through the ``.h5`` accessor at once, and HDF5 never sees the file opened twice
    with conflicting modes.
    """

    def __init__(
        self,
        filename: str | os.PathLike,
        mode: str = "r",
        *,
        lock: Any = None,
        allow_external: bool = False,
        file_kwargs: Mapping[str, Any] | None = None,
    ):
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        self.filename = os.path.abspath(os.fspath(filename))
        self.mode = mode
        self.allow_external = allow_external
        kwargs = dict(file_kwargs or {})
        manager_id = ("lazyh5", self.filename, mode, tuple(sorted(kwargs.items())))
        self._manager = CachingFileManager(
            open_h5file, self.filename, mode=mode, kwargs=kwargs, manager_id=manager_id
        )
        if lock is None:
            lock = (
                HDF5_LOCK
                if mode == "r"
                else combine_locks([HDF5_LOCK, get_write_lock(self.filename)])
            )
        self._base_lock = ensure_lock(lock)
        self.lock = self._make_lock()
        # Fail now, with a clear message, rather than inside the first dask task.
        with self.session():
            self.acquire(needs_lock=not self.cluster_locked)

    def _make_lock(self) -> Any:
        base = self._base_lock
        if self.mode == "r+" and any(
            _is_cluster_lock(lk) for lk in getattr(base, "locks", (base,))
        ):
            return ClusterFileLock(base, self._manager, self.filename)
        return base

    @property
    def cluster_locked(self) -> bool:
        """Whether the file is writable and shared by a dask.distributed cluster.

        Then it is open in a process only while that process holds :attr:`lock`
        (see :class:`ClusterFileLock`).
        """
        return isinstance(self.lock, ClusterFileLock)

    def session(self) -> Any:
        """Hold the file's lock for several accesses (opening reads many objects).

        A no-op context unless :attr:`cluster_locked`; then the file stays open until
        the outermost session or lock hold ends.
        """
        return self.lock if self.cluster_locked else contextlib.nullcontext()

    def acquire(self, needs_lock: bool = True) -> h5py.File:
        """The open h5py file (opened now if it is not open in this process).

        For a :attr:`cluster_locked` store, call this while holding :attr:`lock`. A
        ``FileBusyError`` there is retried for up to ``CLUSTER_BUSY_WAIT`` seconds:
        read-only handles that workers cache for an earlier computation of the same
        file close a moment after it ends.
        """
        if not self.cluster_locked:
            with self._manager.acquire_context(needs_lock) as f:
                return f
        deadline = time.monotonic() + CLUSTER_BUSY_WAIT
        while True:
            try:
                with self._manager.acquire_context(needs_lock) as f:
                    return f
            except FileBusyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self) -> None:
        self._manager.close()

    def group(self, path: str | None) -> h5py.Group:
        root = self.acquire()
        if path in (None, "", "/"):
            return root
        path = "/" + path.strip("/")
        parent, _, name = path.rpartition("/")
        node: h5py.Group = root
        for part in [p for p in parent.split("/") if p] + [name]:
            if part not in node:
                groups = sorted(k for k in node if isinstance(node.get(k), h5py.Group))
                raise ObjectNotFoundError(
                    f"no group '{path}' in '{self.filename}'; groups at '{node.name}': {groups}"
                )
            check_link(self.filename, node, part, self.allow_external)
            node = node[part]
        if not isinstance(node, h5py.Group):
            raise ObjectNotFoundError(
                f"'{path}' in '{self.filename}' is a dataset, not a group; "
                "open its parent group and select the variable"
            )
        return node

    def __getstate__(self):
        return {
            "filename": self.filename,
            "mode": self.mode,
            "allow_external": self.allow_external,
            "manager": self._manager,
            "lock": self._base_lock,
        }

    def __setstate__(self, state):
        self.filename = state["filename"]
        self.mode = state["mode"]
        self.allow_external = state["allow_external"]
        self._manager = state["manager"]
        self._base_lock = state["lock"]
        self.lock = self._make_lock()


def _read_attrs(obj: h5py.HLObject, filename: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for key in obj.attrs:
        if key in _HIDDEN_ATTRS:
            continue
        try:
            value = obj.attrs[key]
        except (OSError, TypeError, ValueError) as err:
            warnings.warn(
                f"skipping attribute '{key}' of '{obj.name}' in '{filename}': "
                f"h5py cannot read it ({err})",
                UserWarning,
                stacklevel=5,
            )
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, np.ndarray) and value.dtype.kind in "SO":
            value = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
        attrs[key] = value
    return attrs


STORAGE_ATTR = "hdf5_storage"
_LAYOUTS = {h5py.h5d.COMPACT: "compact", h5py.h5d.VIRTUAL: "virtual"}


def storage_label(dset: h5py.Dataset) -> str:
    """How a dataset is stored, e.g. ``"chunks (256, 32, 32, 3) of 3 MiB, lzf"``."""
    if dset.chunks is None:
        layout = _LAYOUTS.get(dset.id.get_create_plist().get_layout(), "contiguous")
        return f"{layout}, not chunked"
    # The HDF5 type's size: h5py has no numpy dtype for some types read in part.
    nbytes = math.prod(dset.chunks) * dset.id.get_type().get_size()
    label = f"chunks {dset.chunks} of {format_bytes(nbytes)}"
    comp = compression_label(dset)
    return f"{label}, {comp}" if comp else f"{label}, uncompressed"


def _encoding(
    filename: str, path: str, dset: h5py.Dataset, dim_names: Sequence[str], kind: VariableType
) -> dict[str, Any]:
    # Shapes and chunks are the variable's: an array element type's axes are whole.
    enc: dict[str, Any] = {
        "source": filename,
        "lazyh5_path": path,
        "lazyh5_dims": tuple(dim_names),
        "original_shape": dset.shape + kind.element_shape,
        "contiguous": dset.chunks is None,
        **kind.encoding,  # "dtype" among them
    }
    if dset.chunks is not None:
        chunks = dset.chunks + kind.element_shape
        enc["chunksizes"] = chunks
        enc["preferred_chunks"] = dict(zip(dim_names, chunks, strict=True))
        label = compression_label(dset)
        if label:
            enc["filters"] = label
        if dset.compression in ("gzip", "lzf", "szip"):
            enc["compression"] = dset.compression
            enc["compression_opts"] = dset.compression_opts
        enc["shuffle"] = dset.shuffle
        enc["fletcher32"] = dset.fletcher32
    return enc


def _members(
    store: H5Store, grp: h5py.Group, drop: set[str]
) -> tuple[dict[str, h5py.Dataset], list[str]]:
    datasets: dict[str, h5py.Dataset] = {}
    subgroups: list[str] = []
    for name in grp:
        check_link(store.filename, grp, name, store.allow_external)
        obj = grp.get(name)
        if obj is None:  # dangling soft link
            warnings.warn(
                f"skipping '{grp.name.rstrip('/')}/{name}' in '{store.filename}': "
                "it is a link to nothing",
                UserWarning,
                stacklevel=4,
            )
            continue
        if isinstance(obj, h5py.Group):
            subgroups.append(name)
        elif isinstance(obj, h5py.Dataset) and name not in drop:
            check_dataset(store.filename, obj, store.allow_external)
            datasets[name] = obj
    return datasets, subgroups


def read_group(
    store: H5Store,
    group: str | None = None,
    *,
    dims: Mapping[str, Sequence[Hashable]] | None = None,
    drop_variables: Iterable[str] | None = None,
    inherited_dims: Mapping[str, int] | None = None,
    decode_kwargs: Mapping[str, Any] | None = None,
    warn_if_empty: bool = True,
) -> xr.Dataset:
    """Build the lazy (not yet dask-chunked) Dataset for one group of ``store``."""
    with store.session():
        return _read_group(
            store,
            group,
            dims=dims,
            drop_variables=drop_variables,
            inherited_dims=inherited_dims,
            decode_kwargs=decode_kwargs,
            warn_if_empty=warn_if_empty,
        )


def _read_group(
    store: H5Store,
    group: str | None,
    *,
    dims: Mapping[str, Sequence[Hashable]] | None,
    drop_variables: Iterable[str] | None,
    inherited_dims: Mapping[str, int] | None,
    decode_kwargs: Mapping[str, Any] | None,
    warn_if_empty: bool,
) -> xr.Dataset:
    filename = store.filename
    grp = store.group(group)
    prefix = "/" + (group or "").strip("/") if (group or "").strip("/") else ""
    datasets, subgroups = _members(store, grp, set(drop_variables or ()))
    kinds = readable_types(filename, datasets, prefix)  # warns about the others
    datasets = {name: dset for name, dset in datasets.items() if name in kinds}

    shapes: dict[str, tuple[int, ...]] = {}
    scales: dict[str, list[str | None]] = {}
    coord_scales: dict[str, str] = {}  # dataset name -> variable name of a coordinate
    # this group's dimension scales: object id -> (dimension name, has coordinate values)
    own_scales = {
        dset.id: dimnames.scale_name(dset, name.rsplit("/", 1)[-1])
        for name, dset in datasets.items()
        if dset.shape is not None and dimnames.is_dimension_scale(dset)
    }
    for name, dset in datasets.items():
        if dset.shape is None:  # HDF5 null dataspace: nothing to hold
            continue
        if dset.id in own_scales:
            dim, has_values = own_scales[dset.id]
            if not has_values:
                continue  # a netCDF dimension without coordinate values
            if dset.ndim == 1 and not kinds[name].element_shape:
                coord_scales[name] = dim
                shapes[name] = dset.shape
                scales[name] = [dim]
                continue
        # An array element type adds trailing axes, named by the default rule.
        element = kinds[name].element_shape
        shapes[name] = dset.shape + element
        scales[name] = dimnames.scale_dims(dset, own_scales) + [None] * len(element)

    dim_map = dimnames.assign_dims(filename, shapes, scales, dims)
    dim_map = _avoid_ancestor_conflicts(dim_map, shapes, inherited_dims or {}, grp.name)

    variables: dict[str, xr.Variable] = {}
    for name in shapes:
        dset, kind = datasets[name], kinds[name]
        names = dim_map[name]
        # The path as reached from this file (dset.name would be the path inside the
        # target file when the group came through an external link).
        path = f"{prefix}/{name}"
        data = H5BackendArray(store, path, shapes[name], kind)
        var_name = coord_scales.get(name, name)
        if var_name in variables:
            var_name = name
        attrs = _read_attrs(dset, filename)
        # Shown by xarray's text and HTML reprs (encoding is not): how the file stores it.
        attrs.setdefault(STORAGE_ATTR, storage_label(dset))
        variables[var_name] = xr.Variable(
            names,
            xr.core.indexing.LazilyIndexedArray(data),
            attrs=attrs,
            encoding=_encoding(filename, path, dset, names, kind),
        )

    group_attrs = _read_attrs(grp, filename)
    decode = {"mask_and_scale": True, "decode_times": True, "decode_coords": True}
    decode.update(decode_kwargs or {})
    if decode.pop("decode_cf", True):
        vars_, attrs, coord_names = conventions.decode_cf_variables(
            variables, group_attrs, **decode
        )
    else:
        vars_, attrs, coord_names = variables, group_attrs, set()
    sizes: dict[Hashable, int] = {}
    for var in vars_.values():
        sizes.update(var.sizes)
    positions = _position_coords(sizes, vars_, inherited_dims or {})
    ds = xr.Dataset(vars_, coords=positions, attrs=attrs)
    ds = ds.set_coords([c for c in coord_names if c in vars_])
    if warn_if_empty and not datasets and subgroups and grp.name == "/":
        warnings.warn(
            f"'{filename}' has no datasets at its root, only groups {sorted(subgroups)}: "
            "open one with group=..., or all of them with "
            "xr.open_datatree(path, engine='lazyh5')",
            UserWarning,
            stacklevel=4,
        )
    return ds


def _avoid_ancestor_conflicts(
    dim_map: dict[str, tuple[str, ...]],
    shapes: Mapping[str, tuple[int, ...]],
    inherited: Mapping[str, int],
    group_name: str,
) -> dict[str, tuple[str, ...]]:
    """In a tree, a name an ancestor uses with another length gets the group's suffix."""
    if not inherited:
        return dim_map
    suffix = group_name.rstrip("/").rsplit("/", 1)[-1]
    fixed = {}
    for var, names in dim_map.items():
        fixed[var] = tuple(
            f"{d}_{suffix}" if d in inherited and inherited[d] != n else d
            for d, n in zip(names, shapes[var], strict=True)
        )
    return fixed


def _position_coords(
    sizes: Mapping[Hashable, int], existing: Iterable[Hashable], inherited: Mapping[str, int]
) -> xr.Coordinates:
    """An O(1)-memory integer index (file positions) for each dimension without one.

    These positions are what lets ``.sel(sample=7)`` and the ``.h5`` write accessor
    map a selected view back to rows of the file.
    """
    existing = set(existing)
    variables: dict[Hashable, xr.Variable] = {}
    indexes: dict[Hashable, PandasIndex] = {}
    for dim, n in sizes.items():
        if dim in existing or inherited.get(str(dim)) == n:
            continue
        index = PandasIndex(pd.RangeIndex(n, name=dim), dim)
        indexes[dim] = index
        variables.update(index.create_variables())
    # Built in one go: merging coordinates one by one is quadratic in the number of dims.
    return xr.Coordinates(variables, indexes)
