"""A real Keras fit/evaluate/predict from a BatchLoader, on TensorFlow and on JAX."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import lazyh5

_TRAIN = textwrap.dedent(
    """
    import sys, numpy as np, keras, lazyh5
    keras.utils.set_random_seed(0)
    ds = lazyh5.open_dataset(sys.argv[1])
    ds = ds.assign(image=ds["image"].astype("float32") / 255.0)
    train, val = lazyh5.BatchLoader(ds, "image", "label", batch_size=32, seed=0).split(0.8)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    before = model.evaluate(val.keras(), verbose=0)[0]
    hist = model.fit(train.keras(), validation_data=val.keras(), epochs=3, verbose=0,
                     shuffle=False)  # the loader shuffles
    after = model.evaluate(val.keras(), verbose=0)[0]
    pred = model.predict(val.keras(), verbose=0)
    print(keras.backend.backend(), before, after, hist.history["loss"][0],
          hist.history["loss"][-1], pred.shape[0], hist.history["val_accuracy"][-1])
    """
)


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    """Images whose brightness gives the class: a linear model learns it quickly."""
    path = tmp_path_factory.mktemp("keras") / "learn.h5"
    rng = np.random.default_rng(0)
    n = 1200
    label = rng.integers(0, 4, n)
    image = (label[:, None, None, None] * 60 + rng.integers(0, 40, (n, 8, 8, 1))).astype("u1")
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image, chunks=(100, 8, 8, 1), compression="lzf")
        f.create_dataset("label", data=label, chunks=(100,))
    return path


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_fit_lowers_loss(learnable, backend):
    if backend == "jax":
        pytest.importorskip("jax")
    pytest.importorskip(backend)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", _TRAIN, str(learnable)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    name, before, after, first, last, n_pred, val_acc = out.stdout.split()[-7:]
    assert name == backend
    assert float(after) < 0.75 * float(before)
    assert float(last) < float(first)
    assert int(n_pred) == 240  # predict saw every validation row once
    assert float(val_acc) > 0.7


def test_tf_dataset_element_spec(learnable):
    tf = pytest.importorskip("tensorflow")
    ds = lazyh5.open_dataset(learnable)
    loader = lazyh5.BatchLoader(ds, {"img": "image"}, "label", batch_size=50, seed=0)
    tfds = loader.tf()
    x_spec, y_spec = tfds.element_spec
    assert x_spec["img"].shape.as_list() == [None, 8, 8, 1] and x_spec["img"].dtype == tf.uint8
    assert y_spec.shape.as_list() == [None] and y_spec.dtype == tf.int64
    labels = np.concatenate([y.numpy() for _, y in tfds])
    assert sorted(labels.tolist()) == sorted(ds["label"].values.tolist())
    second = np.concatenate([y.numpy() for _, y in tfds])
    assert not np.array_equal(labels, second)  # a new epoch, a new order


def test_pydataset_epochs_and_peeks(learnable):
    pytest.importorskip("keras")
    ds = lazyh5.open_dataset(learnable)
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=100, seed=0)
    pyds = loader.keras()
    assert len(pyds) == 12
    peek = pyds[0][1]  # outside an epoch: batch 0 of the next epoch, read directly
    np.testing.assert_array_equal(peek, next(loader.batches(0))[1])
    epochs = []
    for _ in range(2):
        pyds.on_epoch_begin()
        # in order: from the stream; each batch i is batch i of the epoch
        epochs.append(np.concatenate([pyds[i][1] for i in range(12)]))
        pyds.on_epoch_end()
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(ds["label"].values)
    assert not np.array_equal(epochs[0], epochs[1])
    np.testing.assert_array_equal(epochs[1], np.concatenate([y for _, y in loader.batches(1)]))
    with pytest.raises(IndexError):
        pyds[12]


def test_pydataset_without_shuffle_serves_exact_batches(learnable):
    pytest.importorskip("keras")
    ds = lazyh5.open_dataset(learnable)
    pyds = lazyh5.BatchLoader(ds, "image", "label", batch_size=100, shuffle=False).keras()
    pyds.on_epoch_begin()
    for i in [0, 1, 2, 7, 3, 11]:  # in order from the stream, out of order read directly
        np.testing.assert_array_equal(pyds[i][1], ds["label"].values[i * 100 : (i + 1) * 100])
    pyds.on_epoch_end()


def test_unshuffled_loader_warns_when_keras_shuffles_indices(learnable):
    pytest.importorskip("keras")
    ds = lazyh5.open_dataset(learnable)
    pyds = lazyh5.BatchLoader(ds, "image", "label", batch_size=10, shuffle=False).keras()
    pyds.on_epoch_begin()
    order = np.random.default_rng(0).permutation(len(pyds))
    with pytest.warns(UserWarning, match="shuffle=False to fit"):
        got = {int(i): pyds[int(i)][1] for i in order}
    pyds.on_epoch_end()
    for i, labels in got.items():  # still exactly the batch asked for
        np.testing.assert_array_equal(labels, ds["label"].values[i * 10 : (i + 1) * 10])


def test_fit_streams_each_epoch_between_keras_epoch_callbacks(learnable):
    """Keras calls PyDataset.on_epoch_begin (from Keras 3.5 on): fit's batches come from
    the loader's stream, not one direct (random) read per batch, when fit does not
    shuffle batch indices (the loader shuffles)."""
    keras = pytest.importorskip("keras")
    ds = lazyh5.open_dataset(learnable)
    ds = ds.assign(image=ds["image"].astype("float32") / 255.0)
    pyds = lazyh5.BatchLoader(ds, "image", "label", batch_size=100, seed=0).keras()
    begins, direct = [], []
    begin, read = pyds.on_epoch_begin, pyds._direct
    pyds.on_epoch_begin = lambda: (begins.append(1), begin())[1]
    pyds._direct = lambda index: (direct.append(index), read(index))[1]
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(pyds, epochs=2, verbose=0, shuffle=False)
    assert len(begins) == 2
    assert len(direct) <= 2, direct  # Keras may peek at a batch before the first epoch


def test_keras_kwargs_reach_the_pydataset_and_fit_with_drop_remainder(learnable):
    keras = pytest.importorskip("keras")
    ds = lazyh5.open_dataset(learnable)
    ds = ds.assign(image=ds["image"].astype("float32") / 255.0)
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=128, seed=0, drop_remainder=True)
    pyds = loader.keras(workers=2, use_multiprocessing=False, max_queue_size=3)
    assert (pyds.workers, pyds.use_multiprocessing, pyds.max_queue_size) == (2, False, 3)
    assert len(pyds) == 1200 // 128  # the last 48 rows are dropped
    assert [len(pyds[i][1]) for i in range(len(pyds))] == [128] * (1200 // 128)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = []

    class Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

    model.fit(pyds, epochs=1, verbose=0, shuffle=False, callbacks=[Steps()])  # 2 threads
    assert len(steps) == 1200 // 128
