"""Bad input to the read path: each error names the file, the object and the expectation."""

from __future__ import annotations

import os
import shutil
import warnings

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


def _missing(tmp_path, seed_file):
    return tmp_path / "missing.h5"


def _directory(tmp_path, seed_file):
    (tmp_path / "adir.h5").mkdir()
    return tmp_path / "adir.h5"


def _empty(tmp_path, seed_file):
    (tmp_path / "empty.h5").write_bytes(b"")
    return tmp_path / "empty.h5"


def _text(tmp_path, seed_file):
    (tmp_path / "text.h5").write_text("id,label\n1,2\n")
    return tmp_path / "text.h5"


def _truncated(tmp_path, seed_file):
    data = seed_file.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(data[:2000])
    return tmp_path / "trunc.h5"


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (_missing, FileMissingError, "no such file"),
        (_directory, FileMissingError, "is a directory"),
        (_empty, NotHDF5Error, "empty"),
        (_text, NotHDF5Error, "not an HDF5 file"),
        (_truncated, CorruptFileError, "damaged or truncated"),
    ],
)
def test_unreadable_paths(tmp_path, seed_file, make, error, match):
    path = make(tmp_path, seed_file)
    with pytest.raises(error, match=match) as info:
        lazyh5.open_dataset(path)
    assert path.name in str(info.value)
    assert isinstance(info.value, Lazyh5Error)


def test_builtin_bases():
    assert issubclass(FileMissingError, FileNotFoundError)
    assert issubclass(ObjectNotFoundError, KeyError)
    assert issubclass(NotHDF5Error, ValueError)


def test_unknown_group(seed_file):
    with pytest.raises(KeyError, match=r"no group '/nope' in .*seed.h5"):
        lazyh5.open_dataset(seed_file, group="nope")
    with pytest.raises(ObjectNotFoundError, match="is a dataset, not a group"):
        lazyh5.open_dataset(seed_file, group="label")


def test_unknown_variable_in_drop_or_dims(seed_file):
    with pytest.raises(KeyError, match="no such dataset"):
        lazyh5.open_dataset(seed_file, dims={"missing": ("a",)})


def test_r_plus_on_read_only_file(tmp_path, seed_file):
    if os.geteuid() == 0:
        pytest.skip("root can write to read-only files")
    target = tmp_path / "ro.h5"
    shutil.copy(seed_file, target)
    target.chmod(0o444)
    with pytest.raises(ReadOnlyError, match="mode='r'"):
        lazyh5.open_dataset(target, mode="r+")


def test_file_open_for_writing_by_another_process(seed_file):
    import subprocess
    import sys
    import time

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import h5py, sys, time; f = h5py.File(sys.argv[1], 'r+', locking=True); "
            "print('open', flush=True); time.sleep(30)",
            str(seed_file),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        time.sleep(0.2)
        with pytest.raises(FileBusyError, match="locked by another process"):
            lazyh5.open_dataset(seed_file, mode="r+")
    finally:
        holder.kill()
        holder.wait()
    ds = lazyh5.open_dataset(seed_file)
    np.testing.assert_array_equal(ds["label"].values, np.arange(1000) % 10)


def test_bad_mode(seed_file):
    with pytest.raises(ValueError, match="mode must be"):
        lazyh5.open_dataset(seed_file, mode="w")


def test_file_object_is_refused(seed_file):
    with open(seed_file, "rb") as fh, pytest.raises(TypeError, match="by path"):
        lazyh5.open_dataset(fh)


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
