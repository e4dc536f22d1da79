"""Shared fixtures: small real HDF5 files written with plain h5py."""

from __future__ import annotations

import signal

import h5py
import numpy as np
import pytest


@pytest.fixture
def seed_file(tmp_path):
    """A plain h5py file: image (1000, 32, 32, 3) float32 + label (1000,), no dimension scales."""
    path = tmp_path / "seed.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "image",
            data=rng.random((1000, 32, 32, 3), dtype=np.float32),
            chunks=(100, 32, 32, 3),
        )
        f.create_dataset("label", data=np.arange(1000) % 10, chunks=(250,))
        f["image"].attrs["units"] = "intensity"
        f.attrs["title"] = "seed"
    return path


def pytest_configure(config: pytest.Config) -> None:
    # Started as a background job (`... &` in a script, some CI runners), the shell
    # ignores SIGINT and Python then installs no KeyboardInterrupt handler: the Ctrl-C
    # tests' _thread.interrupt_main does nothing, and their child processes inherit the
    # ignored signal. A handled SIGINT here is reset to the default in every child.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
