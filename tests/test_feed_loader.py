"""BatchLoader on real files: coverage, ranges, splits, determinism, transforms, memory."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import warnings
import weakref

import dask
import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5.errors import (
    DimensionError,
    InvalidArgumentError,
    ObjectNotFoundError,
    UnsupportedDtypeError,
)
from lazyh5.feed.loader import BatchLoader


def _labels(loader, epoch=None):
    """One epoch's labels: the next epoch (advancing the count) unless ``epoch`` is given."""
    batches = loader if epoch is None else loader.batches(epoch)
    return np.concatenate([b[1] for b in batches])


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [1, 32, 100, 3000])
def test_every_row_exactly_once(feed_file, shuffle, batch_size):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(
        ds, "image", "label", batch_size=batch_size, shuffle=shuffle, seed=1, block_size="8KiB"
    )
    got = _labels(loader)
    assert sorted(got.tolist()) == list(range(2000))
    assert len(list(loader.batches())) == len(loader) == -(-2000 // batch_size)
    if not shuffle:
        np.testing.assert_array_equal(got, np.arange(2000))
    for x, y in loader.batches():  # x and y rows stay paired
        np.testing.assert_array_equal(x[:, 0, 0], y.astype("f4"))


def test_drop_remainder(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(ds, "image", "label", batch_size=300, drop_remainder=True, seed=0)
    sizes = [len(y) for _, y in loader]
    assert sizes == [300] * 6 and len(loader) == 6


def test_start_end_and_split_are_disjoint(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(ds, "image", "label", start=100, end=1700, seed=0)
    assert sorted(_labels(loader).tolist()) == list(range(100, 1700))
    train, val = loader.split(0.8)
    a, b = set(_labels(train).tolist()), set(_labels(val).tolist())
    assert not a & b and a | b == set(range(100, 1700))
    assert abs(len(a) - 1280) <= 16  # the cut moved to a chunk edge at most 1% away
    assert not val.shuffle
    np.testing.assert_array_equal(_labels(val), sorted(b))


def test_determinism_and_new_order_each_epoch(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    one = BatchLoader(ds, "image", "label", seed=7, block_size="8KiB")
    two = BatchLoader(ds, "image", "label", seed=7, block_size="8KiB")
    e0, e1 = _labels(one), _labels(one)  # iterating advances the epoch
    np.testing.assert_array_equal(e0, _labels(two))
    np.testing.assert_array_equal(e1, _labels(two))
    assert not np.array_equal(e0, e1)
    other = BatchLoader(ds, "image", "label", seed=8, block_size="8KiB")
    assert not np.array_equal(_labels(other, 0), e0)


def test_multi_input_tuple_dict_and_weights(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(
        ds,
        {"pixels": "image", "id": "label"},
        ["label", "label"],
        sample_weight="weight",
        batch_size=50,
        seed=0,
    )
    x, y, w = next(iter(loader))
    assert set(x) == {"pixels", "id"} and x["pixels"].shape == (50, 4, 4)
    assert isinstance(y, tuple) and len(y) == 2
    np.testing.assert_array_equal(x["id"], y[0])
    assert w.shape == (50,)
    only_x = BatchLoader(ds, "image", batch_size=10, shuffle=False)
    assert next(iter(only_x)).shape == (10, 4, 4)


def test_lazy_transforms_are_applied(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    view = ds.isel(sample=slice(500, 1500)).assign(image=lambda d: d["image"] / 2 - 1)
    loader = BatchLoader(view, "image", "label", batch_size=64, seed=0)
    for x, y in loader:
        np.testing.assert_allclose(x[:, 0, 0], y / 2 - 1)
    assert sorted(_labels(loader).tolist()) == list(range(500, 1500))


_NO_CLIENT = """
import sys, dask, lazyh5
ds = lazyh5.open_dataset(sys.argv[1])
for scheduler in (None, "sync"):
    with dask.config.set(scheduler=scheduler):
        loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=64, shuffle=True, seed=0)
        rows = sorted(int(v) for _, y in loader for v in y)
        assert rows == list(range(len(ds["label"]))), rows[:10]
        print(scheduler, "distributed" in sys.modules)
"""


def test_an_epoch_on_this_machine_never_imports_distributed(feed_file):
    # Asking dask whether a distributed client is active imports distributed (half a
    # second); no client can exist until it is imported, so a local epoch never asks.
    done = subprocess.run(
        [sys.executable, "-c", _NO_CLIENT, str(feed_file)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "False", "sync", "False"]


def _producer_waits(thread: threading.Thread, fetch_code: object) -> bool:
    """Whether ``thread`` waits (on a lock, a queue) outside ``fetch``, or has ended."""
    if not thread.is_alive():
        return True
    frame = sys._current_frames().get(thread.ident)
    if frame is None or frame.f_code.co_name != "wait":  # Condition.wait, Event.wait
        return False
    while frame is not None:
        if frame.f_code is fetch_code:
            return False  # waiting inside a fetch (the decode pool), not for room
        frame = frame.f_back
    return True


@pytest.mark.parametrize(("prefetch", "window"), [(2, 3), (5, 2)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_blocks_are_chunk_aligned_and_bounded_in_flight(feed_file, shuffle, prefetch, window):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(
        ds.isel(sample=slice(10, None)),
        "image",
        "label",
        block_size="8KiB",
        prefetch=prefetch,
        window=window,
        shuffle=shuffle,
        seed=0,
    )
    # file rows of every inner block edge are multiples of the 64-row HDF5 chunks
    assert all((loader.plan.starts[1:] + 10) % 64 == 0)
    # Every window the background thread hands over is tracked by a weak reference to
    # its arrays: it is in flight (queued, being handed over or in use) while they live.
    made: list[tuple[weakref.ref, int]] = []
    fetched: list[int] = []
    producer: list[threading.Thread] = []
    original = loader._window

    def tracked(w, sources):
        out = original(w, sources)
        producer[:] = [threading.current_thread()]
        fetched.extend(w.blocks.tolist())
        made.append((weakref.ref(out["image"]), len(w.blocks)))
        return out

    loader._window = tracked
    peak = 0
    for _ in loader.batches():
        # A slow consumer: let the background thread run until it must wait for room.
        deadline = time.monotonic() + 60
        while not _producer_waits(producer[0], tracked.__code__):
            assert time.monotonic() < deadline, "the prefetch thread never waited"
            time.sleep(0.001)  # polling interval
        peak = max(peak, sum(n for ref, n in made if ref() is not None))
    assert sorted(fetched) == list(range(len(loader.plan)))  # each block computed once
    # at most `prefetch` blocks ahead (whole windows shuffled), one being handed over
    # and one in use; more blocks than that in the epoch, and the thread ran ahead
    depth = -(-loader.prefetch // loader.window) * loader.window if shuffle else loader.prefetch
    width = loader.window if shuffle else 1
    assert len(loader.plan) > depth + 2 * width
    # the queue full (depth) and the window in use, at the least
    assert depth + width <= peak <= depth + 2 * width, peak


def test_abandoned_iteration_stops_threads(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(ds, "image", "label", block_size="8KiB", seed=0)
    before = threading.active_count()
    for _ in range(5):
        it = iter(loader)
        next(it)
        it.close()
    assert threading.active_count() <= before


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": "nope"}, ObjectNotFoundError, "no variable 'nope'"),
        ({"x": "image", "batch_size": 0}, ValueError, "batch_size"),
        ({"x": "image", "batch_size": -3}, ValueError, "batch_size"),
        ({"x": "image", "start": -1}, IndexError, "out of range"),
        ({"x": "image", "end": 5000}, IndexError, "out of range"),
        ({"x": "image", "start": 10, "end": 10}, ValueError, "no rows"),
        ({"x": "scalar"}, DimensionError, "sample dimension"),
        ({"x": "names"}, UnsupportedDtypeError, "dtype"),
        ({"x": "image", "dim": "time"}, DimensionError, "dimension 'time'"),
    ],
)
def test_bad_arguments(feed_file, kwargs, error, match):
    ds = lazyh5.open_dataset(feed_file)
    kwargs = dict(kwargs)  # the parameters are shared: a second run in one process sees them
    x = kwargs.pop("x")
    with pytest.raises(error, match=match) as info:
        BatchLoader(ds, x, **kwargs)
    assert "feed.h5" in str(info.value) or error is ValueError


def test_arrays_passed_for_names_are_refused_unread(feed_file):
    """``BatchLoader(ds, ds["image"])``: a clear error, not a read of every row."""
    ds = lazyh5.open_dataset(feed_file)
    weights = ds["weight"].values
    with dask.config.set(scheduler=_no_compute):
        for args, kwargs in [
            ((ds["image"],), {}),
            (("image", ds["label"]), {}),
            (("image", ["label", weights]), {}),
            (("image", "label"), {"sample_weight": ds["weight"].data}),
        ]:
            with pytest.raises(InvalidArgumentError, match=r"not arrays|must be strings") as info:
                BatchLoader(ds, *args, **kwargs)
            assert "feed.h5" in str(info.value)
        with pytest.raises(InvalidArgumentError, match=r"pass its name, 'image'"):
            BatchLoader(ds, ds["image"])
    loader = BatchLoader(ds, np.str_("image"), [np.str_("label")], batch_size=500)
    assert len(loader) == 4
    ds.close()


def _no_compute(*args, **kwargs):
    raise AssertionError("a variable was computed")


def test_repr_is_informative(feed_file):
    loader = BatchLoader(lazyh5.open_dataset(feed_file), "image", "label", seed=3)
    text = repr(loader)
    assert "feed.h5" in text and "2000 rows" in text and "63 batches of 32" in text
    assert "seed=3" in text


def test_empty_dataset_is_refused(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", (0, 3), "f4")
    with pytest.raises(ValueError, match="no rows"):
        BatchLoader(lazyh5.open_dataset(path), "x")


@pytest.mark.filterwarnings("ignore:.*computes its whole chunk")
def test_shuffled_rows_of_any_layout_and_dtype(tmp_path):
    """Shuffled batches are gathered as raw row bytes: check sample-last, bool, complex."""
    path = tmp_path / "layouts.h5"
    n = 500
    with h5py.File(path, "w") as f:
        f.create_dataset("id", data=np.arange(n), chunks=(50,))
        f.create_dataset("cols", data=np.arange(3 * n).reshape(3, n), chunks=(3, 50))
        f.create_dataset("flag", data=np.arange(n) % 3 == 0, chunks=(50,))
        f.create_dataset("z", data=np.arange(n) * (1 + 2j), chunks=(50,))
    dims = {"cols": ("c", "sample"), "id": ("sample",), "flag": ("sample",), "z": ("sample",)}
    ds = lazyh5.open_dataset(path, dims=dims)
    ds = ds.assign(cols=ds["cols"] * 2)  # a transform too
    loader = BatchLoader(
        ds, ["cols", "flag", "z"], "id", batch_size=32, seed=0, block_size="2KiB", window=3
    )
    seen = []
    for (cols, flag, z), ids in loader:
        assert cols.shape == (len(ids), 3) and flag.dtype == bool and z.dtype == complex
        np.testing.assert_array_equal(cols, 2 * (np.arange(3)[None, :] * n + ids[:, None]))
        np.testing.assert_array_equal(flag, ids % 3 == 0)
        np.testing.assert_array_equal(z, ids * (1 + 2j))
        seen.append(ids)
    assert sorted(np.concatenate(seen).tolist()) == list(range(n))


def _opaque(var):
    """``var + 1`` by a function lazyh5 cannot look into: dask computes it."""
    return var.copy(data=var.data.map_blocks(lambda b: b + 1))


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_read_path_gives_the_same_batches(tmp_path, shuffle):
    """Rows copied straight from the file (uncompressed, read-only), decoded (gzip),
    read by h5py (lzf), computed by dask (a transform) or held in memory: same epoch."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (1000, 6, 5), dtype=np.uint8)
    label = np.arange(1000)
    paths = {}
    for comp in (None, "gzip", "lzf"):
        paths[comp] = tmp_path / f"{comp}.h5"
        with h5py.File(paths[comp], "w") as f:
            f.create_dataset("image", data=image, chunks=(64, 6, 5), compression=comp)
            f.create_dataset("label", data=label, chunks=(100,), compression=comp)
    sources = {str(c): lazyh5.open_dataset(p) for c, p in paths.items()}
    sources["elementwise"] = sources["None"].assign(image=sources["None"]["image"] * 1)
    sources["dask transform"] = sources["None"].assign(image=_opaque(sources["None"]["image"]) - 1)
    sources["memory"] = sources["None"].load()
    sources["view"] = lazyh5.open_dataset(paths[None]).isel(sample=slice(0, 1000))

    def epoch(ds):
        loader = BatchLoader(
            ds, "image", "label", batch_size=48, shuffle=shuffle, seed=5, block_size="40KiB"
        )
        xs, ys = zip(*loader.batches(1), strict=True)
        return np.concatenate(xs), np.concatenate(ys)

    want_x, want_y = epoch(sources["None"])
    np.testing.assert_array_equal(want_x, image[want_y])  # rows stay paired
    assert sorted(want_y.tolist()) == label.tolist()
    assert (want_y != label).any() == shuffle
    for name, ds in sources.items():
        got_x, got_y = epoch(ds)
        np.testing.assert_array_equal(got_y, want_y, err_msg=name)
        np.testing.assert_array_equal(got_x, want_x, err_msg=name)


def test_computed_variables_get_blocks_of_whole_dask_chunks(tmp_path):
    """dask computes a whole chunk for any slice of a transform: blocks must not cut one."""
    path = tmp_path / "t.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(4000.0).reshape(2000, 2), chunks=(100, 2))
    row_block = "7200B"  # 450 rows of 16 bytes
    ds = lazyh5.open_dataset(path, chunks={"sample": 200})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader = BatchLoader(ds.assign(x=_opaque(ds["x"])), "x", block_size=row_block, seed=0)
    assert (loader.plan.starts % 200 == 0).all() and (loader.plan.sizes == 400).all()
    got = np.concatenate(list(loader.batches(0)))
    np.testing.assert_array_equal(np.sort(got[:, 0]), np.arange(0, 4000.0, 2) + 1)

    big = lazyh5.open_dataset(path, chunks={"sample": 1000})
    with pytest.warns(UserWarning, match="computes its whole chunk, 3.0x"):
        loader = BatchLoader(big.assign(x=_opaque(big["x"])), "x", block_size=row_block, seed=0)
    assert loader.plan.sizes.max() <= 450


@pytest.mark.parametrize("shuffle", [False, True])
def test_reused_buffers_never_overwrite_batches_still_held(tmp_path, shuffle):
    path = tmp_path / "reuse.h5"
    data = np.arange(3000 * 4, dtype="f4").reshape(3000, 4)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(50, 4))
        f.create_dataset("y", data=np.arange(3000), chunks=(50,))
    loader = BatchLoader(
        lazyh5.open_dataset(path),
        "x",
        "y",
        batch_size=40,
        shuffle=shuffle,
        seed=2,
        block_size="4KiB",
        window=2,
    )
    held = list(loader) + list(loader)  # two epochs, every batch kept
    for x, y in held:
        np.testing.assert_array_equal(x, data[y])
    del held, x, y
    # batches dropped as they come: the loader cycles through a few buffers only
    bases = set()
    for x, _ in loader:
        bases.add(id(x.base))
    assert len(bases) <= loader._buffers.limit


@pytest.mark.parametrize("table", [True, False], ids=["address-table", "chunk-by-chunk"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_lzf_chunks_stored_as_is_and_compressed_feed_exact_rows(
    tmp_path, shuffle, table, monkeypatch
):
    """Chunks LZF could not shrink are stored as is and copied straight from the file;
    the others are decoded: a block mixing both kinds still feeds exact rows."""
    if not table:
        monkeypatch.setattr("lazyh5.backend.rows._TABLE_MAX", 0)
    rng = np.random.default_rng(2)
    data = rng.random((3000, 40)).astype("f4")
    data[1000:2000] = np.round(data[1000:2000])  # these chunks compress
    path = tmp_path / "mixed.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(100, 40), compression="lzf")
        f.create_dataset("y", data=np.arange(3000), chunks=(500,), compression="lzf")
    ds = lazyh5.open_dataset(path)
    loader = BatchLoader(ds, "x", "y", batch_size=64, shuffle=shuffle, seed=3, block_size="64KiB")
    for _ in range(2):
        seen = []
        for x, y in loader:
            np.testing.assert_array_equal(x, data[y])
            seen.append(y.copy())
        assert sorted(np.concatenate(seen).tolist()) == list(range(3000))


@pytest.mark.parametrize("table", [True, False], ids=["address-table", "chunk-by-chunk"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_unwritten_chunks_feed_their_fill_value(tmp_path, shuffle, table, monkeypatch):
    if not table:  # datasets with too many chunks for one table ask HDF5 chunk by chunk
        monkeypatch.setattr("lazyh5.backend.rows._TABLE_MAX", 0)
    path = tmp_path / "holes.h5"
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", (1000, 300), "f4", chunks=(50, 300), fillvalue=-1.0)
        x[:200] = 1.0
        x[600:] = 2.0  # rows 200..599: chunks never written
        f.create_dataset("y", data=np.arange(1000), chunks=(100,))
    loader = BatchLoader(
        lazyh5.open_dataset(path),
        "x",
        "y",
        batch_size=64,
        shuffle=shuffle,
        seed=1,
        block_size="200KiB",
    )
    for _ in range(2):  # the second epoch reads through the cached chunk addresses
        for x, y in loader:
            want = np.where(y < 200, 1.0, np.where(y < 600, -1.0, 2.0))
            np.testing.assert_array_equal(x, np.broadcast_to(want[:, None], x.shape))
    rows = loader._direct["x"]._rows
    assert (rows.table is not None) == table


@pytest.mark.parametrize("last", ["x", "y"])  # the dataset stored last is cut
@pytest.mark.parametrize("shuffle", [False, True])
def test_file_truncated_under_a_loader_raises_corrupt_file_and_closes_descriptors(
    tmp_path, shuffle, last
):
    """Another program cuts the file short mid-training: reads come back short, the
    loader says which file and dataset, and no descriptor is left open."""
    import gc
    import os

    from lazyh5.errors import CorruptFileError

    path = tmp_path / "cut.h5"
    with h5py.File(path, "w") as f:
        data = {"x": (np.ones((4000, 256), "f4"), (100, 256)), "y": (np.arange(4000), (1000,))}
        for name in sorted(data, key=lambda n: n == last):
            f.create_dataset(name, data=data[name][0], chunks=data[name][1])
    loader = BatchLoader(
        lazyh5.open_dataset(path), "x", "y", batch_size=50, shuffle=shuffle, block_size="400KiB"
    )
    assert sum(len(y) for _, y in loader) == 4000  # the first pass caches the chunk addresses
    gc.collect()  # earlier tests' garbage would close its descriptors while we count
    fds = len(os.listdir("/proc/self/fd"))
    os.truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(CorruptFileError, match=rf"'/?{last}'.*cut\.h5.*damaged or truncated"):
        for _ in loader:
            pass
    assert len(os.listdir("/proc/self/fd")) == fds


def test_of_two_damaged_variables_the_error_raised_first_is_the_one_seen(tmp_path):
    """In one block, ``x``'s copies (handed to the decode pool) fail on a cut file while
    ``y``'s chunks fail to decode in the loader's thread: the loader waits for the
    copies, then raises ``y``'s error, not theirs."""
    import os

    from lazyh5.errors import CorruptFileError

    path = tmp_path / "cut.h5"
    with h5py.File(path, "w") as f:
        y = np.repeat(np.arange(4000, dtype="f4")[:, None], 300, axis=1)  # 1,200-byte rows
        f.create_dataset("y", data=y, chunks=(100, 300), compression="gzip")
        f.create_dataset("x", data=np.ones((4000, 256), "f4"), chunks=(100, 256))
        y_chunks = [f["y"].id.get_chunk_info(i) for i in range(f["y"].id.get_num_chunks())]
        x_start = min(f["x"].id.get_chunk_info(i).byte_offset for i in range(40))
    loader = BatchLoader(
        lazyh5.open_dataset(path), "x", "y", batch_size=50, shuffle=True, block_size="400KiB"
    )
    assert sum(len(y) for _, y in loader) == 4000  # the first pass caches the chunk addresses
    rng = np.random.default_rng(0)
    with open(path, "r+b") as fh:
        for info in y_chunks:
            fh.seek(info.byte_offset)
            fh.write(rng.bytes(info.size))
    os.truncate(path, x_start)  # every chunk of x is gone
    with pytest.raises(CorruptFileError, match=r"'/y'.*cut\.h5.*damaged or truncated"):
        for _ in loader:
            pass


@pytest.mark.parametrize("block_size", ["200KiB", "6KiB"], ids=["labels-whole", "labels-by-block"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_small_variables_read_whole_per_epoch_or_by_block(tmp_path, shuffle, block_size):
    """Labels (rows under 1 KiB) are read whole once per epoch when they fit in 4
    blocks, block by block otherwise; either way over start/end, every row once."""
    path = tmp_path / "small.h5"
    with h5py.File(path, "w") as f:
        x = np.repeat(np.arange(5000, dtype="f4")[:, None], 300, axis=1)  # 1,200-byte rows
        f.create_dataset("x", data=x, chunks=(50, 300))
        f.create_dataset("y", data=np.arange(5000), chunks=(700,), compression="lzf")
    ds = lazyh5.open_dataset(path)
    loader = BatchLoader(
        ds,
        "x",
        "y",
        batch_size=30,
        shuffle=shuffle,
        seed=4,
        start=123,
        end=4321,
        block_size=block_size,
    )
    assert loader._small == (["y"] if block_size == "200KiB" else [])
    for _ in range(2):
        ys = []
        for x, y in loader:
            np.testing.assert_array_equal(x[:, -1], y)
            ys.append(y.copy())
        assert sorted(np.concatenate(ys).tolist()) == list(range(123, 4321))


@pytest.mark.parametrize("shuffle", [False, True])
def test_sample_weights_stay_with_their_rows(feed_file, shuffle):
    with h5py.File(feed_file, "r+") as f:  # a weight that says which row it belongs to
        f["weight"][:] = np.arange(2000, dtype="f4") / 4
    ds = lazyh5.open_dataset(feed_file)
    ds = ds.assign(computed=ds["label"] * 0.5)  # and one computed by dask per block
    for name, factor in [("weight", 0.25), ("computed", 0.5)]:
        loader = BatchLoader(
            ds, "image", "label", sample_weight=name, batch_size=48, shuffle=shuffle, seed=3
        )
        labels = []
        for x, y, w in loader:
            np.testing.assert_array_equal(w, y * factor)
            np.testing.assert_array_equal(x[:, 0, 0], y)
            labels.append(y)
        assert sorted(np.concatenate(labels).tolist()) == list(range(2000))


def test_split_can_shuffle_validation(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(ds, "image", "label", seed=0, block_size="8KiB")
    train, val = loader.split(0.5, shuffle_validation=True)
    assert val.shuffle and train.shuffle
    got = _labels(val, 0)
    assert sorted(got.tolist()) == list(range(val.start, val.end))
    assert not np.array_equal(got, np.sort(got))  # shuffled
    assert not np.array_equal(got, _labels(val, 1))  # a new order each epoch
    assert not set(got.tolist()) & set(_labels(train, 0).tolist())


def test_seed_none_gives_fresh_orders_that_hold_within_a_loader(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    one = BatchLoader(ds, "image", "label", seed=None, block_size="8KiB")
    two = BatchLoader(ds, "image", "label", seed=None, block_size="8KiB")
    first = _labels(one, 0)
    assert sorted(first.tolist()) == list(range(2000))
    assert not np.array_equal(first, _labels(two, 0))  # 2000! orders: never the same
    # one loader's epoch is one order: streamed again, or read batch by batch
    np.testing.assert_array_equal(first, _labels(one, 0))
    np.testing.assert_array_equal(
        first, np.concatenate([one._read_batch(0, i)[1] for i in range(len(one))])
    )


def test_another_sample_dimension(tmp_path):
    # `dim` names the axis rows are taken along: here the second axis of x
    path = tmp_path / "t.h5"
    ds = lazyh5.create(
        path,
        {"x": ((3, 500), "f4"), "y": ((500,), "i8")},
        dims={"x": ("feature", "time"), "y": ("time",)},
    )
    ds["x"].h5[:] = np.arange(500, dtype="f4")[None, :] * np.array([[1], [2], [3]], "f4")
    ds["y"].h5[:] = np.arange(500)
    ds = lazyh5.open_dataset(path)
    loader = BatchLoader(ds, "x", "y", dim="time", batch_size=64, seed=0)
    assert len(loader) == 8
    labels = []
    for x, y in loader:
        assert x.shape == (len(y), 3)  # rows first
        np.testing.assert_array_equal(x, y[:, None] * np.array([1, 2, 3], "f4"))
        labels.append(y)
    assert sorted(np.concatenate(labels).tolist()) == list(range(500))
    with pytest.raises(DimensionError, match="sample"):
        BatchLoader(ds, "x", "y")  # the default dim is not there


def test_drop_remainder_with_split(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(ds, "image", "label", batch_size=300, drop_remainder=True, seed=0)
    train, val = loader.split(0.5)
    assert train.drop_remainder and val.drop_remainder
    for part in (train, val):
        sizes = [len(y) for _, y in part]
        assert sizes == [300] * (part.rows // 300) and len(part) == len(sizes)


def test_buffers_reuse_the_smallest_free_buffer_that_fits():
    """A block's input rows do not take a window's buffer while a smaller one fits."""
    from lazyh5.feed.buffers import Buffers

    pool = Buffers(limit=3, smallest=0)
    big, small = pool.empty((1000,), "u1"), pool.empty((10,), "u1")
    del big, small  # (holding the pool's buffers here would keep them in use)
    a = pool.empty((2, 4), "u1")
    b = pool.empty((100, 2), "f4")
    assert a.base is pool._held[1] and b.base is pool._held[0]
    assert len(pool._held) == 2
    held = pool.empty((3,), "u1")  # both in use: a new one
    assert len(pool._held) == 3 and not any(np.shares_memory(held, x) for x in (a, b))


def test_small_requests_never_take_a_pooled_buffer():
    """A window's labels, given the only free buffer (the last window's input rows),
    would make that window's input rows allocate a new one."""
    from lazyh5.feed.buffers import Buffers

    pool = Buffers(limit=4, smallest=1000)
    rows = pool.empty((1000,), "u1")
    del rows  # free: the only buffer in the pool
    labels = pool.empty((124,), "i8")  # 992 bytes
    assert labels.base is None and labels.shape == (124,) and labels.dtype == np.int64
    again = pool.empty((500, 2), "u1")
    assert again.base is pool._held[0] and len(pool._held) == 1


def test_a_shuffled_elementwise_loader_holds_one_input_buffer(tmp_path):
    """uint8 images made float32: each window's output, and one input buffer shared by
    the windows (the labels do not hold one)."""
    path = tmp_path / "u8.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=np.zeros((4096, 32, 32, 3), "u1"), chunks=(64, 32, 32, 3))
        f.create_dataset("label", data=np.arange(4096))
    ds = lazyh5.open_dataset(path)
    ds = ds.assign(image=ds["image"].astype("f4") / 255)
    loader = BatchLoader(ds, "image", "label", seed=0, block_size="1MiB")
    for _ in range(2):
        assert sum(len(y) for _, y in loader) == 4096
    sizes = sorted(b.nbytes for b in loader._buffers._held)
    window = loader.window * loader.plan.stops[0] * 32 * 32 * 3
    assert sizes == [window] + [window * 4] * 3, sizes


def test_defaults_are_the_documented_ones(feed_file):
    loader = BatchLoader(lazyh5.open_dataset(feed_file), "image", "label")
    assert (loader.dim, loader.batch_size, loader.shuffle, loader.seed) == (
        "sample",
        32,
        True,
        None,
    )
    assert (loader.start, loader.end, loader.drop_remainder) == (0, 2000, False)
    assert (loader.sample_weight, loader.prefetch, loader.window) == (None, 2, 4)
    assert (loader.shard.index, loader.shard.count, loader.shard_batches) == (0, 1, "pad")
    assert loader.block_size == "16MiB" and len(loader.plan) == 1  # 144,000 B in one block


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, "32"])
def test_a_bad_batch_size_names_the_file(feed_file, batch_size):
    with pytest.raises(lazyh5.errors.InvalidArgumentError) as info:
        BatchLoader(lazyh5.open_dataset(feed_file), "image", batch_size=batch_size)
    assert str(info.value) == (
        f"cannot feed {str(feed_file)!r}: batch_size must be a positive integer, got {batch_size!r}"
    )


def test_a_bad_range_names_the_dimension_and_the_file(feed_file):
    where = repr(str(feed_file))
    with pytest.raises(IndexError) as info:
        BatchLoader(lazyh5.open_dataset(feed_file), "image", start=-1)
    assert str(info.value) == (
        f"start=-1, end=None out of range for 2000 rows along 'sample' in {where}; "
        "expected 0 <= start <= end <= 2000"
    )
