"""The loader's plans, orders, shards and buffers, pinned down by mutants that survived.

Every check is on what a caller sees: the rows of each batch (files whose rows say
where they are: ``image[i] == label[i] == i``), the blocks of ``loader.plan``, and the
memory the loader keeps (the arrays behind its batches).
"""

from __future__ import annotations

import contextlib
import gc
import json
import warnings
import weakref

import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr

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


def test_empty_arrays_take_no_buffer_and_one_byte_ones_do():
    from lazyh5.feed.buffers import Buffers

    pool = Buffers(limit=1)
    empty = pool.empty((0, 3), "f4")
    assert empty.shape == (0, 3) and empty.dtype == np.float32 and pool._held == []
    one = pool.empty((1,), "u1")
    assert one.base is pool._held[0] and pool._held[0].nbytes == 1
    del one
    again = pool.empty((1, 1), "i1")  # the same byte, reused
    assert again.base is pool._held[0] and again.shape == (1, 1) and again.dtype == np.int8


def test_the_smallest_free_buffer_is_taken_wherever_it_is_in_the_pool():
    from lazyh5.feed.buffers import Buffers

    pool = Buffers(limit=3)
    small, big = pool.empty((10,), "u1"), pool.empty((1000,), "u1")
    del small, big
    a = pool.empty((8,), "u1")  # fits both: the small one, first in the pool
    assert a.base is pool._held[0] and pool._held[0].nbytes == 10
    b = pool.empty((9,), "u1")  # the small one is in use: the big one
    assert b.base is pool._held[1] and len(pool._held) == 2


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


def _rows(batches) -> np.ndarray:
    """The file rows of an epoch's batches (``label[i] == i``)."""
    return np.concatenate([np.asarray(b) for b in batches]).astype(np.int64)


def _bounds(plan) -> list[int]:
    return [*plan.starts.tolist(), int(plan.stops[-1])]


# -- block plans -----------------------------------------------------------------------
# feed.h5: 2000 rows, image 64 B/row and label 8 B/row, both in 64-row HDF5 chunks


@pytest.mark.parametrize(
    ("kwargs", "bounds"),
    [
        ({"block_size": "16KiB"}, [*range(0, 2000, 256), 2000]),  # 256 rows of 64 B
        ({"block_size": "1KiB"}, [*range(0, 2000, 64), 2000]),  # never under a chunk
        ({"block_size": "16KiB", "start": 10, "end": 1990}, [10, *range(256, 1990, 256), 1990]),
        ({"block_size": "16KiB", "start": 256, "end": 768}, [256, 512, 768]),
        ({"block_size": "16KiB", "y": "label"}, [*range(0, 2000, 192), 2000]),  # 72 B/row
        ({"block_size": "4000B"}, [*range(0, 2000, 64), 2000]),  # 62 rows: one chunk
        ({"block_size": "8191B"}, [*range(0, 2000, 64), 2000]),  # 127 rows: one chunk
        ({"block_size": "8192B"}, [*range(0, 2000, 128), 2000]),  # 128 rows: two
    ],
)
def test_blocks_are_runs_of_whole_chunks(feed_file, kwargs, bounds):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(ds, "image", shuffle=False, **kwargs)
    assert _bounds(loader.plan) == bounds
    fed = sum(len(b[0] if isinstance(b, tuple) else b) for b in loader.batches(0))
    assert loader.plan.rows == bounds[-1] - bounds[0] == fed


def test_blocks_of_a_view_fall_on_the_file_chunks(feed_file):
    ds = lazyh5.open_dataset(feed_file).isel(sample=slice(100, None))
    loader = BatchLoader(ds, "image", "label", shuffle=False, block_size="8KiB")
    # 8 KiB / 72 B = 113 rows: one 64-row chunk per block, edges at file rows 64k
    assert _bounds(loader.plan) == [0, 28, *range(92, 1900, 64), 1900]
    x = np.concatenate([b[0][:, 0, 0] for b in loader.batches(0)])
    np.testing.assert_array_equal(x, np.arange(100, 2000, dtype="f4"), strict=True)


def test_blocks_follow_the_heaviest_variables_chunks(tmp_path):
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("big", data=np.zeros((1000, 16), "f4"), chunks=(100, 16))
        f.create_dataset("small", data=np.arange(1000), chunks=(30,))
    ds = lazyh5.open_dataset(path)
    for x, y in (("big", "small"), ("small", "big")):
        loader = BatchLoader(ds, x, y, shuffle=False, block_size="20KiB")
        # 20 KiB / (64 + 8) B = 284 rows: 2 chunks of big's 100 rows
        assert _bounds(loader.plan) == [*range(0, 1000, 200), 1000]


def test_computed_variables_are_planned_on_their_dask_chunks():
    x = da.arange(1000, chunks=((100, 100, 100, 300, 400),)).astype("f8")  # 8 B/row
    ds = xr.Dataset({"x": ("n", x)})
    with pytest.warns(UserWarning, match="computed by dask in chunks of up to 400"):
        loader = BatchLoader(ds, "x", shuffle=False, block_size=250 * 8, dim="n")
    # whole chunks up to 250 rows; bigger chunks cut into equal parts
    assert _bounds(loader.plan) == [0, 200, 300, 450, 600, 800, 1000]
    with pytest.warns(UserWarning, match="computed by dask in chunks of up to 400"):
        part = BatchLoader(ds, "x", shuffle=False, block_size=250 * 8, start=150, end=900, dim="n")
    assert _bounds(part.plan) == [150, 300, 450, 600, 750, 900]
    with pytest.warns(UserWarning, match="computed by dask in chunks of up to 400"):
        small = BatchLoader(ds, "x", shuffle=False, block_size=100 * 8, dim="n")
    assert _bounds(small.plan) == [*range(0, 1000, 100), 1000]
    got = _rows(small.batches(0))
    np.testing.assert_array_equal(got, np.arange(1000))


@pytest.mark.filterwarnings("ignore:.*computed by dask in chunks")
@pytest.mark.parametrize(
    ("chunks", "block_size", "bounds"),
    [
        # a first chunk bigger than a block is cut into equal parts from row 0
        ((400, 600), 250 * 8, [0, 200, 400, 600, 800, 1000]),
        # 2004 B / 8 B = 250.5 rows: blocks of at most 250 whole rows, so 3 parts of 501
        ((501, 499), 2004, [0, 167, 334, 501, 750, 1000]),
    ],
)
def test_computed_chunks_bigger_than_a_block_are_cut_in_equal_parts(chunks, block_size, bounds):
    ds = xr.Dataset({"x": ("n", da.arange(1000, chunks=(chunks,)).astype("f8"))})
    loader = BatchLoader(ds, "x", shuffle=False, block_size=block_size, dim="n")
    assert _bounds(loader.plan) == bounds
    np.testing.assert_array_equal(_rows(loader.batches(0)), np.arange(1000))


def test_an_elementwise_function_of_a_view_is_planned_on_the_file_chunks(feed_file):
    ds = lazyh5.open_dataset(feed_file).isel(sample=slice(100, None))
    ds = ds.assign(scaled=ds["image"].astype("f8") / 255)  # read from the view's rows
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no dask chunk is computed per block
        loader = BatchLoader(ds, "scaled", "label", shuffle=False, block_size="8KiB")
    # 8 KiB / (128 + 8) B = 60 rows: one 64-row chunk per block, edges at file rows 64k
    assert _bounds(loader.plan) == [0, 28, *range(92, 1900, 64), 1900]
    x = np.concatenate([b[0][:, 0, 0] for b in loader.batches(0)])
    np.testing.assert_allclose(x, np.arange(100, 2000) / 255, rtol=1e-12)


@pytest.mark.filterwarnings("ignore:.*computed by dask in chunks")
def test_a_view_fed_along_another_file_axis(tmp_path):
    path = tmp_path / "wide.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("m", data=np.arange(3000.0).reshape(10, 300), chunks=(2, 50))
    ds = lazyh5.open_dataset(path)
    # file row 3, its 300 columns fed as rows under the file's first dimension's name
    view = ds.isel(sample=3).rename(m_dim_1="sample")
    loader = BatchLoader(view, "m", shuffle=False, block_size="40B")
    bounds = _bounds(loader.plan)
    assert bounds[0] == 0 and bounds[-1] == 300 and max(np.diff(bounds)) <= 5
    np.testing.assert_array_equal(np.concatenate(list(loader.batches(0))), np.arange(900.0, 1200))


@pytest.mark.parametrize(
    ("fraction", "cut"),
    [
        *[(0.5, 1000), (0.51, 1024), (0.505, 1024), (0.3, 600), (0.033, 64), (0.99, 1984)],
        *[(0.97, 1920), (0.9705, 1941)],  # 20 rows (1%) off an edge: moved; 21: kept
    ],
)
def test_split_cuts_on_a_chunk_edge_within_one_percent(feed_file, fraction, cut):
    loader = BatchLoader(lazyh5.open_dataset(feed_file), "label", seed=0)
    train, val = loader.split(fraction)
    assert (train.start, train.end, val.start, val.end) == (0, cut, cut, 2000)
    assert train.shuffle and not val.shuffle
    assert sorted(_rows(train.batches(0))) == list(range(cut))


@pytest.mark.parametrize("fraction", [0, 1, -0.5, 1.5])
def test_split_refuses_fractions_outside_0_1(feed_file, fraction):
    loader = BatchLoader(lazyh5.open_dataset(feed_file), "label")
    with pytest.raises(lazyh5.errors.InvalidArgumentError, match="between 0 and 1"):
        loader.split(fraction)


# -- orders ----------------------------------------------------------------------------


def _loader(feed_file, **kwargs):
    kwargs = {"batch_size": 50, "block_size": "512B", "seed": 3, **kwargs}  # 64-row blocks
    return BatchLoader(lazyh5.open_dataset(feed_file), "label", **kwargs)


def _block_order(feed_file, **kwargs) -> list[int]:
    """The epoch's block order: the order blocks first appear in with window=1."""
    return list(dict.fromkeys(_rows(_loader(feed_file, window=1, **kwargs).batches(0)) // 64))


@pytest.mark.parametrize("window", [1, 3, 40])
def test_a_window_pools_whole_blocks_in_the_shared_block_order(feed_file, window):
    loader = _loader(feed_file, window=window)
    rows = _rows(loader.batches(0))
    assert sorted(rows) == list(range(2000))
    assert _bounds(loader.plan) == [*range(0, 2000, 64), 2000]
    order = _block_order(feed_file)
    sizes = [min(64, 2000 - 64 * b) for b in order]
    at = 0
    for w in range(0, len(order), window):
        n = sum(sizes[w : w + window])
        got = rows[at : at + n]
        assert sorted(set(got // 64)) == sorted(order[w : w + window])
        at += n
    # shuffled within a window: not in file order
    assert not all(np.diff(rows[:64]) > 0) or (window == 1 and len(set(rows[:64] // 64)) == 1)


def test_orders_are_the_same_per_seed_and_epoch_and_differ_otherwise(feed_file):
    a = _rows(_loader(feed_file).batches(0))
    assert np.array_equal(a, _rows(_loader(feed_file).batches(0)))
    assert not np.array_equal(a, _rows(_loader(feed_file).batches(1)))
    assert not np.array_equal(a, _rows(_loader(feed_file, seed=4).batches(0)))
    ordered = _rows(_loader(feed_file, shuffle=False, window=5).batches(0))
    np.testing.assert_array_equal(ordered, np.arange(2000))
    free = _rows(_loader(feed_file, seed=None).batches(0))
    assert sorted(free) == list(range(2000)) and not np.array_equal(free, np.arange(2000))


@pytest.mark.parametrize("mode", ["pad", "drop"])
@pytest.mark.parametrize("count", [1, 2, 3, 7])
@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_take_consecutive_runs_of_the_block_order(feed_file, mode, count, shuffle):
    shards = [
        _rows(_loader(feed_file, shard=(i, count), shard_batches=mode, shuffle=shuffle).batches(0))
        for i in range(count)
    ]
    per = 2000 // count if mode == "drop" else -(-2000 // count)
    assert [len(s) for s in shards] == [per] * count
    order = _block_order(feed_file, shuffle=shuffle)
    stream = np.concatenate([np.arange(64 * b, min(64 * b + 64, 2000)) for b in order])
    stream = np.concatenate([stream, stream])  # padding wraps to the epoch's first rows
    for i, rows in enumerate(shards):
        assert sorted(rows) == sorted(stream[i * per : (i + 1) * per])
        if not shuffle:
            np.testing.assert_array_equal(rows, stream[i * per : (i + 1) * per])
    if count > 1 and shuffle:  # shards draw their own permutations
        assert len({tuple(np.sort(s[:20]) % 64) for s in shards}) > 1


def test_random_access_batches_equal_the_stream(feed_file):
    for kwargs in ({}, {"shard": (1, 3)}, {"window": 2}, {"shuffle": False}):
        loader = _loader(feed_file, batch_size=47, **kwargs)
        stream = [np.asarray(b) for b in loader.batches(0)]
        for i in (0, 1, len(stream) // 2, len(stream) - 1):
            np.testing.assert_array_equal(np.asarray(loader._read_batch(0, i)), stream[i])
        resumed = [np.asarray(b) for b in loader.batches(0, start=5)]
        assert len(resumed) == len(stream) - 5
        for a, b in zip(resumed, stream[5:], strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("start", "end", "fraction", "cut"),
    [
        (0, 2000, 0.005, 10),  # the nearest edge (0) would leave no training rows
        (0, 1984, 0.995, 1974),  # the nearest edge (1984) would leave no validation rows
        (1000, 2000, 0.5, 1500),  # 1472 is 28 rows off: more than 1% of 1000 rows
        (1000, 2000, 0.53, 1536),  # 6 rows off: moved
    ],
)
def test_split_of_a_range_stays_inside_it(feed_file, start, end, fraction, cut):
    loader = BatchLoader(lazyh5.open_dataset(feed_file), "label", start=start, end=end)
    train, val = loader.split(fraction)
    assert (train.start, train.end, val.start, val.end) == (start, cut, cut, end)


def test_split_aligns_to_small_chunks_too(tmp_path):
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(1000), chunks=(2,))
    loader = BatchLoader(lazyh5.open_dataset(path), "x")
    assert loader.split(0.501)[0].end == 500  # 501 is mid-chunk


def test_blocks_of_loaded_transposed_or_renamed_data_start_at_row_0(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    cases = {
        "loaded": (ds.load(), "sample"),
        "transposed": (lazyh5.open_dataset(feed_file).transpose(..., "sample"), "sample"),
        "renamed": (lazyh5.open_dataset(feed_file).rename(sample="row"), "row"),
    }
    for name, (data, dim) in cases.items():
        # not read straight from the file: each block computes a whole dask chunk
        warns = pytest.warns(UserWarning, match="computed by dask in chunks of up to 2000")
        with warns if name != "loaded" else contextlib.nullcontext():
            loader = BatchLoader(data, "image", "label", dim=dim, shuffle=False, block_size="8KiB")
        bounds = _bounds(loader.plan)
        if name != "renamed":  # a renamed dimension is not matched to the file's chunks
            # 8 KiB / 72 B = 113 rows: one 64-row chunk per block
            assert bounds == [*range(0, 2000, 64), 2000], name
        assert bounds[0] == 0 and bounds[-1] == 2000
        x = np.concatenate([b[1] for b in loader.batches(0)])
        np.testing.assert_array_equal(x, np.arange(2000), err_msg=name)


def test_blocks_of_contiguous_data_and_tiny_blocks(tmp_path):
    path = tmp_path / "flat.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("i", data=np.arange(100))  # contiguous, 8 B/row
        f.create_dataset("b", data=np.arange(100, dtype="u1"))  # contiguous, 1 B/row
        f.create_dataset("wide", data=np.zeros((100, 2), "f8"), chunks=(10, 2))  # 16 B/row
        f.create_dataset("narrow", data=np.zeros((100, 3), "u1"), chunks=(3, 3))  # 3 B/row
    ds = lazyh5.open_dataset(path)
    plans = {
        ("i", "40B"): [*range(0, 100, 5), 100],  # 5 rows: no chunk to align to
        ("i", "4B"): list(range(101)),  # less than a row: one row per block
        ("b", "10B"): [*range(0, 100, 10), 100],
        ("wide", "30B"): [*range(0, 100, 10), 100],
    }
    for (x, size), bounds in plans.items():
        loader = BatchLoader(ds, x, shuffle=False, block_size=size)
        assert _bounds(loader.plan) == bounds, (x, size)
    # the heaviest variable in bytes (wide: 1600 B) sets the chunk edges, not narrow's
    loader = BatchLoader(ds, "narrow", "wide", shuffle=False, block_size="190B")
    assert _bounds(loader.plan) == [*range(0, 100, 10), 100]


# -- shards: where "auto" comes from ---------------------------------------------------
_NONE = "no distributed framework active"
_TF = {"chief": ["c:1"], "worker": ["w:1", "w:2"]}


def _auto(feed_file):
    return BatchLoader(lazyh5.open_dataset(feed_file), "label", seed=0, shard="auto")


def _alone(feed_file) -> None:
    """Skip when a framework already set a shard for this process (a distributed run)."""
    source = _auto(feed_file).shard.source
    frameworks = ("torch.distributed", "jax.process_index()", "keras.distribution")
    if source in frameworks:
        pytest.skip(f"a framework is active in this process: {source}")
    assert source == _NONE


@pytest.mark.parametrize(
    ("config", "shard"),
    [
        ({"cluster": _TF, "task": {"type": "chief", "index": 0}}, (0, 3, "TF_CONFIG")),
        ({"cluster": _TF, "task": {"type": "worker", "index": 0}}, (1, 3, "TF_CONFIG")),
        (
            {"cluster": {"worker": ["a", "b"]}, "task": {"type": "worker", "index": 1}},
            (1, 2, "TF_CONFIG"),
        ),
        (
            {"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 0}},
            (0, 1, "TF_CONFIG"),
        ),
        ({"cluster": {"chief": ["a"]}, "task": {"type": "chief", "index": 0}}, (0, 1, "TF_CONFIG")),
        # tasks that feed no shard: parameter servers, evaluators, an empty cluster
        ({"cluster": _TF | {"ps": ["p:1"]}, "task": {"type": "ps", "index": 0}}, (0, 1, _NONE)),
        ({"cluster": _TF, "task": {"type": "evaluator", "index": 0}}, (0, 1, _NONE)),
        ({"cluster": {}, "task": {"type": "chief", "index": 0}}, (0, 1, _NONE)),
        ("", (0, 1, _NONE)),
    ],
)
def test_shard_auto_from_tf_config(feed_file, monkeypatch, config, shard):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    _alone(feed_file)
    monkeypatch.setenv("TF_CONFIG", json.dumps(config) if config else "")
    loader = _auto(feed_file)
    assert (loader.shard.index, loader.shard.count, loader.shard.source) == shard
    assert f"shard {shard[0]} of {shard[1]} (from {shard[2]})" in repr(loader)
    # split loaders keep the shard and where it came from
    assert all(part.shard == loader.shard for part in loader.split(0.5))


@pytest.mark.parametrize(
    "raw",
    [
        "{not json",
        "[1, 2]",
        '{"cluster": {"worker": ["a"]}}',
        '{"task": {"type": "worker", "index": 0}}',
        '{"cluster": {"worker": ["a"]}, "task": {"type": "worker"}}',
        '{"cluster": {"worker": ["a"]}, "task": {"index": 0}}',
        '{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": "one"}}',
    ],
)
def test_shard_auto_refuses_an_unreadable_tf_config(feed_file, monkeypatch, raw):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    _alone(feed_file)
    monkeypatch.setenv("TF_CONFIG", raw)
    with pytest.raises(lazyh5.errors.InvalidArgumentError, match="cannot read TF_CONFIG") as info:
        _auto(feed_file)
    assert str(info.value).endswith(
        "expected JSON with 'cluster' ({'chief': [...], 'worker': [...]}) and 'task' "
        "({'type': ..., 'index': ...})"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_shard_auto_reads_an_initialised_torch_process_group(feed_file, monkeypatch, tmp_path):
    pytest.importorskip("torch")
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch built without torch.distributed")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    _alone(feed_file)  # torch imported, no process group: not a shard source
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        loader = _auto(feed_file)
    finally:
        dist.destroy_process_group()
    assert (loader.shard.index, loader.shard.count) == (0, 1)
    assert "shard 0 of 1 (from torch.distributed)" in repr(loader)
    assert _auto(feed_file).shard.source == _NONE  # destroyed: no longer asked


def test_shard_auto_in_one_process_of_any_framework_is_the_single_shard(feed_file, monkeypatch):
    """Imported but not distributed (no process group, one JAX process, no Keras
    distribution): not a shard."""
    pytest.importorskip("torch")
    jax, keras = pytest.importorskip("jax"), pytest.importorskip("keras")
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    if distributed or jax.process_count() > 1 or keras.distribution.distribution():
        pytest.skip("a framework is distributed in this process")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    loader = _auto(feed_file)
    assert (loader.shard.index, loader.shard.count) == (0, 1)
    assert "shard 0 of 1 (from no distributed framework active)" in repr(loader)


def test_shard_auto_reads_a_data_parallel_distribution_scope(feed_file, monkeypatch):
    """Keras' ``DataParallel`` set for a scope (one local device: shard 0 of 1)."""
    keras = pytest.importorskip("keras")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    _alone(feed_file)  # keras imported, no distribution set
    with keras.distribution.DataParallel().scope():
        loader = _auto(feed_file)
    assert (loader.shard.index, loader.shard.count) == (0, 1)
    assert "shard 0 of 1 (from keras.distribution)" in repr(loader)


@pytest.mark.parametrize("shard", [(1, 3), [1, 3]])
def test_shard_as_a_tuple_or_list_names_no_source(feed_file, shard):
    loader = BatchLoader(lazyh5.open_dataset(feed_file), "label", seed=0, shard=shard)
    assert (loader.shard.index, loader.shard.count, loader.shard.source) == (1, 3, "")
    assert "shard 1 of 3 (667 rows, shard_batches='pad')" in repr(loader)
    alone = BatchLoader(lazyh5.open_dataset(feed_file), "label", seed=0, shard=(0, 1))
    assert "rows), 63 batches" in repr(alone)  # no shard between the rows and batches


@pytest.mark.parametrize("shard", [(True, 2), (0, True), (0, 2, 1), (1.0, 2), "0,2", 2])
def test_shard_values_that_are_not_two_integers_are_refused(feed_file, shard):
    with pytest.raises(lazyh5.errors.InvalidArgumentError, match="0 <= index < count"):
        BatchLoader(lazyh5.open_dataset(feed_file), "label", seed=0, shard=shard)


# -- saved states ----------------------------------------------------------------------
def _resumable(feed_file, **kwargs):
    kwargs = {"batch_size": 32, "seed": 3, "block_size": "8KiB", "window": 3} | kwargs
    return BatchLoader(lazyh5.open_dataset(feed_file), "image", "label", **kwargs)


def test_state_dict_holds_the_position_and_what_the_order_depends_on(feed_file):
    kwargs = {"start": 10, "end": 1990, "shard": (1, 2), "drop_remainder": True}
    loader = _resumable(feed_file, **kwargs)
    it = iter(loader)
    next(it), next(it)
    assert loader.state_dict() == {
        "lazyh5_loader_state": 1,
        "epoch": 0,
        "batch": 2,
        "source": "feed.h5",
        "dim": "sample",
        "rows": [10, 1990],
        "batch_size": 32,
        "drop_remainder": True,
        "shuffle": True,
        "seed": 3,
        "window": 3,
        "blocks": 32,  # [10, 64), [64, 128) ... [1984, 1990)
        "block_rows": 64,
        "shard": [1, 2],
        "shard_batches": "pad",
        "batches": 30,  # 990 rows of the shard, the last 30 dropped
    }
    ordered = _resumable(feed_file, shuffle=False, seed=None, shard_batches="drop")
    state = ordered.state_dict()
    assert (state["epoch"], state["batch"], state["seed"], state["shuffle"]) == (0, 0, None, False)
    assert (state["shard_batches"], state["drop_remainder"], state["rows"]) == (
        "drop",
        False,
        [0, 2000],
    )
    assert json.loads(json.dumps(state)) == state


def test_state_dict_right_after_loading_is_the_loaded_position(feed_file):
    loader = _resumable(feed_file)
    assert (loader.state_dict()["epoch"], loader.state_dict()["batch"]) == (0, 0)
    loader.load_state_dict(loader.state_dict() | {"epoch": 2, "batch": 5})
    assert (loader.state_dict()["epoch"], loader.state_dict()["batch"]) == (2, 5)
    assert loader.epoch == 2
    # then the position moves with the batches served, and the epoch ends
    it = iter(loader)
    next(it)
    assert (loader.state_dict()["epoch"], loader.state_dict()["batch"]) == (2, 6)
    assert loader.epoch == 3  # the next plain iteration starts the epoch after it
    rest = list(it)
    assert len(rest) == len(loader) - 6
    assert (loader.state_dict()["epoch"], loader.state_dict()["batch"]) == (3, 0)


def test_a_state_at_the_end_of_an_epoch_starts_the_next(feed_file):
    loader = _resumable(feed_file)
    state = loader.state_dict() | {"epoch": 1, "batch": len(loader)}
    loader.load_state_dict(state)
    assert (loader.epoch, loader.state_dict()["epoch"], loader.state_dict()["batch"]) == (2, 2, 0)
    expected = [y for _, y in _resumable(feed_file).batches(2)]
    got = [y for _, y in loader]
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_state_with_tuples_loads_like_one_with_lists(feed_file):
    loader = _resumable(feed_file, shard=(1, 2))
    state = loader.state_dict()
    other = _resumable(feed_file, shard=(1, 2))
    other.load_state_dict(state | {"rows": (0, 2000), "shard": (1, 2), "batch": 3})
    assert other.state_dict() == state | {"batch": 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epoch": -1}, "epoch=-1, batch=0; expected epoch >= 0 and 0 <= batch <= 63"),
        ({"batch": -1}, "epoch=0, batch=-1; expected epoch >= 0 and 0 <= batch <= 63"),
        ({"batch": 64}, "epoch=0, batch=64; expected epoch >= 0 and 0 <= batch <= 63"),
        ({"batch": None}, "epoch=0, batch=None; expected"),
        ({"batch": "one"}, "epoch=0, batch='one'; expected"),
        ({"epoch": None}, "epoch=None, batch=0; expected"),
    ],
)
def test_a_state_at_a_position_out_of_the_epoch_is_refused(feed_file, change, message):
    loader = _resumable(feed_file)
    with pytest.raises(lazyh5.errors.InvalidArgumentError) as info:
        loader.load_state_dict(loader.state_dict() | change)
    assert message in str(info.value) and "feed.h5" in str(info.value)
    missing = {k: v for k, v in loader.state_dict().items() if k != "batch"}
    with pytest.raises(lazyh5.errors.InvalidArgumentError, match="batch=None; expected"):
        loader.load_state_dict(missing)


@pytest.mark.parametrize("state", [None, [1, 2], {}, {"lazyh5_loader_state": 2}, "x" * 500])
def test_a_state_that_is_no_loader_state_is_refused(feed_file, state):
    loader = _resumable(feed_file)
    with pytest.raises(lazyh5.errors.InvalidArgumentError) as info:
        loader.load_state_dict(state)
    text = str(info.value)
    assert "expected a dict from BatchLoader.state_dict() (version 1)" in text
    assert text.endswith(f", got {str(state)[:200]}")  # a long state is cut short


def test_a_state_of_another_order_names_each_difference(feed_file):
    state = _resumable(feed_file).state_dict()
    other = _resumable(feed_file, seed=4, batch_size=16)
    with pytest.raises(lazyh5.errors.InvalidArgumentError) as info:
        other.load_state_dict(state)
    assert str(info.value).endswith(
        "so it would not replay the same order: batch_size=32 (this loader: 16); "
        "seed=3 (this loader: 4); batches=63 (this loader: 125)"
    )


def test_an_unseeded_shuffled_loader_has_no_state_but_an_ordered_one_has(feed_file):
    with pytest.raises(lazyh5.errors.InvalidArgumentError) as info:
        _resumable(feed_file, seed=None).state_dict()
    assert str(info.value).endswith(
        "feed.h5' has seed=None, so its order cannot be replayed; build it with a seed "
        "(BatchLoader(..., seed=0)) to save its state"
    )
    assert _resumable(feed_file, seed=None, shuffle=False).state_dict()["seed"] is None


# -- the loader ------------------------------------------------------------------------
def test_repr_names_every_setting(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    kwargs = {"batch_size": 30, "seed": 3, "block_size": "8KiB", "window": 3, "prefetch": 0}
    loader = BatchLoader(
        ds,
        "image",
        ["label", "weight"],
        start=10,
        end=1990,
        shard=(1, 2),
        shard_batches="drop",
        **kwargs,
    )
    where = repr(str(feed_file))
    assert repr(loader) == (
        f"<lazyh5.BatchLoader {where}: x='image', y=['label', 'weight'], rows 10:1990 along "
        "'sample' (1980 rows), shard 1 of 2 (990 rows, shard_batches='drop'), 33 batches "
        "of 30, shuffle=True (seed=3, window=3 blocks), 32 blocks of <= 64 rows, 1 in flight>"
    )
    ordered = BatchLoader(ds, {"a": "image"}, shuffle=False, window=0, block_size="4KiB")
    assert repr(ordered) == (
        f"<lazyh5.BatchLoader {where}: x={{'a': 'image'}}, y=None, rows 0:2000 along "
        "'sample' (2000 rows), 63 batches of 32, shuffle=False (seed=None, window=1 "
        "blocks), 32 blocks of <= 64 rows, 2 in flight>"
    )


def test_another_scheduler_computes_the_same_batches(feed_file):
    """A scheduler other than dask's local ones (a distributed client's) computes every
    block with dask instead of reading the file in this process."""
    import dask
    import dask.threaded

    calls = []

    def scheduler(*args, **kwargs):
        calls.append(1)
        return dask.threaded.get(*args, **kwargs)

    def loader(**kwargs):
        ds = lazyh5.open_dataset(feed_file)
        ds = ds.assign(twice=ds["label"] * 2)  # computed by dask in both cases
        kwargs = {"batch_size": 30, "seed": 3, "block_size": "8KiB", "window": 3} | kwargs
        return BatchLoader(ds, "image", "twice", **kwargs)

    for kwargs in ({}, {"shuffle": False}, {"shard": (1, 3)}):
        local = list(loader(**kwargs).batches(1))
        with dask.config.set(scheduler=scheduler):
            other = loader(**kwargs)
            remote = list(other.batches(1))
            direct = other._read_batch(1, 4)
        assert calls
        calls.clear()
        assert len(remote) == len(local)
        for (x, y), (rx, ry) in zip(local, remote, strict=True):
            np.testing.assert_array_equal(x, rx, strict=True)
            np.testing.assert_array_equal(y, ry, strict=True)
        np.testing.assert_array_equal(direct[0], local[4][0], strict=True)
        np.testing.assert_array_equal(direct[1], local[4][1], strict=True)
        # locally too: the file's rows read directly, the computed ones by dask
        mixed = loader(**kwargs)._read_batch(1, 4)
        np.testing.assert_array_equal(mixed[0], local[4][0], strict=True)
        np.testing.assert_array_equal(mixed[1], local[4][1], strict=True)


def test_a_direct_batch_reads_runs_of_plain_rows_and_each_compressed_chunk_once(tmp_path):
    """Read outside the stream by dask (here a scheduler that counts its computes):
    plain rows one read per run of consecutive rows, compressed rows one read per
    chunk at most (a chunk is decoded whole for any of its rows)."""
    import dask
    import dask.threaded

    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("p", data=np.arange(2000.0), chunks=(64,))
        f.create_dataset("z", data=np.arange(2000.0), chunks=(64,), compression="lzf")
    computes = []

    def scheduler(*args, **kwargs):
        computes.append(1)
        return dask.threaded.get(*args, **kwargs)

    for name in ("p", "z"):
        with dask.config.set(scheduler=scheduler):
            loader = BatchLoader(lazyh5.open_dataset(path), name, batch_size=50, seed=0)
            rows = loader._order(0).batch_rows(3).astype(np.int64)
            computes.clear()
            got = loader._read_batch(0, 3)
        np.testing.assert_array_equal(got, rows.astype("f8"), strict=True)
        unique = np.unique(rows)
        runs = 1 + int((np.diff(unique) > 1).sum())
        chunks = len(np.unique(unique // 64))
        assert chunks < runs  # 50 rows spread over 2000: so the two differ
        assert len(computes) == (runs if name == "p" else chunks), name


def test_a_state_names_its_file_whatever_the_name(tmp_path):
    from tests._files import write_feed

    path = write_feed(tmp_path / "trainX")  # no extension; ends with a letter
    loader = BatchLoader(lazyh5.open_dataset(path), "label", seed=0)
    assert loader.state_dict()["source"] == "trainX"


@pytest.mark.parametrize(("block_size", "whole"), [(4000, True), (3999, False)])
def test_labels_are_read_whole_when_they_fit_in_four_blocks(feed_file, block_size, whole):
    """2000 labels of 8 B: read whole per epoch (batches are views of the whole column)
    when 4 blocks hold 16,000 B, else block by block."""
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(ds, "image", "label", shuffle=False, block_size=block_size, batch_size=50)
    ys = list(loader.batches(0))
    assert (max(_root(y).size for _, y in ys) == 2000) == whole
    np.testing.assert_array_equal(np.concatenate([y for _, y in ys]), np.arange(2000))


@pytest.mark.parametrize(("width", "whole"), [(1023, True), (1024, False)])
def test_only_rows_under_1_kib_are_read_whole(tmp_path, width, whole):
    path = tmp_path / "rows.h5"
    data = np.arange(400 * width, dtype="u4").astype("u1").reshape(400, width)
    with h5py.File(path, "w") as f:
        f.create_dataset("r", data=data)  # contiguous: blocks of any row count
    ds = lazyh5.open_dataset(path)
    # 4 blocks of 120,000 B hold the 400 rows either way; blocks of 117 rows
    loader = BatchLoader(ds, "r", shuffle=False, block_size=120_000, batch_size=100, start=10)
    batches = list(loader.batches(0))
    assert (max(_root(b).shape[0] if _root(b).ndim == 2 else 0 for b in batches) == 390) == whole
    np.testing.assert_array_equal(np.concatenate(batches), data[10:], strict=True)


def test_the_pool_keeps_as_many_buffers_per_fed_variable(tmp_path):
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=np.arange(4000.0).reshape(2000, 2), chunks=(64, 2))
        f.create_dataset("b", data=np.arange(6000.0).reshape(2000, 3), chunks=(64, 3))
    ds = lazyh5.open_dataset(path)
    loader = BatchLoader(ds, "a", "b", batch_size=64, shuffle=False, prefetch=2, block_size="2KiB")
    held = list(loader.batches(0))  # every batch a block's view, all held
    assert len(loader.plan) == 32 > 2 * (loader.prefetch + 4)
    np.testing.assert_array_equal(np.concatenate([a for a, _ in held])[:, 0], np.arange(0, 4000, 2))
    _, refs = _owners([x for batch in held for x in batch])
    del held
    gc.collect()
    assert len([r for r in refs if r() is not None]) == 2 * (loader.prefetch + 4)


def test_loader_errors_say_what_to_pass(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    where = repr(str(feed_file))
    with pytest.raises(TypeError) as info:
        BatchLoader(ds["image"], "image")
    assert str(info.value) == "BatchLoader needs an xarray.Dataset, got DataArray"
    with pytest.raises(lazyh5.errors.InvalidArgumentError) as info:
        BatchLoader(ds, None)
    assert str(info.value) == f"BatchLoader over {where} needs at least one input variable x"
    with pytest.raises(lazyh5.errors.InvalidArgumentError) as info:
        BatchLoader(ds, "label", shard=(0, 2))
    assert str(info.value) == (
        f"cannot shard {where} with shuffle=True and seed=None: every shard must draw the "
        "same order, so pass the same seed on every process (BatchLoader(..., seed=0))"
    )
    with pytest.raises(lazyh5.errors.InvalidArgumentError) as info:
        BatchLoader(ds, "label", seed=0, end=2, shard=(1, 3), shard_batches="drop")
    assert str(info.value) == (
        f"cannot split the 2 rows of {where} into 3 shards with shard_batches='drop': "
        "fewer rows than shards"
    )
    # unshuffled or padded, the same shards are fine
    assert len(BatchLoader(ds, "label", shuffle=False, shard=(0, 2))) == 32
    assert BatchLoader(ds, "label", seed=0, end=2, shard=(2, 3)).epoch_rows == 1
