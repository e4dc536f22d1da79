"""The loader's shards, saved states, reads and errors, pinned down by mutants that
survived: ``shard="auto"`` from TF_CONFIG, torch.distributed and Keras, states and their
refusals word for word, direct reads, the pool, labels read whole (``label[i] == i``)."""

from __future__ import annotations

import gc
import json

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5 import BatchLoader
from tests.test_mutants_feed import _owners, _root

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
        '{"cluster": ["a"], "task": {"type": "worker", "index": 0}}',
        '{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": 1}}',
        '{"cluster": {"worker": ["a"]}, "task": {"type": "worker", "index": -1}}',
        '{"cluster": {"chief": ["a"]}, "task": {"type": "chief", "index": 1}}',
        '{"cluster": {"chief": ["a"], "worker": ["b"]}, "task": {"type": "worker", "index": -1}}',
        '{"cluster": {"chief": ["a"], "worker": ["b"]}, "task": {"type": "chief", "index": 1}}',
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


def test_shard_auto_names_the_task_missing_from_tf_config(feed_file, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    _alone(feed_file)
    task = {"type": "worker", "index": 2}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a", "b"]}, "task": task}))
    with pytest.raises(lazyh5.errors.InvalidArgumentError, match="is not in the cluster") as info:
        _auto(feed_file)
    assert repr(task) in str(info.value)


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
