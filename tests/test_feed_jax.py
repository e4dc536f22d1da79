"""BatchLoader.jax(): batches as jax Arrays on the device(s), put ahead of use, on real
files with real JAX (CPU; two host devices in a subprocess for shardings)."""

from __future__ import annotations

import json
import re
import textwrap

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5 import BatchLoader
from lazyh5.errors import InvalidArgumentError
from tests._files import dict_loader
from tests._process import prefetch_threads, run_on_two_jax_cpus, wait_for_prefetch_threads
from tests.test_examples import run_example

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


def test_every_row_once_per_epoch_as_jax_arrays_on_the_device(feed_file):
    # small blocks: many windows, so block buffers are reused while batches are held
    loader = BatchLoader(
        lazyh5.open_dataset(feed_file), "image", "label", batch_size=50, seed=0, block_size="8KiB"
    )
    device = jax.devices()[0]
    for epoch in range(2):
        batches = list(loader.jax())  # all held at once
        assert len(batches) == len(loader) == 40
        for x, y in batches:
            assert isinstance(x, jax.Array) and isinstance(y, jax.Array)
            assert x.devices() == {device} and y.devices() == {device}
            assert x.shape == (50, 4, 4) and x.dtype == jnp.float32
            assert y.dtype == jax.dtypes.canonicalize_dtype(np.int64)  # int32 without x64
        labels = np.concatenate([np.asarray(y) for _, y in batches])
        images = np.concatenate([np.asarray(x) for x, _ in batches])
        assert not np.array_equal(labels, np.arange(2000))  # shuffled
        np.testing.assert_array_equal(np.sort(labels), np.arange(2000))
        np.testing.assert_array_equal(images, labels[:, None, None] * np.ones((1, 4, 4)))
        # the same batches, in the same order, as the numpy loader's epoch
        for (x, y), (nx, ny) in zip(batches, loader.batches(epoch), strict=True):
            np.testing.assert_array_equal(np.asarray(x), nx)
            np.testing.assert_array_equal(np.asarray(y), ny)
    assert loader.epoch == 2


def test_dict_inputs_and_sample_weight_keep_their_structure(feed_file):
    loader = dict_loader(feed_file)
    (x, y, w), (x2, y2, w2) = loader.jax()
    assert set(x) == {"pixels"} and isinstance(x["pixels"], jax.Array)
    assert x2["pixels"].shape == (36, 4, 4) and isinstance(y, jax.Array)
    np.testing.assert_array_equal(np.asarray(y2), np.arange(64, 100))
    assert isinstance(w, jax.Array) and float(w.sum()) == 64.0 and float(w2.sum()) == 36.0


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_prefetch_batches_are_put_ahead_of_the_one_in_use(feed_file, prefetch):
    loader = BatchLoader(
        lazyh5.open_dataset(feed_file), "image", "label", batch_size=100, shuffle=False
    )
    it = loader.jax(prefetch=prefetch)
    _, y = next(it)
    assert loader.state_dict()["batch"] == prefetch + 1  # batches taken from the loader
    assert it.state_dict()["batch"] == 1  # batches yielded: where to resume
    np.testing.assert_array_equal(np.asarray(y), np.arange(100))
    assert len([1, *it]) == 20


def test_resuming_from_the_iterators_state_yields_the_rest_of_the_epoch(feed_file):
    ds = lazyh5.open_dataset(feed_file)
    loader = BatchLoader(ds, "image", "label", batch_size=64, seed=3)
    it = loader.jax(prefetch=3)
    head = [np.asarray(y) for _, (_, y) in zip(range(7), it, strict=False)]
    state = json.loads(json.dumps(it.state_dict()))
    assert (state["epoch"], state["batch"]) == (0, 7)
    resumed = BatchLoader(ds, "image", "label", batch_size=64, seed=3)
    resumed.load_state_dict(state)
    rest = [np.asarray(y) for _, y in resumed.jax()]
    assert len(rest) == len(loader) - 7
    labels = np.concatenate(head + rest)
    np.testing.assert_array_equal(labels, np.concatenate([y for _, y in loader.batches(0)]))
    np.testing.assert_array_equal(np.sort(labels), np.arange(2000))


def test_an_abandoned_iterator_stops_the_prefetch_thread(feed_file):
    loader = BatchLoader(
        lazyh5.open_dataset(feed_file), "image", "label", batch_size=10, block_size="8KiB"
    )
    it = loader.jax()
    next(it)
    assert prefetch_threads()  # the loader reads ahead while the device batches wait
    del it
    assert not wait_for_prefetch_threads()


@pytest.mark.parametrize("prefetch", [-1, 1.5, "2", True])
def test_bad_prefetch_is_refused(feed_file, prefetch):
    loader = BatchLoader(lazyh5.open_dataset(feed_file), "label")
    with pytest.raises(InvalidArgumentError, match=r"feed\.h5.*prefetch >= 0"):
        loader.jax(prefetch=prefetch)


SHARDED = textwrap.dedent(
    """
    import sys
    import jax, numpy as np, lazyh5
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from lazyh5.errors import InvalidArgumentError

    assert len(jax.devices()) == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    ds = lazyh5.open_dataset(sys.argv[1])
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=50, seed=0)
    labels = []
    for x, y in loader.jax(sharding=sharding):
        for a in (x, y):
            assert a.sharding == sharding, a.sharding
            shards = sorted(a.addressable_shards, key=lambda s: s.index[0].start)
            assert [s.device for s in shards] == list(mesh.devices), shards
            assert [s.data.shape[0] for s in shards] == [25, 25]
            whole = np.asarray(a)
            np.testing.assert_array_equal(np.asarray(shards[1].data), whole[25:])
        labels.append(np.asarray(y))
    np.testing.assert_array_equal(np.sort(np.concatenate(labels)), np.arange(2000))

    for kwargs, hint in [
        (dict(batch_size=25), "choose a batch_size"),
        (dict(batch_size=50, end=1975), "drop_remainder=True"),
    ]:
        bad = lazyh5.BatchLoader(ds, "image", "label", seed=0, **kwargs)
        try:
            bad.jax(sharding=sharding)
        except InvalidArgumentError as err:
            assert "feed.h5" in str(err) and hint in str(err), err
            assert "25 rows" in str(err), err
        else:
            raise AssertionError(f"{kwargs}: not refused")
    dropped = lazyh5.BatchLoader(ds, "image", "label", batch_size=50, end=1975, seed=0,
                                 drop_remainder=True)
    assert sum(len(y) for _, y in dropped.jax(sharding=sharding)) == 1950
    print("sharded ok")
    """
)


def test_named_sharding_splits_each_batch_over_two_devices(feed_file, tmp_path):
    proc = run_on_two_jax_cpus(SHARDED, feed_file, cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sharded ok" in proc.stdout


def test_a_plain_jax_training_loop_learns(tmp_path):
    """Linear regression with jax.grad and SGD, fed by loader.jax(): the loss goes down."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 8)).astype("f4")
    w_true = rng.standard_normal(8).astype("f4")
    with h5py.File(tmp_path / "lin.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(256, 8))
        f.create_dataset("y", data=x @ w_true + 0.01 * rng.standard_normal(4096).astype("f4"))
    loader = BatchLoader(lazyh5.open_dataset(tmp_path / "lin.h5"), "x", "y", batch_size=128)

    def loss_fn(w, xb, yb):
        return jnp.mean((xb @ w - yb) ** 2)

    @jax.jit
    def step(w, xb, yb):
        loss, grad = jax.value_and_grad(loss_fn)(w, xb, yb)
        return w - 0.05 * grad, loss

    w = jnp.zeros(8)
    epochs = []
    for _ in range(3):
        losses = []
        for xb, yb in loader.jax():
            w, loss = step(w, xb, yb)
            losses.append(float(loss))
        epochs.append(losses)
    assert epochs[0][0] > 1.0
    assert np.mean(epochs[2]) < 0.01 * epochs[0][0]
    np.testing.assert_allclose(np.asarray(w), w_true, atol=0.05)


def test_train_jax_example(tmp_path):
    out = run_example("train_jax.py", tmp_path, "--epochs", "2")
    losses = [float(v) for v in re.findall(r"epoch \d: mean loss ([\d.]+)", out)]
    assert len(losses) == 2 and losses[1] < losses[0], out[-2000:]
    m = re.search(r"jax on \w+: val accuracy ([\d.]+)", out)
    assert m and 0 <= float(m[1]) <= 1, out[-2000:]
