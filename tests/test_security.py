"""Files must not make lazyh5 read other files outside their folder."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5.errors import ExternalReferenceError


@pytest.fixture
def secret(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    path = outside / "secret.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.arange(10))
    return path


@pytest.fixture
def folder(tmp_path):
    inside = tmp_path / "inside"
    inside.mkdir()
    return inside


def test_external_link_outside_folder_is_refused(folder, secret):
    path = folder / "hostile.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("ok", data=np.arange(3))
        f["leak"] = h5py.ExternalLink(str(secret), "/data")
    with pytest.raises(ExternalReferenceError, match=r"external link.*allow_external=True"):
        lazyh5.open_dataset(path)
    ds = lazyh5.open_dataset(path, allow_external=True)
    assert "ok" in ds  # the link's target is a dataset in another file's root


def test_external_link_to_group_outside_is_refused(folder, secret):
    path = folder / "hostile.h5"
    with h5py.File(path, "w") as f:
        f["grp"] = h5py.ExternalLink(str(secret), "/")
    with pytest.raises(ExternalReferenceError):
        lazyh5.open_dataset(path, group="grp")
    with pytest.raises(ExternalReferenceError):
        lazyh5.open_datatree(path)


def test_relative_external_link_inside_folder_is_allowed(folder):
    with h5py.File(folder / "part.h5", "w") as f:
        f.create_dataset("data", data=np.arange(4))
    path = folder / "main.h5"
    with h5py.File(path, "w") as f:
        f["grp"] = h5py.ExternalLink("part.h5", "/")
    ds = lazyh5.open_dataset(path, group="grp")
    np.testing.assert_array_equal(ds["data"].values, np.arange(4))


def test_virtual_dataset_outside_folder_is_refused(folder, secret):
    path = folder / "vds.h5"
    layout = h5py.VirtualLayout(shape=(10,), dtype="i8")
    layout[:] = h5py.VirtualSource(str(secret), "data", shape=(10,))
    with h5py.File(path, "w") as f:
        f.create_virtual_dataset("v", layout, fillvalue=-1)
    with pytest.raises(ExternalReferenceError, match="virtual dataset"):
        lazyh5.open_dataset(path)
    ds = lazyh5.open_dataset(path, allow_external=True)
    np.testing.assert_array_equal(ds["v"].values, np.arange(10))


def test_virtual_dataset_inside_same_file_is_allowed(folder):
    path = folder / "self.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=np.arange(6))
        layout = h5py.VirtualLayout(shape=(3,), dtype="i8")
        layout[:] = h5py.VirtualSource(".", "data", shape=(6,))[:3]
        f.create_virtual_dataset("v", layout)
    ds = lazyh5.open_dataset(path)
    np.testing.assert_array_equal(ds["v"].values, [0, 1, 2])


def test_external_raw_storage_is_refused(folder, secret):
    raw = secret.parent / "raw.bin"
    np.arange(8, dtype="i4").tofile(raw)
    path = folder / "ext.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", shape=(8,), dtype="i4", external=[(str(raw), 0, 32)])
    with pytest.raises(ExternalReferenceError, match="external file"):
        lazyh5.open_dataset(path)
    ds = lazyh5.open_dataset(path, allow_external=True)
    np.testing.assert_array_equal(ds["x"].values, np.arange(8))


def _hostile_files(folder, secret) -> dict[str, tuple]:
    """One file per way of reading outside the folder: (path, dataset, values there)."""
    with h5py.File(folder / "link.h5", "w") as f:
        f["leak"] = h5py.ExternalLink(str(secret), "/data")
        f["grp"] = h5py.ExternalLink(str(secret), "/")
    layout = h5py.VirtualLayout(shape=(10,), dtype="i8")
    layout[:] = h5py.VirtualSource(str(secret), "data", shape=(10,))
    with h5py.File(folder / "vds.h5", "w") as f:
        f.create_virtual_dataset("v", layout, fillvalue=-1)
    raw = secret.parent / "raw.bin"
    np.arange(8, dtype="i4").tofile(raw)
    with h5py.File(folder / "ext.h5", "w") as f:
        f.create_dataset("x", shape=(8,), dtype="i4", external=[(str(raw), 0, 32)])
    return {
        "external link": (folder / "link.h5", "leak", np.arange(10)),
        "link to a group": (folder / "link.h5", "grp/data", np.arange(10)),
        "virtual dataset": (folder / "vds.h5", "v", np.arange(10)),
        "external file": (folder / "ext.h5", "x", np.arange(8)),
    }


@pytest.mark.parametrize(
    "how", ["external link", "link to a group", "virtual dataset", "external file"]
)
def test_hdf5matrix_refuses_what_open_dataset_refuses(folder, secret, how):
    path, name, values = _hostile_files(folder, secret)[how]
    with pytest.raises(ExternalReferenceError, match="allow_external=True"):
        lazyh5.HDF5Matrix(path, name)
    m = lazyh5.HDF5Matrix(path, name, allow_external=True)
    np.testing.assert_array_equal(m[:], values)
    m.close()
