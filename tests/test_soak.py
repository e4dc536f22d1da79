"""Load and soak: many epochs, several loaders on one file, repeated open/close, Ctrl-C.

Each test runs for a share of ``LAZYH5_SOAK_SECONDS`` (default 20: the CI run) and
checks that nothing accumulates: open file descriptors (``/proc/self/fd``), resident
memory, prefetch threads. ``LAZYH5_SOAK_SECONDS=600 pytest -m soak`` soaks for minutes.

Memory: the baseline is taken after a warm-up (the first third of each test's time,
at least 3 rounds), not after round 1. glibc gives threads their own malloc arenas,
and every prefetch or reader thread that touches a block warms one up: with four
loaders in threads RSS rose 156 -> 215 MiB over the first ~15 rounds and then stayed
flat for the next 25 (measured, CPython 3.11). After the warm-up, the loaders hold at
most ``window + prefetch + 1`` blocks of <= 2 MiB each; a leak of one block per epoch
would add >= 0.25 MiB per round, i.e. tens of MiB over the hundreds of rounds a test
runs, and a leaked thread or file handle is caught exactly (thread and fd counts).
``RSS_TOLERANCE`` (24 MiB) is well above the post-warm-up noise (< 4 MiB measured).
"""

from __future__ import annotations

import _thread
import gc
import os
import random
import textwrap
import threading
import time
from collections.abc import Callable

import h5py
import numpy as np
import psutil
import pytest

import lazyh5
from tests._process import run_until_exit, wait_for_prefetch_threads

pytestmark = pytest.mark.soak

SECONDS = float(os.environ.get("LAZYH5_SOAK_SECONDS", "20"))
RSS_TOLERANCE = 24 * 2**20
ROWS, WIDTH = 8192, 256  # x: 8 MiB of float32, rows of 1 KiB


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    p = tmp_path_factory.mktemp("soak") / "soak.h5"
    rng = np.random.default_rng(0)
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=rng.random((ROWS, WIDTH), dtype=np.float32), chunks=(256, WIDTH))
        f.create_dataset("y", data=np.arange(ROWS, dtype=np.int64), chunks=(1024,))
    return p


def _fds() -> int:
    # Collected first: files left open by garbage of earlier tests (reference cycles)
    # would otherwise close mid-soak and read as a change.
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def _soak(round_: Callable[[], None], share: float, min_rounds: int) -> tuple[int, int, int]:
    """Run ``round_`` for ``share`` of ``SECONDS`` (and at least ``min_rounds`` times).

    Returns the number of rounds and the fd count and RSS after the warm-up.
    """
    start = time.monotonic()
    warm_until, end = start + SECONDS * share / 3, start + SECONDS * share
    rounds, baseline = 0, None
    while time.monotonic() < end or rounds < min_rounds:
        round_()
        rounds += 1
        if baseline is None and rounds >= 3 and time.monotonic() >= warm_until:
            baseline = (_fds(), _rss())
    if baseline is None:
        baseline = (_fds(), _rss())
    return rounds, *baseline


def _check_no_growth(rounds: int, fds: int, rss: int) -> None:
    assert not wait_for_prefetch_threads(), "prefetch threads left running"
    assert _fds() == fds, f"open files: {fds} after warm-up, {_fds()} after {rounds} rounds"
    grown = _rss() - rss
    assert grown < RSS_TOLERANCE, f"RSS grew {grown / 2**20:.1f} MiB by round {rounds}"


def _check_epoch(loader: lazyh5.BatchLoader) -> None:
    """One full epoch: every row exactly once, x matching y."""
    seen = []
    for x, y in loader:
        assert len(x) == len(y) and x.shape[1:] == (WIDTH,)
        seen.append(y)
    rows = np.concatenate(seen)
    assert np.array_equal(np.sort(rows), np.arange(loader.start, loader.end))


def test_many_epochs_with_prefetch(path):
    ds = lazyh5.open_dataset(path)
    loader = lazyh5.BatchLoader(
        ds, "x", "y", batch_size=100, block_size="1MiB", prefetch=3, window=2, seed=0
    )
    _check_no_growth(*_soak(lambda: _check_epoch(loader), 0.3, 10))
    ds.close()


def test_several_loaders_on_one_file(path):
    """Loaders on one Dataset and on a second one of the same file, interleaved and in
    threads at the same time (each thread with its own loader and prefetch thread)."""
    ds1, ds2 = lazyh5.open_dataset(path), lazyh5.open_dataset(path)
    train, val = lazyh5.BatchLoader(ds1, "x", "y", batch_size=64, block_size="1MiB", seed=1).split(
        0.75
    )
    loaders = [
        train,
        val,
        lazyh5.BatchLoader(ds1, "x", "y", batch_size=33, block_size="512KiB", shuffle=False),
        lazyh5.BatchLoader(ds2, "x", "y", batch_size=128, block_size="2MiB", seed=2),
    ]

    def interleaved() -> None:  # one batch from each in turn, all epochs in flight
        its = [iter(loader) for loader in loaders]
        seen: list[list[np.ndarray]] = [[] for _ in loaders]
        active = set(range(len(its)))
        while active:
            for i in sorted(active):
                batch = next(its[i], None)
                if batch is None:
                    active.discard(i)
                else:
                    seen[i].append(batch[1])
        for loader, ys in zip(loaders, seen, strict=True):
            rows = np.sort(np.concatenate(ys))
            assert np.array_equal(rows, np.arange(loader.start, loader.end))

    def threaded() -> None:
        errors: list[BaseException] = []

        def run(loader):
            try:
                _check_epoch(loader)
            except BaseException as err:  # reported by the main thread
                errors.append(err)

        threads = [threading.Thread(target=run, args=(loader,)) for loader in loaders]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors

    def both() -> None:
        interleaved()
        threaded()

    _check_no_growth(*_soak(both, 0.25, 6))
    ds1.close()
    ds2.close()


def test_repeated_open_and_close(path):
    """Open, read a little, close — through every entry point — many times."""

    def once() -> None:
        ds = lazyh5.open_dataset(path)
        loader = lazyh5.BatchLoader(ds, "x", "y", batch_size=50, block_size="1MiB", seed=0)
        for i, _ in enumerate(loader):  # abandon the epoch partway
            if i == 3:
                break
        ds.close()
        tree = lazyh5.open_datatree(path)
        assert float(tree["x"][0, 0]) >= 0
        tree.close()
        m = lazyh5.HDF5Matrix(path, "y", start=100, end=200)
        assert int(m[0]) == 100
        m.close()

    _check_no_growth(*_soak(once, 0.2, 20))


def test_ctrl_c_at_random_moments(path):
    """KeyboardInterrupt raised in the main thread at arbitrary points of iteration
    (inside the queue wait, the batch slicing, the prefetcher's shutdown...), many
    times: no prefetch thread survives it, and the next epoch is complete."""
    ds = lazyh5.open_dataset(path, chunks={})
    slow = ds["x"].data.map_blocks(lambda b: (time.sleep(0.002), b)[1], dtype="f4")
    ds["x"] = ds["x"].copy(data=slow)
    loader = lazyh5.BatchLoader(ds, "x", "y", batch_size=64, block_size="256KiB", seed=0)
    rng = random.Random(0)
    interrupts = [0]

    def interrupted_epoch() -> None:
        timer = threading.Timer(rng.uniform(0.0, 0.15), _thread.interrupt_main)
        timer.start()
        try:
            for _ in loader:
                pass
            time.sleep(0.2)  # a late interrupt lands here, outside the loader
        except KeyboardInterrupt:
            interrupts[0] += 1
        finally:
            timer.cancel()
            timer.join()
        # Found this way: Ctrl-C inside Thread.start() left a thread blocked for ever.
        assert not wait_for_prefetch_threads(), "a prefetch thread survived the interrupt"

    rounds, fds, rss = _soak(interrupted_epoch, 0.2, 10)
    assert interrupts[0] > 0
    _check_epoch(loader)
    _check_no_growth(rounds, fds, rss)
    ds.close()


_CHILD = textwrap.dedent(
    """
    import sys, threading, time, lazyh5
    ds = lazyh5.open_dataset(sys.argv[1], chunks={})
    slow = ds["x"].data.map_blocks(lambda b: (time.sleep(0.05), b)[1], dtype="f4")
    ds["x"] = ds["x"].copy(data=slow)
    its = []
    for seed in range(4):  # four loaders, each mid-epoch with its prefetch thread busy
        loader = lazyh5.BatchLoader(ds, "x", "y", batch_size=10, block_size="256KiB", seed=seed)
        it = iter(loader)
        next(it)
        its.append(it)
    # and one more iterated by another thread of the program
    worker = threading.Thread(target=lambda: [None for _ in loader], daemon=True)
    worker.start()
    print("started", flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)
    while True:
        for it in its:
            next(it)
    """
)


@pytest.mark.parametrize("how", ["exit", "sigint"])
def test_process_with_several_loaders_exits_promptly(path, how):
    # A process that hangs at exit fails in run_until_exit (killed after 30 s).
    returncode, err = run_until_exit(_CHILD, path, how, pause=0.3)
    if how == "exit":
        assert returncode == 0, err
    else:
        assert returncode != 0 and "KeyboardInterrupt" in err, err
