"""HDF5 filter pipelines: loading plugin filters and describing a dataset's filters."""

from __future__ import annotations

import contextlib

import h5py

# HDF5 filter ids registered for the codecs hdf5plugin ships (see the HDF Group's
# registered filter list), so files using them are described by name.
KNOWN_FILTERS = {
    1: "gzip",
    2: "shuffle",
    3: "fletcher32",
    4: "szip",
    5: "nbit",
    6: "scaleoffset",
    32000: "lzf",
    32001: "blosc",
    32004: "lz4",
    32008: "bitshuffle",
    32015: "zstd",
    32026: "blosc2",
}

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


def compression_label(dset: h5py.Dataset) -> str | None:
    """A short human label for the compression, e.g. ``"gzip(4)+shuffle"``."""
    parts = []
    for code, label, values in filter_pipeline(dset):
        if code == 1 and values:
            parts.append(f"gzip({values[0]})")
        else:
            parts.append(label)
    return "+".join(parts) if parts else None
