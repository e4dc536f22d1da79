"""Bad input to the read path: each error names the file, the object and the expectation."""

from __future__ import annotations

import multiprocessing
import os
import pwd
import shutil
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.errors import (
    CorruptFileError,
    FileBusyError,
    FileMissingError,
    Lazyh5Error,
    NotHDF5Error,
    ObjectNotFoundError,
    ReadOnlyError,
)
from tests._files import unreadable
from tests._process import hold_for_writing


@pytest.mark.parametrize(
    ("kind", "error", "match"),
    [
        ("missing", FileMissingError, "no such file"),
        ("directory", FileMissingError, "is a directory"),
        ("empty", NotHDF5Error, "empty"),
        ("text", NotHDF5Error, "not an HDF5 file"),
        ("truncated", CorruptFileError, "damaged or truncated"),
    ],
)
def test_unreadable_paths(tmp_path, plain_file, kind, error, match):
    path = unreadable(kind, tmp_path, plain_file)
    with pytest.raises(error, match=match) as info:
        lazyh5.open_dataset(path)
    assert path.name in str(info.value)
    assert isinstance(info.value, Lazyh5Error)


def test_builtin_bases():
    assert issubclass(FileMissingError, FileNotFoundError)
    assert issubclass(ObjectNotFoundError, KeyError)
    assert issubclass(NotHDF5Error, ValueError)


def test_unknown_group(plain_file):
    with pytest.raises(KeyError, match=r"no group '/nope' in .*plain.h5"):
        lazyh5.open_dataset(plain_file, group="nope")
    with pytest.raises(ObjectNotFoundError, match="is a dataset, not a group"):
        lazyh5.open_dataset(plain_file, group="label")


def test_unknown_variable_in_drop_or_dims(plain_file):
    with pytest.raises(KeyError, match="no such dataset"):
        lazyh5.open_dataset(plain_file, dims={"missing": ("a",)})


def _open_read_only(path: str, conn) -> None:
    """In a forked child: drop root's privileges (root may write any file), then open
    ``path`` for writing; sends back the error's class name and message."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.setgroups([])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)
    try:
        assert not os.access(path, os.W_OK), "still privileged"
        lazyh5.open_dataset(path, mode="r+")
        conn.send(("opened", ""))
    except BaseException as err:
        conn.send((type(err).__name__, str(err)))


def test_r_plus_on_read_only_file(plain_file):
    # As an unprivileged user even when this runs as root (CI does), in a forked child
    # (this interpreter may live where that user cannot read), on a file that user can
    # read but not write.
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o755)
        target = folder / "ro.h5"
        shutil.copy(plain_file, target)
        target.chmod(0o444)
        ctx = multiprocessing.get_context("fork")
        ours, theirs = ctx.Pipe()
        child = ctx.Process(target=_open_read_only, args=(str(target), theirs))
        child.start()
        try:
            assert ours.poll(60), "the child did not answer"
            kind, message = ours.recv()
        finally:
            child.join(10)
            child.kill()
    finally:
        shutil.rmtree(folder)
    assert kind == ReadOnlyError.__name__, (kind, message)
    assert str(target) in message and "mode='r'" in message, message


def test_file_open_for_writing_by_another_process(plain_file):
    holder = hold_for_writing(plain_file, seconds=30)  # returns once the file is open
    try:
        with pytest.raises(FileBusyError, match="locked by another process"):
            lazyh5.open_dataset(plain_file, mode="r+")
    finally:
        holder.kill()
        holder.wait()
    ds = lazyh5.open_dataset(plain_file)
    np.testing.assert_array_equal(ds["label"].values, np.arange(1000) % 10)


def test_bad_mode(plain_file):
    with pytest.raises(ValueError, match="mode must be"):
        lazyh5.open_dataset(plain_file, mode="w")


def test_object_that_is_no_file_is_refused():
    with pytest.raises(lazyh5.errors.InvalidArgumentError, match="file objects; got int"):
        lazyh5.open_dataset(12345)


def test_unsupported_dtype_is_skipped_with_warning(tmp_path):
    path = tmp_path / "vlen.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("ok", data=np.arange(3))
        f.create_dataset("ragged", (3,), dtype=h5py.vlen_dtype(np.int32))
    with pytest.warns(UserWarning, match="ragged.*variable-length"):
        ds = lazyh5.open_dataset(path)
    assert set(ds.data_vars) == {"ok"}


@pytest.mark.parametrize("opener", ["lazyh5", "xarray"])
def test_warnings_point_at_the_callers_line(tmp_path, opener):
    path = tmp_path / "groups.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a/x", data=np.arange(3))
        f["dangling"] = h5py.SoftLink("/nothing")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if opener == "lazyh5":
            lazyh5.open_dataset(path).close()
        else:
            xr.open_dataset(path, engine="lazyh5").close()
    said = {str(w.message).split(":")[0]: w.filename for w in caught}
    assert len(said) == 2 and set(said.values()) == {__file__}, said
