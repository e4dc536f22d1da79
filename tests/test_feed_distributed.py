"""Shards, Keras index semantics and resumable epochs, on real files with real Keras."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import lazyh5
from lazyh5.errors import InvalidArgumentError
from lazyh5.feed.loader import BatchLoader
from tests._process import run_on_two_jax_cpus

pytestmark = pytest.mark.usefixtures("close_leftover_files")


def _labels(batches):
    return np.concatenate([b[1] for b in batches])


def _loader(path, **kwargs):
    kwargs = {"batch_size": 32, "seed": 3, "block_size": "8KiB", "window": 3} | kwargs
    return BatchLoader(lazyh5.open_dataset(path), "image", "label", **kwargs)


# -- shards ---------------------------------------------------------------------------
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("count", [2, 3, 7])
@pytest.mark.parametrize("mode", ["pad", "drop"])
def test_shards_cover_the_epoch_once_with_as_many_batches(feed_file, shuffle, count, mode):
    shards = [
        _loader(feed_file, shuffle=shuffle, shard=(i, count), shard_batches=mode)
        for i in range(count)
    ]
    for epoch in range(2):
        got = [_labels(s.batches(epoch)) for s in shards]
        lengths = {len(list(s.batches(epoch))) for s in shards}
        assert lengths == {len(shards[0])}  # same batches per shard, every epoch
        rows = np.concatenate(got)
        unique, counts = np.unique(rows, return_counts=True)
        if mode == "pad":
            assert len(rows) == count * -(-2000 // count)
            assert set(unique) == set(range(2000))
            assert counts.sum() - len(unique) == len(rows) - 2000 < count  # few repeats
        else:
            assert len(rows) == count * (2000 // count) and counts.max() == 1
            assert 2000 - len(unique) < count
        for s in shards:  # x and y rows stay paired
            for x, y in s.batches(epoch):
                np.testing.assert_array_equal(x[:, 0, 0], y.astype("f4"))
    if shuffle:  # a new order, and new rows per shard, each epoch
        assert set(_labels(shards[0].batches(0))) != set(_labels(shards[0].batches(1)))
    else:  # in order: shard i holds a run of the file
        first = _labels(shards[0].batches(0))
        np.testing.assert_array_equal(first, np.arange(len(first)))


def test_shards_read_whole_blocks_but_at_their_edges(feed_file):
    count = 3
    for i in range(count):
        loader = _loader(feed_file, shard=(i, count))
        full = {(a, b) for a, b in zip(loader.plan.starts, loader.plan.stops, strict=True)}
        pieces = [
            (int(a), int(b))
            for w in loader._order(0).windows
            for a, b in zip(w.starts, w.stops, strict=True)
        ]
        partial = [p for p in pieces if p not in full]
        assert len(partial) <= 2, partial
        assert len(pieces) >= len(loader.plan) // count - 1


def test_same_seed_same_shards_on_every_process(feed_file):
    one = _labels(_loader(feed_file, shard=(1, 2)).batches(4))
    two = _labels(_loader(feed_file, shard=(1, 2)).batches(4))
    np.testing.assert_array_equal(one, two)


def test_split_and_shard_compose(feed_file):
    halves = [_loader(feed_file, shard=(i, 2)).split(0.75) for i in range(2)]
    train = [set(_labels(t)) for t, _ in halves]
    val = [set(_labels(v)) for _, v in halves]
    assert not train[0] & train[1] and not val[0] & val[1]
    assert train[0] | train[1] == set(range(1500))
    assert val[0] | val[1] == set(range(1500, 2000))
    assert halves[0][0].shard.count == 2 and not halves[0][1].shuffle


def test_shard_auto_reads_the_active_framework(feed_file, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    alone = _loader(feed_file, shard="auto")
    # Tests start frameworks in subprocesses only: none is active in this process.
    assert alone.shard.source == "no distributed framework active", alone.shard.source
    assert (alone.shard.index, alone.shard.count) == (0, 1)
    assert "shard 0 of 1 (from " in repr(alone)
    cluster = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(cluster | {"task": {"type": "worker", "index": 1}}))
    loader = _loader(feed_file, shard="auto")
    assert (loader.shard.index, loader.shard.count) == (2, 3)
    assert "shard 2 of 3 (from TF_CONFIG)" in repr(loader)
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(InvalidArgumentError, match="TF_CONFIG"):
        _loader(feed_file, shard="auto")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shard": (2, 2)}, "0 <= index < count"),
        ({"shard": (-1, 2)}, "0 <= index < count"),
        ({"shard": (0, 0)}, "0 <= index < count"),
        ({"shard": (0.5, 2)}, "0 <= index < count"),
        ({"shard": (1,)}, "0 <= index < count"),
        ({"shard": "all"}, "or 'auto'"),
        ({"shard": (0, 2), "shard_batches": "cycle"}, "shard_batches must be 'pad'"),
        ({"shard": (0, 2), "seed": None}, "same seed"),
        ({"shard": (0, 3), "start": 0, "end": 2, "shard_batches": "drop"}, "fewer rows"),
    ],
)
def test_bad_shard_values(feed_file, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match) as info:
        _loader(feed_file, **kwargs)
    assert "feed.h5" in str(info.value)


# -- Keras index semantics ------------------------------------------------------------
def test_two_keras_datasets_even_and_odd_indices_cover_the_epoch(feed_file):
    pytest.importorskip("keras")
    loader = _loader(feed_file, batch_size=32)
    even, odd = loader.keras(), loader.keras()
    reads = []
    for ds in (even, odd):
        direct = ds._direct
        ds._direct = lambda batch, direct=direct: (reads.append(batch), direct(batch))[1]
        ds.on_epoch_begin()
    n = len(even)
    got = [even[i][1] for i in range(0, n, 2)] + [odd[i][1] for i in range(1, n, 2)]
    rows = np.concatenate(got)
    assert len(rows) == 2000 and sorted(rows.tolist()) == list(range(2000))
    assert reads == []  # both strided patterns came from the stream
    expected = list(loader.batches(0))
    np.testing.assert_array_equal(even[4][1], expected[4][1])  # batch i of the epoch


def test_keras_main_sharded_adapter_index_pattern(feed_file):
    """Keras' sharded PyDataset adapter (its main branch) asks shard s of k for
    ``indices[s::k]``, where ``indices`` is ``range(n)``, shuffled by
    ``random.Random(epoch)`` when fit shuffles: the same list on every process."""
    pytest.importorskip("keras")
    loader = _loader(feed_file, batch_size=50)
    for shuffle in (False, True):
        indices = list(range(len(loader)))
        if shuffle:
            random.Random(0).shuffle(indices)
        rows = []
        for s in range(3):
            ds = loader.keras()
            ds.on_epoch_begin()
            rows += [ds[i][1] for i in indices[s::3]]
            ds.on_epoch_end()
        assert sorted(np.concatenate(rows).tolist()) == list(range(2000))


def test_keras_random_requests_are_exact_and_warn(feed_file):
    pytest.importorskip("keras")
    loader = _loader(feed_file, batch_size=20)
    expected = [y for _, y in loader.batches(0)]
    ds = loader.keras()
    ds.on_epoch_begin()
    order = np.random.default_rng(0).permutation(len(ds))
    with pytest.warns(UserWarning, match="shuffle=False to fit"):
        for i in order:
            np.testing.assert_array_equal(ds[int(i)][1], expected[i])
    ds.on_epoch_end()


@pytest.mark.parametrize("fixture", ["feed_file", "lzf_feed_file"])
def test_direct_reads_match_the_stream(request, fixture):
    """Each batch read directly (row runs of a plain file, whole chunks of an lzf one;
    the padded shard repeats rows) equals that batch of the stream."""
    path = request.getfixturevalue(fixture)
    ds = lazyh5.open_dataset(path)
    for kwargs in ({}, {"shard": (2, 3)}, {"shuffle": False, "shard": (2, 3)}):
        loader = BatchLoader(ds, "image", "label", batch_size=24, seed=5, window=2, **kwargs)
        streamed = list(loader.batches(1))
        picks = [*np.random.default_rng(1).permutation(len(loader))[:12], len(loader) - 1]
        for i in picks:  # the last batch of shard 2 holds the repeated row
            x, y = loader._read_batch(1, int(i))
            np.testing.assert_array_equal(x, streamed[i][0])
            np.testing.assert_array_equal(y, streamed[i][1])


_DATA_PARALLEL = textwrap.dedent(
    """
    import sys, numpy as np, keras, lazyh5
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    ds = lazyh5.open_dataset(sys.argv[1])
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=64, seed=0, shard="auto")
    seen = []
    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)
    model = keras.Sequential([keras.Input((4, 4)), keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    pyds = loader.keras()
    hist = model.fit(pyds, epochs=2, shuffle=False, verbose=0, callbacks=[Count()])
    print(len(keras.distribution.list_devices()), repr(loader), len(seen), len(pyds),
          pyds._random, sep="|")
    """
)


def test_fit_under_keras_data_parallel_on_two_jax_devices(feed_file):
    pytest.importorskip("keras")
    pytest.importorskip("jax")
    out = run_on_two_jax_cpus(_DATA_PARALLEL, feed_file, keras=True)
    assert out.returncode == 0, out.stderr[-3000:]
    devices, text, steps, batches, random_reads = out.stdout.strip().splitlines()[-1].split("|")
    assert devices == "2"
    assert "shard 0 of 1 (from keras.distribution)" in text
    assert int(steps) == 2 * int(batches) == 2 * 32 and random_reads == "0"


_TWO_PROCESSES = textwrap.dedent(
    """
    import sys, numpy as np, jax
    jax.distributed.initialize(f"127.0.0.1:{sys.argv[2]}", num_processes=2,
                               process_id=int(sys.argv[3]))
    import keras, lazyh5
    keras.utils.set_random_seed(0)  # the same initial weights on both processes
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(auto_shard_dataset=False))
    ds = lazyh5.open_dataset(sys.argv[1])
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=50, seed=0, shard="auto")
    model = keras.Sequential([keras.Input((4, 4)), keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    hist = model.fit(loader.keras(), epochs=2, shuffle=False, verbose=0)
    rows = np.concatenate([y for _, y in loader.batches(0)])
    print(repr(loader), len(hist.history["loss"]), ",".join(map(str, rows)), sep="|")
    """
)


def test_fit_in_two_jax_processes_each_feeds_its_shard(feed_file):
    """Keras 3.15 under a two-process DataParallel (JAX on CPU, gloo collectives): with
    ``auto_shard_dataset=False`` and ``shard="auto"``, each process trains on its own
    rows, with as many batches (or the collectives would hang)."""
    pytest.importorskip("keras")
    pytest.importorskip("jax")
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    env.pop("TF_CONFIG", None)
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _TWO_PROCESSES, str(feed_file), str(port), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    rows = []
    for i, (p, (out, err)) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, err[-3000:]
        text, epochs, labels = out.strip().splitlines()[-1].split("|")
        assert f"shard {i} of 2 (from jax.process_index())" in text and epochs == "2"
        rows.append(set(map(int, labels.split(","))))
    assert not rows[0] & rows[1] and rows[0] | rows[1] == set(range(2000))


# -- resuming -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"shuffle": False}, {"shard": (1, 3)}, {"shard": (0, 2), "drop_remainder": True}],
)
@pytest.mark.parametrize("k", [0, 1, 17, 62])
def test_resume_yields_the_rest_then_the_same_epochs(feed_file, kwargs, k):
    original = _loader(feed_file, **kwargs)
    if k >= len(original):
        k = len(original) - 1
    reference = _loader(feed_file, **kwargs)
    epochs = [_labels(reference) for _ in range(3)]
    it = iter(original)
    for _ in range(k):
        next(it)
    state = json.loads(json.dumps(original.state_dict()))
    assert (state["epoch"], state["batch"]) == (0, k)
    resumed = _loader(feed_file, **kwargs)
    resumed.load_state_dict(state)
    rest = _labels(resumed) if k < len(resumed) else np.zeros(0)
    np.testing.assert_array_equal(rest, epochs[0][k * 32 :])
    np.testing.assert_array_equal(_labels(resumed), epochs[1])
    np.testing.assert_array_equal(_labels(resumed), epochs[2])
    assert resumed.state_dict()["epoch"] == 3 and resumed.state_dict()["batch"] == 0


def test_resume_a_split_loader_and_a_finished_epoch(feed_file):
    train, _ = _loader(feed_file).split(0.5)
    first = _labels(train)
    state = train.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 0)
    again, _ = _loader(feed_file).split(0.5)
    again.load_state_dict(state)
    assert set(_labels(again)) == set(first) and again.epoch == 2


def test_adapters_made_after_a_finished_epoch_serve_the_next_one(feed_file):
    """torch(), torch_batches() and keras() start where the loader would go on: after an
    epoch iterated to its end, the next epoch, not the end of the finished one."""
    loader = _loader(feed_file)
    list(loader)
    following = [tuple(y.tolist()) for _, y in _loader(feed_file).batches(1)]
    pytest.importorskip("keras")
    pyds = loader.keras()
    assert len(pyds) == len(loader)
    pyds.on_epoch_begin()
    assert [tuple(pyds[i][1].tolist()) for i in range(len(pyds))] == following
    if importlib.util.find_spec("torch") is None:
        return
    assert [tuple(y.tolist()) for _, y in loader.torch()] == following
    assert [tuple(y.tolist()) for _, y in loader.torch_batches()] == following


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"batch_size": 16}, "batch_size=32"),
        ({"seed": 4}, "seed=3"),
        ({"start": 100}, "rows="),
        ({"shard": (1, 2)}, "shard="),
        ({"window": 2}, "window="),
    ],
)
def test_load_state_refuses_another_order(feed_file, change, match):
    state = _loader(feed_file).state_dict()
    other = _loader(feed_file, **change)
    with pytest.raises(InvalidArgumentError, match=match) as info:
        other.load_state_dict(state)
    assert "feed.h5" in str(info.value)


def test_load_state_refuses_other_files_and_bad_states(feed_file, tmp_path):
    from tests._files import write_feed

    state = _loader(feed_file).state_dict()
    other = _loader(write_feed(tmp_path / "other.h5"))
    with pytest.raises(InvalidArgumentError, match=r"source='feed\.h5'"):
        other.load_state_dict(state)
    loader = _loader(feed_file)
    for bad in ({}, [1, 2], state | {"batch": 99}, state | {"epoch": -1}):
        with pytest.raises(InvalidArgumentError):
            loader.load_state_dict(bad)
    with pytest.raises(InvalidArgumentError, match="seed=None"):
        _loader(feed_file, seed=None).state_dict()


def test_resume_through_keras(feed_file):
    pytest.importorskip("keras")
    reference = _loader(feed_file)
    epochs = [_labels(reference.batches(e)) for e in range(2)]
    pyds = _loader(feed_file).keras()
    pyds.on_epoch_begin()
    for i in range(5):
        pyds[i]
    state = json.loads(json.dumps(pyds.state_dict(batches=4)))  # 4 trained, 1 fetched ahead
    resumed_loader = _loader(feed_file)
    resumed_loader.load_state_dict(state)
    resumed = resumed_loader.keras()
    assert len(resumed) == len(reference) - 4
    resumed.on_epoch_end()  # Keras calls it before its first epoch: no effect
    resumed.on_epoch_begin()
    rest = np.concatenate([resumed[i][1] for i in range(len(resumed))])
    resumed.on_epoch_end()
    np.testing.assert_array_equal(rest, epochs[0][4 * 32 :])
    assert len(resumed) == len(reference)
    resumed.on_epoch_begin()
    np.testing.assert_array_equal(
        np.concatenate([resumed[i][1] for i in range(len(resumed))]), epochs[1]
    )


def test_resume_keras_fit_from_a_checkpoint_callback(feed_file, tmp_path):
    keras = pytest.importorskip("keras")
    path = tmp_path / "loader.json"

    class SaveLoaderState(keras.callbacks.Callback):
        def __init__(self, pyds, stop_at=None):
            super().__init__()
            self.pyds, self.stop_at, self.steps = pyds, stop_at, 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            path.write_text(json.dumps(self.pyds.state_dict(batches=batch + 1)))
            if batch + 1 == self.stop_at:
                self.model.stop_training = True

    def model():
        m = keras.Sequential([keras.Input((4, 4)), keras.layers.Flatten(), keras.layers.Dense(1)])
        m.compile("sgd", "mse")
        return m

    pyds = _loader(feed_file).keras()
    model().fit(pyds, epochs=1, shuffle=False, verbose=0, callbacks=[SaveLoaderState(pyds, 10)])
    pyds.on_epoch_end()  # Keras does not end an epoch it stops: close the stream here
    state = json.loads(path.read_text())
    assert (state["epoch"], state["batch"]) == (0, 10)
    loader = _loader(feed_file)
    loader.load_state_dict(state)
    resumed = loader.keras()
    rest = SaveLoaderState(resumed)
    model().fit(resumed, epochs=1, shuffle=False, verbose=0, callbacks=[rest])
    assert rest.steps == len(loader) - 10
    state = json.loads(path.read_text())
    assert (state["epoch"], state["batch"]) == (1, 0)  # the next epoch starts afresh
    assert len(resumed) == len(loader)


_MAKE_DATA = """
import h5py, numpy as np
with h5py.File("data.h5", "w") as f:
    f.create_dataset("image", data=np.random.default_rng(0).random((1000, 8, 8), "f4"),
                     chunks=(100, 8, 8))
    f.create_dataset("label", data=np.arange(1000) % 10, chunks=(500,))
"""


def test_distributed_training_docs_code_runs(tmp_path):
    """The code of docs/feeding.md's "Distributed training" section, run as one script
    on the JAX backend with two CPU devices."""
    pytest.importorskip("keras")
    pytest.importorskip("jax")
    text = (Path(__file__).resolve().parent.parent / "docs" / "feeding.md").read_text()
    section = text[text.index("## Distributed training") : text.index("## Threads and")]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "shard=" in code and "load_state_dict" in code and "DataParallel" in code
    out = run_on_two_jax_cpus(_MAKE_DATA + code, cwd=tmp_path, keras=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "shard 0 of 1" in out.stdout


def test_direct_reads_of_a_truncated_file_raise_corrupt_file(tmp_path):
    """A batch read directly (a random Keras index), row by row, from a file cut short
    under the loader: the error names the file and dataset, no descriptor is left."""
    import h5py

    from lazyh5.errors import CorruptFileError

    path = tmp_path / "cut.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.ones((4000, 256), "f4"), chunks=(100, 256))
        f.create_dataset("y", data=np.arange(4000), chunks=(1000,))
    loader = BatchLoader(lazyh5.open_dataset(path), "x", "y", batch_size=50, seed=0)
    assert len(loader._read_batch(0, 3)[1]) == 50  # caches the chunk addresses
    fds = len(os.listdir("/proc/self/fd"))
    os.truncate(path, os.path.getsize(path) // 2)
    with pytest.raises(CorruptFileError, match=r"cut\.h5.*damaged or truncated"):
        for i in range(len(loader)):
            loader._read_batch(0, i)
    assert len(os.listdir("/proc/self/fd")) == fds
