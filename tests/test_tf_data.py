"""loader.tf(): exact cardinality (a real Keras fit counts its steps), and a real
tf.distribute.MirroredStrategy over two CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import h5py
import numpy as np
import pytest

import lazyh5

tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_cardinality_is_exact(feed_file, drop_remainder):
    ds = lazyh5.open_dataset(feed_file)
    loader = lazyh5.BatchLoader(
        ds, "image", "label", batch_size=300, seed=0, drop_remainder=drop_remainder
    )
    tfds = loader.tf()
    assert int(tfds.cardinality()) == len(loader) == (6 if drop_remainder else 7)
    for _ in range(2):  # every pass: an epoch of exactly that many batches
        assert sum(1 for _ in tfds) == len(loader)


def test_fit_runs_every_batch_without_running_out_of_data(feed_file):
    """Keras counts the steps of an epoch from the cardinality; without it, it runs until
    the data ends and warns "Your input ran out of data" every epoch."""
    keras = pytest.importorskip("keras")
    ds = lazyh5.open_dataset(feed_file)
    ds = ds.assign(image=ds["image"] / 2000.0, label=ds["label"] % 3)
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=64, seed=0)
    steps = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

    model = keras.Sequential([keras.Input((4, 4)), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hist = model.fit(loader.tf(), epochs=2, verbose=0, callbacks=[Count()])
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "ran out of data" in m], messages
    assert steps == [*range(len(loader))] * 2  # every batch of both epochs, counted
    assert len(hist.history["loss"]) == 2


_MIRRORED = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, lazyh5

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    ds = lazyh5.open_dataset(sys.argv[1])
    ds = ds.assign(image=ds["image"] / 2000.0, label=ds["label"])
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=64, seed=0)
    dist = strategy.experimental_distribute_dataset(loader.tf())
    epochs = []
    for _ in range(2):
        labels, rows_ok, per_replica = [], True, [0, 0]
        for x, y in dist:
            parts = zip(strategy.experimental_local_results(x),
                        strategy.experimental_local_results(y))
            for r, (xr, yr) in enumerate(parts):
                per_replica[r] += len(yr)
                rows_ok &= bool(np.all(np.rint(xr.numpy() * 2000.0) == yr.numpy()[:, None, None]))
                labels.extend(yr.numpy().tolist())
        epochs.append({"labels": labels, "rows_ok": rows_ok, "per_replica": per_replica})

    steps = []
    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

    fit_loader = lazyh5.BatchLoader(ds.assign(label=ds["label"] % 3), "image", "label",
                                    batch_size=64, seed=0)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4, 4)), keras.layers.Flatten(),
                                  keras.layers.Dense(3)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit(fit_loader.tf(), epochs=2, verbose=0, callbacks=[Count()])
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "epochs": epochs,
                      "steps": steps, "batches": len(fit_loader),
                      "loss": hist.history["loss"]}))
    """
)


def test_mirrored_strategy_on_two_cpu_devices(feed_file):
    pytest.importorskip("keras")
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", _MIRRORED, str(feed_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ran out of data" not in out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["replicas"] == 2
    orders = []
    for epoch in got["epochs"]:
        assert sorted(epoch["labels"]) == list(range(2000))  # every row once per epoch
        assert epoch["rows_ok"]  # each replica's images go with its labels
        assert min(epoch["per_replica"]) > 0 and sum(epoch["per_replica"]) == 2000
        orders.append(epoch["labels"])
    assert orders[0] != orders[1]  # a new order each epoch
    assert got["steps"] == [*range(got["batches"])] * 2
    assert all(np.isfinite(got["loss"]))


def test_x_only_and_weighted_datasets(feed_file):
    with h5py.File(feed_file, "r+") as f:
        f["weight"][:] = np.arange(2000, dtype="f4") / 4
    ds = lazyh5.open_dataset(feed_file)
    only_x = lazyh5.BatchLoader(ds, "image", batch_size=500, shuffle=False).tf()
    assert only_x.element_spec == tf.TensorSpec((None, 4, 4), tf.float32)
    got = np.concatenate([x.numpy() for x in only_x])
    np.testing.assert_array_equal(got[:, 0, 0], np.arange(2000, dtype="f4"))
    weighted = lazyh5.BatchLoader(
        ds, "image", "label", sample_weight="weight", batch_size=300, seed=0
    ).tf()
    assert [s.shape.as_list() for s in weighted.element_spec] == [[None, 4, 4], [None], [None]]
    labels = []
    for x, y, w in weighted:
        np.testing.assert_array_equal(w.numpy(), y.numpy() / 4)  # each weight with its row
        np.testing.assert_array_equal(x.numpy()[:, 0, 0], y.numpy())
        labels.append(y.numpy())
    assert sorted(np.concatenate(labels).tolist()) == list(range(2000))
    # weights without y: Keras' (x, None, sample_weight)
    no_y = lazyh5.BatchLoader(ds, "image", sample_weight="weight", batch_size=1000).tf()
    assert no_y.element_spec[1] == tf.type_spec_from_value(None)
    assert sum(len(w) for _, _, w in no_y) == 2000
