"""Refuse HDF5 features that make a file read *other* files.

An HDF5 file can point elsewhere three ways: external links (a group member that
lives in another file), virtual datasets (VDS, mapped from source files) and external
raw storage (a dataset whose bytes sit in plain files). Opening an untrusted file
must not read arbitrary files on the machine, so by default lazyh5 allows these only
when the target resolves inside the opened file's own folder.
"""

from __future__ import annotations

import os

import h5py

from ..errors import ExternalReferenceError

_HINT = "pass allow_external=True if you trust this file"


def _inside(folder: str, target: str) -> bool:
    folder = os.path.realpath(folder)
    target = os.path.realpath(target)
    return os.path.commonpath([folder, target]) == folder


def check_link(filename: str, group: h5py.Group, name: str, allow_external: bool) -> None:
    """Raise if ``group[name]`` is an external link leaving ``filename``'s folder."""
    if allow_external:
        return
    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.ExternalLink):
        return
    folder = os.path.dirname(os.path.abspath(filename))
    target = link.filename
    resolved = target if os.path.isabs(target) else os.path.join(folder, target)
    if os.path.exists(resolved) and _inside(folder, resolved):
        return
    raise ExternalReferenceError(
        f"'{group.name.rstrip('/')}/{name}' in '{filename}' is an external link to "
        f"'{target}:{link.path}', outside the file's folder '{folder}'; refused by default, "
        f"{_HINT}"
    )


def check_dataset(filename: str, dset: h5py.Dataset, allow_external: bool) -> None:
    """Raise if ``dset`` is virtual or externally stored outside the file's folder."""
    if allow_external:
        return
    folder = os.path.dirname(os.path.abspath(filename))
    if dset.is_virtual:
        for source in dset.virtual_sources():
            src = source.file_name
            if src == ".":
                continue
            resolved = src if os.path.isabs(src) else os.path.join(folder, src)
            if not _inside(folder, resolved):
                raise ExternalReferenceError(
                    f"dataset '{dset.name}' in '{filename}' is a virtual dataset reading "
                    f"'{src}', outside the file's folder '{folder}'; refused by default, {_HINT}"
                )
    external = dset.external
    if external:
        for ext_name, _offset, _size in external:
            ext = ext_name.decode() if isinstance(ext_name, bytes) else ext_name
            # HDF5 resolves relative external storage against the *working directory*,
            # not the file's folder, so only absolute paths inside the folder are safe.
            if not (os.path.isabs(ext) and _inside(folder, ext)):
                raise ExternalReferenceError(
                    f"dataset '{dset.name}' in '{filename}' keeps its data in the external "
                    f"file '{ext}', which HDF5 would read from outside the file's folder "
                    f"'{folder}'; refused by default, {_HINT}"
                )
