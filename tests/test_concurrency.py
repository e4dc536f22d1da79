"""Several reader processes and one writer process on one file, all real processes.

Every chunk holds one value per write ("generation"), so a reader can tell whether a
chunk it read is wholly one write or torn between two.

- Default locking (what lazyh5 does): a lazyh5 writer (``h5[...] = ...``) holds the
  file exclusively while it is open; readers get :class:`FileBusyError` meanwhile and
  otherwise see a whole generation: every chunk, and every chunk alike.
- SWMR: a SWMR writer (h5py; lazyh5 reads SWMR files but does not write them) appends
  chunks while lazyh5 readers poll: every chunk a reader sees is complete, or not yet
  written (the fill value) when the extent grew first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5.errors import FileBusyError

R, C, CHUNKS = 40, 64, 6  # rows per HDF5 chunk, columns, chunks
GENERATIONS = 24
SWMR_CHUNKS = 30


# Rewrites every chunk GENERATIONS times through lazyh5, one open/close per
# generation, chunk by chunk (one assignment per chunk, alternately a lazy in-place
# expression and a scalar), so a reader let in mid-generation would see torn data.
# Halfway it waits, file closed, until a reader has seen that generation.
WRITER = textwrap.dedent(
    f"""
    import os, sys, time
    import dask, lazyh5
    from lazyh5.errors import FileBusyError
    path, seen = sys.argv[1], sys.argv[2]
    R, CHUNKS, GENERATIONS = {R}, {CHUNKS}, {GENERATIONS}

    def wait_until_seen():  # until a reader has seen this state (60 s at most)
        deadline = time.monotonic() + 60
        while not os.path.exists(seen):
            assert time.monotonic() < deadline, "no reader saw the state in between"
            time.sleep(0.005)

    def open_rw():
        deadline = time.monotonic() + 60
        while True:
            try:
                return lazyh5.open_dataset(path, mode="r+", chunks={{"sample": R}})
            except FileBusyError:  # readers hold the file: wait for a gap
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.002)

    print("ready", flush=True)
    sys.stdin.readline()
    with dask.config.set(scheduler="threads"):
        for g in range(1, GENERATIONS + 1):
            ds = open_rw()
            for k in range(CHUNKS):
                rows = slice(k * R, (k + 1) * R)
                if g % 2:
                    ds["x"].h5[rows] = ds["x"][rows] + 1
                else:
                    ds["x"].h5[rows] = float(g)
                time.sleep(0.001)
            ds.close()
            if g == GENERATIONS // 2:
                wait_until_seen()
    print("done", flush=True)
    sys.stdin.readline()
    ds = open_rw()  # hold the file open for writing until told to go on
    print("holding", flush=True)
    sys.stdin.readline()
    ds.close()
    print("closed", flush=True)
    """
)

# Reads the whole file through lazyh5 until the stop file exists, then once more. The
# first time it sees a state in between (a generation, or a length for SWMR), it
# creates the file ``seen``.
READER = textwrap.dedent(
    f"""
    import json, os, random, sys, time
    import numpy as np, lazyh5
    from lazyh5.errors import FileBusyError
    path, stop, swmr, seen = sys.argv[1], sys.argv[2], sys.argv[3] == "swmr", sys.argv[4]
    R, C, GENERATIONS, SWMR_CHUNKS = {R}, {C}, {GENERATIONS}, {SWMR_CHUNKS}
    kwargs = {{"file_kwargs": {{"swmr": True}}}} if swmr else {{}}
    out = {{"reads": [], "busy": 0, "errors": []}}

    def read():
        try:
            ds = lazyh5.open_dataset(path, **kwargs)
        except FileBusyError:
            out["busy"] += 1
            return False
        try:
            v = ds["x"].values
        finally:
            ds.close()
        # one entry per chunk: its value if the chunk is uniform, else "torn"
        chunks = v.reshape(-1, R, C)
        uniform = (chunks == chunks[:, :1, :1]).all(axis=(1, 2))
        got = [float(c[0, 0]) if u else "torn" for c, u in zip(chunks, uniform)]
        out["reads"].append(got)
        if swmr:
            between = 1 < len(got) < SWMR_CHUNKS
        else:
            between = len(set(got)) == 1 and got[0] != "torn" and 0 < got[0] < GENERATIONS
        if between and not os.path.exists(seen):
            open(seen, "w").close()
        return True

    print("ready", flush=True)
    give_up = time.monotonic() + 90
    while not os.path.exists(stop) and time.monotonic() < give_up:
        try:
            read()
        except Exception as err:  # anything but FileBusyError is a failure
            out["errors"].append(repr(err))
        time.sleep(random.uniform(0, 0.01))
    deadline = time.monotonic() + 30
    while not read() and time.monotonic() < deadline:
        time.sleep(0.01)
    print(json.dumps(out), flush=True)
    """
)

# A SWMR writer (plain h5py, the documented way): appends chunk k with the value k,
# flushing after each, while readers poll. Halfway it waits until a reader has seen
# the file at that length.
SWMR_WRITER = textwrap.dedent(
    f"""
    import os, sys, time
    import h5py, numpy as np
    path, seen = sys.argv[1], sys.argv[2]
    R, C, N = {R}, {C}, {SWMR_CHUNKS}

    def wait_until_seen():  # until a reader has seen this state (60 s at most)
        deadline = time.monotonic() + 60
        while not os.path.exists(seen):
            assert time.monotonic() < deadline, "no reader saw the state in between"
            time.sleep(0.005)
    f = h5py.File(path, "w", libver="latest")
    d = f.create_dataset("x", (0, C), "f4", maxshape=(None, C), chunks=(R, C),
                         fillvalue=-1, compression="gzip", shuffle=True)
    f.swmr_mode = True
    d.resize((R, C)); d[:] = 0; d.flush()
    print("ready", flush=True)
    sys.stdin.readline()
    for k in range(1, N):
        d.resize(((k + 1) * R, C))
        d[k * R:] = np.full((R, C), k, "f4")
        d.flush()
        if k == N // 2:
            wait_until_seen()
    print("done", flush=True)
    sys.stdin.readline()
    f.close()
    """
)


class Proc:
    """A Python subprocess that reports progress one line at a time."""

    def __init__(self, code: str, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, word: str) -> str:
        line = self.proc.stdout.readline().strip()
        if line != word:
            self.proc.kill()
            raise AssertionError(f"expected {word!r}, got {line!r}: {self.proc.stderr.read()}")
        return line

    def go_on(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def result(self) -> str:
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _run_readers(path, stop, writer, n, swmr=False):
    seen = str(stop.with_name("seen"))
    readers = [Proc(READER, str(path), str(stop), "swmr" if swmr else "-", seen) for _ in range(n)]
    try:
        for r in readers:
            r.expect("ready")
        writer.go_on()
        writer.expect("done")
        stop.touch()
        return [json.loads(r.result()) for r in readers]
    finally:
        for r in readers:
            r.kill()


def test_readers_see_whole_generations_while_a_lazyh5_writer_rewrites(tmp_path):
    path = tmp_path / "shared.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros((CHUNKS * R, C), "f4"), chunks=(R, C))
    writer = Proc(WRITER, str(path), str(tmp_path / "seen"))
    try:
        writer.expect("ready")
        results = _run_readers(path, tmp_path / "stop", writer, n=3)

        seen = set()
        for res in results:
            assert res["errors"] == []  # only FileBusyError, never another failure
            assert res["reads"], res
            gens = []
            for chunks in res["reads"]:
                # No torn chunk, and no read mixing generations: the writer holds the
                # file exclusively from opening to closing.
                assert "torn" not in chunks and len(set(chunks)) == 1, chunks
                gens.append(chunks[0])
            assert gens == sorted(gens)  # a reader never goes back in time
            assert gens[-1] == GENERATIONS  # the read after the writer closed
            seen.update(gens)
        assert seen <= set(range(GENERATIONS + 1))
        assert seen & set(range(1, GENERATIONS)), seen  # a generation in between was read

        # While the writer holds the file: a clear lazyh5 error, and no data.
        writer.go_on()
        writer.expect("holding")
        with pytest.raises(FileBusyError, match="locked by another process"):
            lazyh5.open_dataset(path)
        writer.go_on()
        writer.expect("closed")
        writer.result()
    finally:
        writer.kill()
    ds = lazyh5.open_dataset(path)  # and succeeds once it has closed
    np.testing.assert_array_equal(ds["x"].values, np.full((CHUNKS * R, C), GENERATIONS, "f4"))
    ds.close()


def test_swmr_readers_see_whole_chunks_while_a_swmr_writer_appends(tmp_path):
    path = tmp_path / "swmr.h5"
    writer = Proc(SWMR_WRITER, str(path), str(tmp_path / "seen"))
    try:
        writer.expect("ready")
        results = _run_readers(path, tmp_path / "stop", writer, n=2, swmr=True)
        writer.go_on()
        writer.result()
    finally:
        writer.kill()
    for res in results:
        assert res["errors"] == [] and res["busy"] == 0  # SWMR readers are never refused
        lengths = [len(chunks) for chunks in res["reads"]]
        assert lengths == sorted(lengths)  # the file only grows
        assert lengths[-1] == SWMR_CHUNKS
        for chunks in res["reads"]:
            # Each chunk is complete (its value is its index) or, when the extent grew
            # before the chunk was written, wholly the fill value; never torn.
            for k, value in enumerate(chunks):
                assert value in (k, -1.0), chunks
        assert res["reads"][-1] == list(range(SWMR_CHUNKS))
    # some reader saw the file partly written (the writer waited for one to)
    assert any(1 < len(r) < SWMR_CHUNKS for res in results for r in res["reads"])


# A lazyh5 writer with HDF5's file locking turned off: it rewrites half the chunks,
# then waits (file open) until told to go on.
HALF_WRITER = textwrap.dedent(
    f"""
    import sys, lazyh5
    ds = lazyh5.open_dataset(sys.argv[1], mode="r+", chunks={{"sample": {R}}})
    for k in range({CHUNKS} // 2):
        ds["x"].h5[k * {R}:(k + 1) * {R}] = 1.0
    print("half", flush=True)
    sys.stdin.readline()
    ds.close()
    """
)


def test_without_file_locking_a_reader_sees_a_write_half_done(tmp_path):
    path = tmp_path / "unlocked.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros((CHUNKS * R, C), "f4"), chunks=(R, C))
    env = {**os.environ, "HDF5_USE_FILE_LOCKING": "FALSE"}
    writer = subprocess.Popen(
        [sys.executable, "-c", HALF_WRITER, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert writer.stdout.readline().strip() == "half"
        ds = lazyh5.open_dataset(path)  # not refused: the writer holds no lock
        chunks = ds["x"].values.reshape(CHUNKS, R, C)[:, 0, 0].tolist()
        ds.close()
        half = CHUNKS // 2
        assert chunks == [1.0] * half + [0.0] * (CHUNKS - half)  # one read, two states
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
        writer.wait()
