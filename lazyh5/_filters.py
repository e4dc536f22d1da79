"""HDF5 filter pipelines: loading plugin filters and describing a dataset's filters."""

from __future__ import annotations

import contextlib

import h5py

# HDF5 filter ids of HDF5's own filters, h5py's, and the codecs hdf5plugin ships (see
# the HDF Group's registered filter list), so files using them are described by name.
KNOWN_FILTERS = {
    1: "gzip",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    305: "lzo",
    307: "bzip2",
    32000: "lzf",
    32001: "blosc",
    32004: "lz4",
    32008: "bitshuffle",
    32013: "zfp",
    32015: "zstd",
    32017: "sz",
    32018: "fcidecomp",
    32024: "sz3",
    32026: "blosc2",
    32028: "sperr",
}

# Filters h5py (with HDF5) decodes itself: if one of them is missing, h5py was built
# without it.
_BUILT_IN = {1, 2, 3, 4, 5, 6, 32000}
# Filters the hdf5plugin package registers with h5py's HDF5 when imported.
_HDF5PLUGIN = {307, 32001, 32004, 32008, 32013, 32015, 32017, 32018, 32024, 32026, 32028}
REGISTRY_URL = (
    "https://github.com/HDFGroup/hdf5_plugins/blob/master/docs/RegisteredFilterPlugins.md"
)

_plugins_loaded = False


def load_filter_plugins() -> None:
    """Import ``hdf5plugin`` when installed so Blosc/Zstd/LZ4 datasets decode.

    Filters then come only from that installed package, never from paths named by
    a file (``HDF5_PLUGIN_PATH`` is what HDF5 itself consults; we leave it alone).
    """
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    with contextlib.suppress(ImportError):
        import hdf5plugin  # noqa: F401


def filter_pipeline(dset: h5py.Dataset) -> list[tuple[int, str, tuple[int, ...]]]:
    """The dataset's filters in order, as ``(filter_id, name, client_values)``."""
    plist = dset.id.get_create_plist()
    pipeline = []
    for i in range(plist.get_nfilters()):
        code, _flags, values, name = plist.get_filter(i)
        label = KNOWN_FILTERS.get(code) or (name.decode(errors="replace") or f"filter-{code}")
        pipeline.append((int(code), label, tuple(int(v) for v in values)))
    return pipeline


def missing_filters(dset: h5py.Dataset) -> list[tuple[int, str]]:
    """The filters of ``dset``'s pipeline that are not available, as ``(id, name)``.

    HDF5 opens such a dataset and reads chunks that skipped the filter; it fails only
    on a chunk that went through it, so this is asked when a read has failed.
    """
    load_filter_plugins()
    return [
        (code, label)
        for code, label, _values in filter_pipeline(dset)
        if not h5py.h5z.filter_avail(code)
    ]


def provider(code: int) -> str:
    """What to install (or do) to read data encoded with HDF5 filter ``code``."""
    if code in _HDF5PLUGIN:
        return "the hdf5plugin package provides it (pip install hdf5plugin; lazyh5 loads it)"
    if code in _BUILT_IN:
        return "it is part of HDF5 and h5py, so this h5py was built without it; reinstall h5py"
    if code == 305:
        return (
            "no package on PyPI adds LZO to h5py: read it with PyTables built with LZO, "
            "or ask for a copy of the file written without it"
        )
    return f"install the HDF5 filter plugin for filter {code} (registered ids: {REGISTRY_URL})"


def missing_filter_error(dset: h5py.Dataset, path: str, filename: str) -> Exception | None:
    """The :class:`~lazyh5.errors.MissingFilterError` to raise for a failed read of
    ``dset`` (``path`` in ``filename``) if one of its filters is not installed, else
    ``None`` (then the failure is something else: damage)."""
    from .errors import MissingFilterError

    missing = missing_filters(dset)
    if not missing:
        return None
    code, name = missing[0]
    return MissingFilterError(
        f"cannot read '{path}' in '{filename}': its data is encoded with HDF5 filter "
        f"{code} ('{name}'), which is not installed; {provider(code)}"
    )


def compression_label(dset: h5py.Dataset) -> str | None:
    """A short human label for the compression, e.g. ``"gzip(4)+shuffle"``."""
    parts = []
    for code, label, values in filter_pipeline(dset):
        if code == 1 and values:
            parts.append(f"gzip({values[0]})")
        else:
            parts.append(label)
    return "+".join(parts) if parts else None
