"""A process killed while lazyh5 writes never leaves a finished-looking file, and a kill
during an in-place assignment leaves the file readable with progress marks that say how
far it got. (SIGKILL during ``to_hdf5`` and its resume: ``tests/test_to_hdf5.py``.)"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np

import lazyh5

_CREATE_MANY = textwrap.dedent(
    """
    import sys, lazyh5
    variables = {f"v{i:05d}": ((100, 8), "f4") for i in range(20000)}
    print("start", flush=True)
    lazyh5.create(sys.argv[1], variables, mode=sys.argv[2])
    print("done", flush=True)
    """
)


def _wait_for(found, what: str, proc: subprocess.Popen, timeout: float = 120):
    """Poll ``found()`` until it returns a true value (returned), while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while True:
        got = found()
        if got:
            return got
        assert proc.poll() is None, f"the process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.01)  # polling interval


def _kill_during_create(path, mode):
    proc = subprocess.Popen(
        [sys.executable, "-c", _CREATE_MANY, str(path), mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "start"
        # the temporary file appears when the create begins (tens of seconds before its end)
        _wait_for(lambda: list(path.parent.glob(f".{path.name}.*.tmp")), "temporary file", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_during_create_leaves_no_file(tmp_path):
    path = tmp_path / "new.h5"
    _kill_during_create(path, "w-")
    assert not path.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(name.startswith(".new.h5.") and name.endswith(".tmp") for name in leftovers)


def test_sigkill_during_replace_keeps_old_file(tmp_path, plain_file):
    before = plain_file.read_bytes()
    _kill_during_create(plain_file, "w")
    assert plain_file.read_bytes() == before
    ds = lazyh5.open_dataset(plain_file)
    np.testing.assert_array_equal(ds["label"].values, np.arange(1000) % 10)


# -- SIGKILL during an in-place assignment: ds["x"].h5[:] = expression ---------------

_ASSIGN = textwrap.dedent(
    """
    import itertools, sys, threading, dask, lazyh5
    dask.config.set(num_workers=2)  # the bound on unmarked blocks counts the threads
    # One HDF5 chunk (64 KiB) per block, so each block is one write of one chunk.
    lazyh5.set_options(memory_budget="1KiB")  # never less than one HDF5 chunk
    ds = lazyh5.open_dataset(sys.argv[1], mode="r+")
    calls = itertools.count(1)

    def stall(block):
        if next(calls) > 60:  # a fifth of the blocks; then wait to be killed
            threading.Event().wait()
        return block + 1

    x = ds["x"]
    x.h5[:] = x.copy(data=x.data.map_blocks(stall, dtype=x.dtype))  # in place, blockwise
    print("done", flush=True)
    """
)


def _marks_on_disk(path) -> int:
    """The blocks marked done in ``path`` (being written: read without HDF5's lock)."""
    from lazyh5.write.assign import DONE_MARKS

    try:
        with h5py.File(path, "r", locking=False) as f:
            return int(np.sum(f["x"].attrs[DONE_MARKS]))
    except (OSError, KeyError, RuntimeError):
        return 0  # not laid out yet, or caught mid-update


ROWS, WIDTH, CHUNK_ROWS = 64 * 300, 256, 64  # 300 blocks of one 64 KiB chunk, 19 MiB


def _assign_source(path):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "x",
            data=rng.random((ROWS, WIDTH), dtype=np.float32),
            chunks=(CHUNK_ROWS, WIDTH),
        )
        f.create_dataset("y", data=np.arange(ROWS) % 7, chunks=(4096,))
        f["x"].attrs["units"] = "m"


def test_sigkill_during_in_place_assignment(tmp_path):
    from lazyh5.write.assign import DONE_MARKS, DONE_MARKS_LAYOUT

    path = tmp_path / "inplace.h5"
    _assign_source(path)
    with h5py.File(path, "r") as f:
        x0, y0 = f["x"][()], f["y"][()]
    proc = subprocess.Popen([sys.executable, "-c", _ASSIGN, str(path)])
    try:  # kill once some blocks are marked done: it cannot finish, it waits
        _wait_for(lambda: _marks_on_disk(path) >= 5, "5 blocks marked done", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    # The file opens (through lazyh5 too), the untouched variable is intact.
    ds = lazyh5.open_dataset(path)
    np.testing.assert_array_equal(ds["y"].values, y0)
    assert ds["x"].attrs["units"] == "m"
    ds.close()
    with h5py.File(path, "r") as f:
        x1 = f["x"][()]
        layout = json.loads(f["x"].attrs[DONE_MARKS_LAYOUT])
        marks = f["x"].attrs[DONE_MARKS]
    sizes = layout["blocks"][0]
    assert layout["blocks"][1] == [WIDTH] and sum(sizes) == ROWS and len(marks) == len(sizes)
    assert layout["selection"] == [[0, ROWS, 1], [0, WIDTH, 1]]

    state = []  # per block: "old", "new" or "mixed"
    start = 0
    for n in sizes:
        old = x1[start : start + n] == x0[start : start + n]
        new = x1[start : start + n] == x0[start : start + n] + 1
        state.append("old" if old.all() else "new" if new.all() else "mixed")
        assert (old | new).all()  # every value is the old one or the new one
        start += n
    state = np.array(state)
    marked = marks.astype(bool)
    # It was killed midway, and the marks say how far it got: every marked block is
    # wholly new. A new block may lack its mark if its thread was killed between
    # writing it and recording it (one per thread: 2), or if it was the last recorded
    # (a mark reaches the disk with the next block's flush): at most 3.
    assert 0 < marked.sum() < len(sizes)
    assert (state[marked] == "new").all()
    assert ((state == "new") & ~marked).sum() <= 3
    # Blocks are written whole: only the block being written at the kill may be mixed.
    assert (state == "mixed").sum() <= 1
    assert not marked[state == "mixed"].any()


def test_completed_assignment_leaves_no_progress_marks(tmp_path):
    from lazyh5.write.assign import DONE_MARKS, DONE_MARKS_LAYOUT

    path = tmp_path / "inplace.h5"
    _assign_source(path)
    with h5py.File(path, "r") as f:
        x0 = f["x"][()]
    with lazyh5.set_options(memory_budget="1KiB"):
        ds = lazyh5.open_dataset(path, mode="r+")
        ds["x"].h5[:] = ds["x"] * 2  # lazy, in place, 300 blocks
        ds["y"].h5[:] = np.ones(ROWS, dtype="i8")  # numpy value
        ds.close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][()], x0 * 2)
        for name in ("x", "y"):
            assert DONE_MARKS not in f[name].attrs
            assert DONE_MARKS_LAYOUT not in f[name].attrs


# -- SIGKILL during create of a large file -----------------------------------------

_CREATE_LARGE = textwrap.dedent(
    """
    import sys, lazyh5
    # 3,000 datasets of 400 MB each (1.2 TB declared, chunks allocated on first write).
    variables = {f"v{i:04d}": ((100_000, 1000), "f4") for i in range(3000)}
    print("start", flush=True)
    lazyh5.create(sys.argv[1], variables, compression="gzip", fillvalue=1.0)
    print("done", flush=True)
    """
)


def test_sigkill_during_create_of_a_large_file(tmp_path):
    path = tmp_path / "large.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CREATE_LARGE, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "start"
    # Kill while the layout is being written: the temporary file shows it has begun.
    try:
        _wait_for(lambda: list(tmp_path.glob(".large.h5.*.tmp")), "temporary file", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed before it finished
    assert not path.exists()  # nothing that looks finished
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(name.startswith(".large.h5.") and name.endswith(".tmp") for name in leftovers)
