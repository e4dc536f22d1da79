"""The prefetch thread stops when iteration is abandoned: break, GC, errors, Ctrl-C, exit."""

from __future__ import annotations

import gc
import textwrap

import h5py
import numpy as np
import pytest

import lazyh5
from tests._process import prefetch_threads, run_until_exit, wait_for_prefetch_threads


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "threads.h5"
    n = 4000
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=np.arange(n * 8, dtype="f4").reshape(n, 8), chunks=(50, 8))
        f.create_dataset("y", data=np.arange(n), chunks=(50,))
    return p


def _loader(path, **kwargs):
    ds = lazyh5.open_dataset(path)
    return lazyh5.BatchLoader(ds, "x", "y", batch_size=10, block_size="4KiB", seed=0, **kwargs)


def test_the_end_of_the_epoch_stops_the_thread(path):
    loader = _loader(path)
    it = iter(loader)
    next(it)
    assert prefetch_threads()
    assert sum(len(y) for _, y in it) == 4000 - 10  # the rest of the epoch
    assert not wait_for_prefetch_threads()


def test_break_stops_the_thread(path):
    loader = _loader(path)
    for i, _ in enumerate(loader):
        assert prefetch_threads()  # the background thread runs while we iterate
        if i == 3:
            break
    assert not wait_for_prefetch_threads()


def test_garbage_collected_iterator_stops_the_thread(path):
    loader = _loader(path)
    it = iter(loader)
    next(it)
    assert prefetch_threads()
    del it
    gc.collect()
    assert not wait_for_prefetch_threads()


def test_keyboard_interrupt_in_the_loop_stops_the_thread(path):
    loader = _loader(path)
    with pytest.raises(KeyboardInterrupt):
        for i, _ in enumerate(loader):
            if i == 2:
                raise KeyboardInterrupt
    gc.collect()
    assert not wait_for_prefetch_threads()


def test_an_exception_in_the_loop_stops_the_thread(path):
    loader = _loader(path)
    with pytest.raises(ValueError, match="in the training step"):
        for i, _ in enumerate(loader):
            if i == 2:
                raise ValueError("in the training step")
    gc.collect()
    assert not wait_for_prefetch_threads()


def test_error_while_reading_reaches_the_consumer(path):
    ds = lazyh5.open_dataset(path, chunks={})  # dask chunks = HDF5 chunks of 50 rows

    def broken(block):
        if block.shape[0] and block[0, 0] >= 800:  # fails on a later block, not the first
            raise RuntimeError("bad block")
        return block

    ds["x"] = ds["x"].copy(data=ds["x"].data.map_blocks(broken, dtype="f4"))
    loader = lazyh5.BatchLoader(
        ds, "x", "y", batch_size=10, block_size="4KiB", shuffle=False, start=0, end=100
    )
    assert len(list(loader)) == 10  # rows below 100 are fine
    bad = lazyh5.BatchLoader(ds, "x", "y", batch_size=10, block_size="4KiB", shuffle=False)
    with pytest.raises(RuntimeError, match="bad block"):
        list(bad)
    assert not wait_for_prefetch_threads()


def test_many_abandoned_epochs_leave_no_threads(path):
    loader = _loader(path)
    for _ in range(20):
        it = iter(loader)
        next(it)
        del it
    gc.collect()
    assert not wait_for_prefetch_threads()


_CHILD = textwrap.dedent(
    """
    import sys, time, lazyh5
    ds = lazyh5.open_dataset(sys.argv[1], chunks={})
    slow = ds["x"].data.map_blocks(lambda b: (time.sleep(0.05), b)[1], dtype="f4")
    ds["x"] = ds["x"].copy(data=slow)
    loader = lazyh5.BatchLoader(ds, "x", "y", batch_size=10, block_size="4KiB", seed=0)
    it = iter(loader)
    next(it)
    print("started", flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)  # leaves the epoch half read, the thread mid-compute
    for _ in it:
        time.sleep(0.01)
    """
)


@pytest.mark.parametrize("how", ["exit", "sigint"])
def test_process_exits_promptly_with_an_epoch_in_flight(path, how):
    returncode, err = run_until_exit(_CHILD, path, how, pause=0.2)
    if how == "exit":
        assert returncode == 0, err
    else:
        assert returncode != 0 and "KeyboardInterrupt" in err


_READERS = textwrap.dedent(
    """
    import sys, threading, time, lazyh5
    ds = lazyh5.open_dataset(sys.argv[1])
    loader = lazyh5.BatchLoader(ds, "x", "y", batch_size=64, shuffle=True, seed=0)
    done = [0, 0, 0]

    def batches(k):  # what Keras' or tf.data's threads do with a PyDataset
        for i in range(10**9):
            loader._read_batch(0, i % len(loader))
            done[k] += 1

    def rows(k):
        for i in range(10**9):
            ds["z"][i % 3900 : i % 3900 + 3].values
            done[k] += 1

    for k, target in enumerate((batches, batches, rows)):
        threading.Thread(target=target, args=(k,), daemon=True).start()
    while min(done) < 3:  # every thread reading
        time.sleep(0.01)
    print("started", flush=True)
    """
)


def test_process_exits_while_other_threads_read(tmp_path):
    """Threads not lazyh5's (Keras', tf.data's) still reading when Python exits: they
    must not be inside h5py when it finalizes (seen: a hang in 9 of 10 exits, and a
    segfault in HDF5)."""
    path = tmp_path / "readers.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "x", data=np.random.default_rng(0).random((4000, 64), "f4"), chunks=(100, 64)
        )
        f.create_dataset("y", data=np.arange(4000), chunks=(100,))
        f.create_dataset("z", data=np.ones((4000, 64), ">f8"), chunks=(100, 64), compression="gzip")
    for _ in range(3):
        returncode, err = run_until_exit(_READERS, path, "exit", pause=0)
        assert returncode == 0, err
