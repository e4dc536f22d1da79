"""The store: one HDF5 file (by path), its lock, and its datasets as xarray variables."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import xarray as xr
from dask.utils import format_bytes
from xarray import conventions
from xarray.backends import CachingFileManager
from xarray.backends.common import _decode_variable_name
from xarray.backends.locks import (
    HDF5_LOCK,
    DummyLock,
    acquire,
    combine_locks,
    ensure_lock,
    get_write_lock,
)
from xarray.core import indexing
from xarray.core.utils import emit_user_level_warning

from .._files import open_h5file
from .._filters import compression_label
from ..errors import (
    FileBusyError,
    GroupNotFoundError,
    InvalidArgumentError,
    ObjectNotFoundError,
)
from . import dims as dimnames
from .array import H5BackendArray
from .attrs import read_attrs
from .security import check_dataset, check_link
from .types import VariableType, readable_types


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
        if path is not None and not isinstance(path, str):
            raise InvalidArgumentError(
                f"cannot open group {path!r} of '{self.filename}': group must be a string "
                "path such as 'a/b'"
            )
        root = self.acquire()
        if path in (None, "", "/"):
            return root
        path = "/" + path.strip("/")
        parent, _, name = path.rpartition("/")
        node: h5py.Group = root
        for part in [p for p in parent.split("/") if p] + [name]:
            if part not in node:
                groups = sorted(k for k in node if isinstance(node.get(k), h5py.Group))
                raise GroupNotFoundError(
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


# HDF5 filter ids (or names h5py uses) -> netCDF4-python's names, as h5netcdf's
# Variable.filters() reports them (its ids and names, compressor flags and level).
_NC4_COMPRESSORS = {
    "1": "zlib", "2": "szip", "307": "bzip2", "32004": "blosc", "32015": "zstd",
    "zlib": "zlib", "szip": "szip", "bzip2": "bzip2", "blosc": "blosc", "zstd": "zstd",
}  # fmt: skip


def _filters(dset: h5py.Dataset) -> dict[str, Any]:
    """The filter flags h5netcdf's ``Variable.filters()`` gives xarray, the same way."""
    flags: dict[str, Any] = dict.fromkeys(("zlib", "szip", "bzip2", "blosc", "zstd"), False)
    flags.update(shuffle=dset.shuffle, fletcher32=dset.fletcher32)
    if dset.compression == "gzip":
        flags.update(zlib=True, complevel=dset.compression_opts)
    for filter_id, opts in getattr(dset, "_filters", {}).items():
        name = _NC4_COMPRESSORS.get(filter_id)
        if name is not None:
            flags[name] = True
            if opts:
                flags["complevel"] = opts[0]
    return flags


def _encoding(
    filename: str, path: str, dset: h5py.Dataset, dim_names: Sequence[str], kind: VariableType
) -> dict[str, Any]:
    """The encoding h5netcdf's xarray store gives, plus lazyh5's own ``lazyh5_*`` keys.

    xarray's writers drop keys they do not know when the encoding comes from the
    variable, so the ``lazyh5_*`` keys never reach a copy of the dataset.
    """
    # Shapes and chunks are the variable's: an array element type's axes are whole.
    enc: dict[str, Any] = dict(kind.encoding)  # "dtype" among them
    if dset.chunks:
        chunks = dset.chunks + kind.element_shape
        enc["contiguous"] = False
        enc["chunksizes"] = chunks
        enc["preferred_chunks"] = dict(zip(dim_names, chunks, strict=True))
    else:
        enc["contiguous"] = True
        enc["chunksizes"] = None
    enc.update(_filters(dset))
    if dset.compression == "gzip":  # netCDF4-python's names, as h5netcdf's store does
        enc["zlib"] = True
        enc["complevel"] = dset.compression_opts
    elif dset.compression is not None:
        enc["compression"] = dset.compression
        enc["compression_opts"] = dset.compression_opts
    enc["source"] = filename
    enc["original_shape"] = dset.shape + kind.element_shape
    enc["lazyh5_path"] = path
    enc["lazyh5_dims"] = tuple(dim_names)
    # How the file stores it, for the .h5 accessor's reprs (never an attribute:
    # attributes are written into copies of the dataset).
    enc["lazyh5_storage"] = storage_label(dset)
    label = compression_label(dset)
    if label:
        enc["lazyh5_filters"] = label
    return enc


def _members(
    store: H5Store, grp: h5py.Group, drop: set[str]
) -> tuple[dict[str, h5py.Dataset], list[str], set[str]]:
    """The group's datasets (less ``drop``), its subgroups, and the unlimited
    dimensions of the dimension scales dropped."""
    datasets: dict[str, h5py.Dataset] = {}
    subgroups: list[str] = []
    unlimited: set[str] = set()
    for name in grp:
        check_link(store.filename, grp, name, store.allow_external)
        obj = grp.get(name)
        if obj is None:  # dangling soft link
            emit_user_level_warning(
                f"skipping '{grp.name.rstrip('/')}/{name}' in '{store.filename}': "
                "it is a link to nothing",
                UserWarning,
            )
            continue
        if isinstance(obj, h5py.Group):
            subgroups.append(name)
        elif isinstance(obj, h5py.Dataset) and variable_name(name) not in drop:
            check_dataset(store.filename, obj, store.allow_external)
            datasets[name] = obj
        elif isinstance(obj, h5py.Dataset) and _unlimited_scale(obj):
            # a dropped variable's dimension stays in the file's dimensions (h5netcdf)
            unlimited.add(dimnames.scale_name(obj, name)[0])
    return datasets, subgroups, unlimited


def _unlimited_scale(dset: h5py.Dataset) -> bool:
    return (
        dset.shape is not None
        and dset.ndim >= 1
        and dset.maxshape[0] is None
        and dimnames.is_dimension_scale(dset)
    )


def variable_name(name: str) -> str:
    """The netCDF name of a dataset: netCDF-C hides a multi-dimensional variable named
    like a dimension as ``_nc4_non_coord_<name>`` (h5netcdf renames it back too)."""
    return name.removeprefix(NC4_NON_COORD)


NC4_NON_COORD = "_nc4_non_coord_"


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
    """Build the lazy (not yet dask-chunked) Dataset for one group of ``store``.

    The steps: list the group's datasets, scan its dimension scales, name every axis
    (scales first, then ``dims=``, then lazyh5's default rule), wrap each dataset as a
    lazily indexed variable, and CF-decode them with xarray's own decoders.
    """
    with store.session():
        filename = store.filename
        grp = store.group(group)
        datasets, subgroups, dropped_unlimited = _members(store, grp, set(drop_variables or ()))
        prefix = "/" + (group or "").strip("/") if (group or "").strip("/") else ""
        kinds = readable_types(filename, datasets, prefix)  # warns about the others
        datasets = {name: dset for name, dset in datasets.items() if name in kinds}
        scan = _scan_scales(grp, datasets, kinds)
        scan.unlimited |= dropped_unlimited
        dim_map = dimnames.assign_dims(filename, scan.shapes, scan.scales, dims)
        dim_map = _avoid_ancestor_conflicts(dim_map, scan, inherited_dims or {}, grp.name)
        variables = _variables(store, prefix, datasets, kinds, scan, dim_map)
        ds = _decode(variables, read_attrs(grp, filename), decode_kwargs or {})
        ds.encoding["unlimited_dims"] = set(scan.unlimited)  # this group's, as h5netcdf
    if warn_if_empty and not datasets and subgroups and grp.name == "/":
        emit_user_level_warning(
            f"'{filename}' has no datasets at its root, only groups {sorted(subgroups)}: "
            "open one with group=..., or all of them with "
            "xr.open_datatree(path, engine='lazyh5')",
            UserWarning,
        )
    return ds


@dataclass
class _Scan:
    """What a group's dimension scales say about its datasets."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    scales: dict[str, list[str | None]] = field(default_factory=dict)  # names per axis
    coords: dict[str, str] = field(default_factory=dict)  # dataset -> coordinate name
    unlimited: set[str] = field(default_factory=set)  # dimensions that can grow


def _scan_scales(
    grp: h5py.Group,
    datasets: Mapping[str, h5py.Dataset],
    kinds: Mapping[str, VariableType],
) -> _Scan:
    """Dimension names from the group's HDF5 dimension scales (netCDF4's dimensions)."""
    scan = _Scan()
    # this group's dimension scales: object id -> (dimension name, has coordinate values)
    own = {
        dset.id: dimnames.scale_name(dset, name)
        for name, dset in datasets.items()
        if dset.shape is not None and dimnames.is_dimension_scale(dset)
    }
    for name, dset in datasets.items():
        if dset.shape is None:  # HDF5 null dataspace: nothing to hold
            continue
        if dset.id in own:
            dim, has_values = own[dset.id]
            if _unlimited_scale(dset):
                scan.unlimited.add(dim)
            if not has_values:
                continue  # a netCDF dimension without coordinate values
            if dset.ndim == 1 and not kinds[name].element_shape:
                scan.coords[name] = dim
                scan.shapes[name] = dset.shape
                scan.scales[name] = [dim]
                continue
            if "_Netcdf4Coordinates" in dset.attrs:
                # A multi-dimensional coordinate (netCDF-C's char-array coordinates):
                # its axes are named by netCDF dimension ids, as h5netcdf reads them.
                scan.coords[name] = dim
                scan.shapes[name] = dset.shape
                scan.scales[name] = _names_of_dimids(grp, dset)
                continue
        # An array element type adds trailing axes, named by the default rule.
        element = kinds[name].element_shape
        scan.shapes[name] = dset.shape + element
        scan.scales[name] = dimnames.scale_dims(dset, own) + [None] * len(element)
    return scan


def _names_of_dimids(grp: h5py.Group, dset: h5py.Dataset) -> list[str | None]:
    """Names of the netCDF dimension ids in ``dset``'s ``_Netcdf4Coordinates``."""
    by_id: dict[int, str] = {}
    node: h5py.Group | None = grp
    while node is not None:  # this group's dimensions shadow its ancestors'
        for name in node:
            obj = node.get(name)
            # netCDF-C also writes _Netcdf4Dimid on variables: only scales are dimensions
            if (
                isinstance(obj, h5py.Dataset)
                and "_Netcdf4Dimid" in obj.attrs
                and dimnames.is_dimension_scale(obj)
            ):
                by_id.setdefault(int(obj.attrs["_Netcdf4Dimid"]), dimnames.scale_name(obj, name)[0])
        node = None if node.name == "/" else node.parent
    return [by_id.get(int(i)) for i in dset.attrs["_Netcdf4Coordinates"]]


def _variables(
    store: H5Store,
    prefix: str,
    datasets: Mapping[str, h5py.Dataset],
    kinds: Mapping[str, VariableType],
    scan: _Scan,
    dim_map: Mapping[str, tuple[str, ...]],
) -> dict[str, xr.Variable]:
    """Every named dataset as a lazily indexed ``xr.Variable`` (data not read)."""
    filename = store.filename
    variables: dict[str, xr.Variable] = {}
    for name in scan.shapes:
        dset, kind = datasets[name], kinds[name]
        names = dim_map[name]
        # The path as reached from this file (dset.name would be the path inside the
        # target file when the group came through an external link).
        path = f"{prefix}/{name}"
        data = H5BackendArray(store, path, scan.shapes[name], kind)
        var_name = scan.coords.get(name, variable_name(name))
        if var_name in variables:
            var_name = name
        variables[var_name] = xr.Variable(
            names,
            indexing.LazilyIndexedArray(data),
            attrs=read_attrs(dset, filename),
            encoding=_encoding(filename, path, dset, names, kind),
        )
    return variables


def _decode(
    variables: dict[str, xr.Variable], attrs: dict[str, Any], decoders: Mapping[str, Any]
) -> xr.Dataset:
    """CF decoding exactly as xarray's ``StoreBackendEntrypoint`` does it.

    Coordinates get no index here: ``xr.open_dataset`` creates xarray's default ones
    (or none, with ``create_default_indexes=False``), as for every backend.
    """
    variables = {_decode_variable_name(k): v for k, v in variables.items()}
    kwargs = {"mask_and_scale": True, "decode_times": True, "decode_coords": True}
    kwargs.update(decoders)
    if kwargs.pop("decode_cf", True):
        vars_, attrs, coord_names = conventions.decode_cf_variables(variables, attrs, **kwargs)
    else:
        vars_, coord_names = variables, set()
    coord_vars, data_vars = {}, {}
    for name, var in vars_.items():
        is_coord = name in coord_names or var.dims == (name,)
        (coord_vars if is_coord else data_vars)[name] = var
    coords = xr.Coordinates(coord_vars, indexes={})
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _avoid_ancestor_conflicts(
    dim_map: dict[str, tuple[str, ...]],
    scan: _Scan,
    inherited: Mapping[str, int],
    group_name: str,
) -> dict[str, tuple[str, ...]]:
    """In a tree, a name an ancestor uses with another length gets the group's suffix.

    Where h5netcdf's tree would be refused by xarray (a group reusing a dimension name
    with another length, as files by ``lazyh5.create`` with default names can), lazyh5
    gives the tree with the group's name appended to that dimension."""
    if not inherited:
        return dim_map
    suffix = group_name.rstrip("/").rsplit("/", 1)[-1]
    fixed = {}
    for var, names in dim_map.items():
        fixed[var] = tuple(
            f"{d}_{suffix}" if d in inherited and inherited[d] != n else d
            for d, n in zip(names, scan.shapes[var], strict=True)
        )
    return fixed
