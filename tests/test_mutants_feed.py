"""The loader's plans, orders, shards and buffers, pinned down by mutants that survived.

Every check is on what a caller sees: the rows of each batch (files whose rows say
where they are: ``image[i] == label[i] == i``), the blocks of ``loader.plan``, and the
memory the loader keeps (the arrays behind its batches).
"""

from __future__ import annotations

import contextlib
import gc
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

    pool = Buffers(limit=1, smallest=0)
    empty = pool.empty((0, 3), "f4")
    assert empty.shape == (0, 3) and empty.dtype == np.float32 and pool._held == []
    one = pool.empty((1,), "u1")
    assert one.base is pool._held[0] and pool._held[0].nbytes == 1
    del one
    again = pool.empty((1, 1), "i1")  # the same byte, reused
    assert again.base is pool._held[0] and again.shape == (1, 1) and again.dtype == np.int8


def test_the_smallest_free_buffer_is_taken_wherever_it_is_in_the_pool():
    from lazyh5.feed.buffers import Buffers

    pool = Buffers(limit=3, smallest=0)
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
    with pytest.warns(UserWarning, match="computed by dask in chunks of up to 400 rows along 'n'"):
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
    # file row 3, its 300 columns fed as rows under the file's first dimension's name:
    # blocks of whole chunks of the file's axis 1 (50 columns), not of its axis 0 (2)
    view = ds.isel(sample=3).rename(m_dim_1="sample")
    loader = BatchLoader(view, "m", shuffle=False, block_size="40B")
    assert _bounds(loader.plan) == [*range(0, 300, 50), 300]
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
        # transposed, not read straight from the file: each block computes a dask chunk;
        # renamed, still the file's rows and chunks
        warns = pytest.warns(
            UserWarning, match=r"feed\.h5' is computed by dask in chunks of up to 2000"
        )
        with warns if name == "transposed" else contextlib.nullcontext():
            loader = BatchLoader(data, "image", "label", dim=dim, shuffle=False, block_size="8KiB")
        assert all(loader._direct.values()) == (name == "renamed"), name
        # 8 KiB / 72 B = 113 rows: one 64-row chunk per block
        assert _bounds(loader.plan) == [*range(0, 2000, 64), 2000], name
        x = np.concatenate([b[1] for b in loader.batches(0)])
        np.testing.assert_array_equal(x, np.arange(2000), err_msg=name)


def test_the_file_axis_of_a_dimension_follows_views_renames_and_transposes(tmp_path):
    from lazyh5.feed.plan import chunk_rows, file_axis

    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("m", data=np.zeros((6, 1000, 4), "f4"), chunks=(6, 100, 4))
    ds = lazyh5.open_dataset(path)
    views = {  # the view, and the file axis of each of its dimensions
        "plain": (ds["m"], [0, 1, 2]),
        "transposed": (ds["m"].transpose("m_dim_2", "m_dim_1", "sample"), [2, 1, 0]),
        "renamed": (ds.rename(sample="a", m_dim_1="b")["m"], [0, 1, 2]),
        "dropped-renamed": (ds.isel(sample=3).rename(m_dim_1="sample")["m"], [1, 2]),
        "swapped": (ds.rename({"sample": "m_dim_1", "m_dim_1": "sample"})["m"], [0, 1, 2]),
    }
    for name, (view, axes) in views.items():
        assert [file_axis(view, d) for d in view.dims] == axes, name
        assert [chunk_rows(view, d) for d in view.dims] == [(6, 100, 4)[a] for a in axes], name
    assert file_axis(ds["m"], "nope") is None and chunk_rows(ds["m"], "nope") == 1


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
