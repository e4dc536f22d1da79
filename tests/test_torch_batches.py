"""BatchLoader.torch_batches(): real torch DataLoader workers (fork and spawn) handing over
runs of batches, cut in the training process: the loader's own batches, every row once
per epoch, structure kept, resuming mid-epoch, and clear errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5 import BatchLoader
from lazyh5.errors import InvalidArgumentError
from tests._files import dict_loader

torch = pytest.importorskip("torch")


def _loader(path, **kwargs) -> BatchLoader:
    """Blocks of 192 rows (windows of 4): runs of 3 batches of 50, and batches that
    span two windows."""
    kwargs = {"batch_size": 50, "seed": 0, "block_size": "16KiB", **kwargs}
    return BatchLoader(lazyh5.open_dataset(path), "image", "label", **kwargs)


def _labels(batches) -> list[tuple[int, ...]]:
    return [tuple(y.tolist()) for _, y in batches]


@pytest.mark.parametrize(
    ("context", "persistent", "shuffle"),
    [("fork", False, True), ("spawn", True, True), ("fork", True, False)],
    ids=["fork", "spawn-persistent", "fork-in-order"],
)
def test_the_loaders_batches_every_row_once_a_new_order_each_epoch(
    feed_file, context, persistent, shuffle
):
    loader = _loader(feed_file, shuffle=shuffle)
    batches = loader.torch_batches(
        num_workers=2, multiprocessing_context=context, persistent_workers=persistent
    )
    assert batches.runs == 3 and len(batches) == len(loader) == 40
    orders = []
    with h5py.File(feed_file, "r") as f:
        images = f["image"][...]
    for epoch in range(2):
        got = list(batches)
        assert all(type(b) is tuple and isinstance(b[0], torch.Tensor) for b in got)
        labels = np.concatenate([y.numpy() for _, y in got])
        np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in got]), images[labels])
        np.testing.assert_array_equal(np.sort(labels), np.arange(2000))
        # the loader's own batches of that epoch, the workers' interleaved
        assert sorted(_labels(got)) == sorted(_labels(loader.batches(epoch)))
        orders.append(labels)
    assert np.array_equal(orders[0], orders[1]) == (not shuffle)


def test_runs_hold_a_blocks_batches_and_are_cut_to_the_loaders_batches(feed_file):
    loader = _loader(feed_file, block_size="64KiB", batch_size=64)
    batches = loader.torch_batches(num_workers=2)
    assert batches.dataloader.persistent_workers  # by default, with workers
    assert not loader.torch_batches().dataloader.persistent_workers
    assert batches.runs == int(np.diff([loader.plan.starts[0], loader.plan.stops[0]])[0]) // 64
    items = list(batches.dataloader)  # what the workers hand over
    assert len(items) < len(loader) / 4  # far fewer hand-overs than batches
    assert all(len(run[1]) <= batches.runs * 64 for _, run in items)
    got = list(batches)
    assert [len(y) for _, y in got].count(64) == len(loader) - 1
    assert sorted(_labels(got)) == sorted(_labels(loader.batches(1)))


@pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning")
def test_pin_memory(feed_file):
    got = list(_loader(feed_file).torch_batches(num_workers=2, pin_memory=True))
    pinned = torch.cuda.is_available()  # without CUDA, torch hands them over as they are
    assert all(x.is_pinned() == pinned for x, _ in got)
    assert sorted(np.concatenate([y.numpy() for _, y in got])) == list(range(2000))


def test_shards_split_among_workers_cover_the_epoch_with_as_many_batches(feed_file):
    shards = [_loader(feed_file, shard=(i, 2)).torch_batches(num_workers=2) for i in (0, 1)]
    got = [list(s) for s in shards]
    assert len(got[0]) == len(got[1]) == len(shards[0]) == 20
    labels = [np.concatenate([y.numpy() for _, y in g]) for g in got]
    assert not set(labels[0]) & set(labels[1])
    np.testing.assert_array_equal(np.sort(np.concatenate(labels)), np.arange(2000))


def test_in_the_main_process_the_order_is_the_loaders(feed_file):
    loader = _loader(feed_file)
    batches = loader.torch_batches()  # num_workers=0
    assert _labels(batches) == _labels(loader.batches(0))
    batches.set_epoch(5)
    assert _labels(batches) == _labels(loader.batches(5))
    assert batches.state_dict()["epoch"] == 6


def test_dict_inputs_and_sample_weight_keep_their_structure(feed_file):
    loader = dict_loader(feed_file, batch_size=16, block_size="4KiB")
    got = list(loader.torch_batches(num_workers=2))
    assert [len(y) for _, y, _ in got] == [16] * 6 + [4]
    x, _, w = got[0]
    assert set(x) == {"pixels"} and x["pixels"].shape == (16, 4, 4) and float(w.sum()) == 16
    np.testing.assert_array_equal(np.sort(np.concatenate([y for _, y, _ in got])), np.arange(100))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_mid_epoch_serves_exactly_the_rest_then_the_next_epoch(feed_file, workers):
    batches = _loader(feed_file).torch_batches(num_workers=workers)
    taken = []
    for batch in batches:
        taken.append(batch)
        if len(taken) == 13:
            break
    state = json.loads(json.dumps(batches.state_dict()))  # saved with the model
    assert state["epoch"] == 0 and len(state.get("worker_batches", [0])) == max(1, workers)
    resumed = _loader(feed_file).torch_batches(num_workers=workers)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state  # not iterated yet: still where it was
    rest = list(resumed)
    whole = _labels(_loader(feed_file).batches(0))
    assert sorted(_labels(taken) + _labels(rest)) == sorted(whole)  # each batch once
    if workers == 0:
        assert _labels(taken) + _labels(rest) == whole  # in the loader's order
    assert resumed.state_dict()["epoch"] == 1 and resumed.state_dict()["batch"] == 0
    assert sorted(_labels(resumed)) == sorted(_labels(_loader(feed_file).batches(1)))


def test_a_resumed_iteration_saves_the_workers_it_has_not_heard_from_where_they_began(
    feed_file,
):
    batches = _loader(feed_file).torch_batches(num_workers=2)
    it = iter(batches)
    for _ in range(13):
        next(it)
    state = batches.state_dict()
    resumed = _loader(feed_file).torch_batches(num_workers=2)
    resumed.load_state_dict(state)
    again = iter(resumed)
    next(again)  # the first run comes from worker 0
    first, second = state["worker_batches"]
    assert resumed.state_dict()["worker_batches"] == [first + 1, second]


def test_the_state_after_the_epochs_last_batch_is_the_next_epoch(feed_file):
    batches = _loader(feed_file).torch_batches(num_workers=2)
    it = iter(batches)
    for _ in range(len(batches)):  # every batch taken, the iterator not yet exhausted
        next(it)
    state = batches.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 0) and "worker_batches" not in state


def test_a_loaders_state_is_split_among_the_workers(feed_file):
    loader = _loader(feed_file)
    it = iter(loader)
    done = [next(it) for _ in range(11)]
    batches = _loader(feed_file).torch_batches(num_workers=2)
    batches.load_state_dict(loader.state_dict())
    rest = list(batches)
    assert sorted(_labels(done) + _labels(rest)) == sorted(_labels(loader.batches(0)))


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker:UserWarning")
def test_errors_are_clear(feed_file):
    loader = _loader(feed_file)
    where = repr(str(feed_file))
    for name in ("batch_size", "shuffle", "collate_fn"):
        with pytest.raises(InvalidArgumentError) as info:
            loader.torch_batches(**{name: None})
        assert str(info.value) == (
            f"torch_batches() over {where} sets the DataLoader's batching itself: leave out "
            f"{name}= (batch_size and shuffle are the loader's)"
        )
    two = loader.torch_batches(num_workers=2)
    next(iter(two))
    state = two.state_dict()
    three = _loader(feed_file).torch_batches(num_workers=3)
    with pytest.raises(InvalidArgumentError, match="holds the next batches of 2 workers, this "):
        three.load_state_dict(state)
    before = two.dataset._slots.clone()
    for bad in ([3, 99], [3, "1"], [3, 1.5]):
        with pytest.raises(InvalidArgumentError, match=r"worker_batches=\[3, .*: each must be an"):
            two.load_state_dict({**state, "worker_batches": bad})
        assert torch.equal(two.dataset._slots, before)  # nothing set
    unseeded = _loader(feed_file, seed=None).torch_batches()
    with pytest.raises(InvalidArgumentError, match="has seed=None, so its order cannot"):
        unseeded.state_dict()
    assert repr(two) == (
        f"<lazyh5 torch batches over {where}: 2 worker(s), runs of up to 3 batches of 50>"
    )
