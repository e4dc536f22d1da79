"""File locking with real processes: readers share, a writer excludes, SWMR follows a writer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5._files import open_h5file
from lazyh5.errors import CorruptFileError, FileBusyError, Lazyh5Error

# Opens the file with plain h5py (HDF5's default, strict locking), optionally writes,
# says "ready", and holds the file open until told to go on (one line on stdin).
HOLDER = textwrap.dedent(
    """
    import sys, h5py, numpy as np
    path, mode, swmr = sys.argv[1], sys.argv[2], sys.argv[3] == "swmr"
    f = h5py.File(path, mode, libver="latest") if swmr else h5py.File(path, mode)
    if swmr:
        d = f.create_dataset("x", (0, 4), "f4", maxshape=(None, 4), chunks=(16, 4),
                             compression="gzip", shuffle=True)
        f.swmr_mode = True
    for step in range(2):
        if mode != "r":
            d = f["x"]
            n = d.shape[0]
            d.resize((n + 48, 4))
            d[n:] = np.arange(n, n + 48, dtype="f4")[:, None]
            d.flush() if swmr else f.flush()
        print("ready", flush=True)
        sys.stdin.readline()
    f.close()
    print("closed", flush=True)
    """
)


class Holder:
    def __init__(self, path, mode, swmr=False, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), mode, "swmr" if swmr else "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.step()

    def step(self) -> str:
        line = self.proc.stdout.readline().strip()
        assert line in ("ready", "closed"), line
        return line

    def go_on(self) -> str:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return self.step()

    def close(self) -> None:
        while self.proc.poll() is None and self.go_on() != "closed":
            pass
        assert self.proc.wait(timeout=20) == 0


@pytest.fixture
def h5file(tmp_path):
    path = tmp_path / "shared.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros((16, 4), "f4"), maxshape=(None, 4), chunks=(16, 4))
    return path


def _expected(n: int) -> np.ndarray:
    rows = np.concatenate([np.zeros(16, "f4"), np.arange(16, n, dtype="f4")])
    return np.repeat(rows[:, None], 4, axis=1)


def test_readers_open_with_best_effort_locking(h5file):
    with open_h5file(str(h5file)) as f:
        # (use file locking, ignore it where the file system has none)
        assert f.id.get_access_plist().get_file_locking() == (True, True)


def test_reader_processes_share_a_file(h5file):
    holder = Holder(h5file, "r")
    try:
        ds = lazyh5.open_dataset(h5file)  # a second reader, in this process
        code = "import sys, lazyh5; print(float(lazyh5.open_dataset(sys.argv[1])['x'].sum()))"
        other = subprocess.run(
            [sys.executable, "-c", code, str(h5file)], capture_output=True, text=True, timeout=60
        )
        assert other.returncode == 0, other.stderr
        assert float(other.stdout) == 0.0
        np.testing.assert_array_equal(ds["x"].values, np.zeros((16, 4)))
        ds.close()
    finally:
        holder.close()


def test_reader_gets_file_busy_while_a_process_writes(h5file):
    holder = Holder(h5file, "r+")
    try:
        with pytest.raises(FileBusyError, match="locked by another process"):
            lazyh5.open_dataset(h5file)
        holder.go_on()  # the writer goes on writing, undisturbed
        with pytest.raises(FileBusyError):
            lazyh5.open_dataset(h5file)
    finally:
        holder.close()
    # Never corruption: once the writer has closed, everything it wrote is there.
    ds = lazyh5.open_dataset(h5file)
    np.testing.assert_array_equal(ds["x"].values, _expected(16 + 96))
    ds.close()


def test_writer_gets_file_busy_while_a_process_reads(h5file):
    holder = Holder(h5file, "r")
    try:
        with pytest.raises(FileBusyError):
            lazyh5.open_dataset(h5file, mode="r+")
    finally:
        holder.close()
    ds = lazyh5.open_dataset(h5file, mode="r+")  # free again
    ds.close()


def test_swmr_reader_follows_a_swmr_writer(tmp_path):
    path = tmp_path / "swmr.h5"
    holder = Holder(path, "w", swmr=True)
    try:
        # A plain reader is refused (HDF5 marks the file as open for writing) ...
        with pytest.raises(Lazyh5Error, match="already open for write") as err:
            lazyh5.open_dataset(path)
        assert isinstance(err.value, (FileBusyError, CorruptFileError))
        # ... a SWMR reader sees every row flushed so far, complete and decoded.
        ds = lazyh5.open_dataset(path, file_kwargs={"swmr": True})
        assert ds["x"].shape == (48, 4)
        np.testing.assert_array_equal(ds["x"].values, np.repeat(np.arange(48.0)[:, None], 4, 1))
        ds.close()
        holder.go_on()
        ds = lazyh5.open_dataset(path, file_kwargs={"swmr": True})
        assert ds["x"].shape == (96, 4)
        assert float(ds["x"][95, 0]) == 95.0
        ds.close()
    finally:
        holder.close()


def test_hdf5_use_file_locking_false_turns_the_check_off(h5file):
    """What docs/distributed.md warns about: with the variable set, nothing stops a reader."""
    holder = Holder(h5file, "r+")
    try:
        code = "import sys, lazyh5; print(lazyh5.open_dataset(sys.argv[1])['x'].shape[0])"
        env = {**os.environ, "HDF5_USE_FILE_LOCKING": "FALSE"}
        other = subprocess.run(
            [sys.executable, "-c", code, str(h5file)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert other.returncode == 0, other.stderr
        assert int(other.stdout) == 64  # whatever the writer had flushed: no guarantees
    finally:
        holder.close()
