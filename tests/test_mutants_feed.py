"""The loader's plans, orders, shards and buffers, pinned down by mutants that survived.

Every check is on what a caller sees: the rows of each batch (files whose rows say
where they are: ``image[i] == label[i] == i``), the blocks of ``loader.plan``, and the
memory the loader keeps (the arrays behind its batches).
"""

from __future__ import annotations

import gc
import weakref

import h5py
import numpy as np

import lazyh5
from lazyh5 import BatchLoader


def _root(a: np.ndarray) -> np.ndarray:
    """The array that owns a batch's memory."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _owners(batches) -> tuple[int, list[weakref.ref]]:
    """How many arrays owned the batches' memory, and weak references to them."""
    refs: list[weakref.ref] = []
    for batch in batches:
        root = _root(batch)
        if not any(r() is root for r in refs):
            refs.append(weakref.ref(root))
        del batch, root  # the loader may reuse the memory once the batch is dropped
    return len(refs), refs


def test_block_memory_is_reused_and_bounded(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(ds, "image", batch_size=64, shuffle=False, prefetch=2, block_size="4KiB")
    blocks = len(loader.plan)
    assert blocks >= 20
    # batches dropped as they come: a handful of block buffers serve the whole epoch
    owners, refs = _owners(loader.batches(0))
    assert owners <= loader.prefetch + 4 < blocks
    # again, shuffled (windows of 3 blocks): still the same few
    shuffled = BatchLoader(
        ds, "image", batch_size=64, seed=0, window=3, prefetch=2, block_size="4KiB"
    )
    assert _owners(shuffled.batches(0))[0] <= shuffled.prefetch + 4
    gc.collect()
    kept = [r for r in refs if r() is not None]
    assert 1 <= len(kept) <= loader.prefetch + 4  # the pool keeps its buffers, no more


def test_held_batches_are_never_overwritten_and_the_pool_stays_bounded(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(ds, "image", batch_size=64, shuffle=False, prefetch=2, block_size="4KiB")
    held = list(loader.batches(0))
    # every batch kept its own rows although the epoch went on
    np.testing.assert_array_equal(
        np.concatenate(held)[:, 0, 0], np.arange(2000, dtype="f4"), strict=True
    )
    owners, refs = _owners(held)
    assert owners == len(held)  # none shares memory with another
    del held
    gc.collect()
    # the pool keeps at most (prefetch + 4) buffers per variable once batches are gone
    assert len([r for r in refs if r() is not None]) == loader.prefetch + 4


def test_one_byte_rows_and_empty_rows(tmp_path):
    path = tmp_path / "bytes.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("b", data=np.arange(300, dtype="u1"), chunks=(1,))
        f.create_dataset("e", data=np.zeros((300, 0), "f4"))
    ds = lazyh5.open_dataset(path)
    got = np.concatenate(list(BatchLoader(ds, "b", batch_size=7, shuffle=False, block_size=1)))
    np.testing.assert_array_equal(got, np.arange(300, dtype="u1"), strict=True)
    empty = list(BatchLoader(ds, "e", batch_size=100, shuffle=False, block_size=1))
    assert [b.shape for b in empty] == [(100, 0)] * 3
