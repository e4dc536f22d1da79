"""A process killed while lazyh5 creates a file never leaves a finished-looking file."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

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


def _kill_during_create(path, mode):
    proc = subprocess.Popen(
        [sys.executable, "-c", _CREATE_MANY, str(path), mode], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "start"
    time.sleep(1.5)  # well inside the create (tens of seconds for 20,000 datasets)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_during_create_leaves_no_file(tmp_path):
    path = tmp_path / "new.h5"
    _kill_during_create(path, "w-")
    assert not path.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(name.startswith(".new.h5.") and name.endswith(".tmp") for name in leftovers)


def test_sigkill_during_replace_keeps_old_file(tmp_path, seed_file):
    before = seed_file.read_bytes()
    _kill_during_create(seed_file, "w")
    assert seed_file.read_bytes() == before
    ds = lazyh5.open_dataset(seed_file)
    np.testing.assert_array_equal(ds["label"].values, np.arange(1000) % 10)
