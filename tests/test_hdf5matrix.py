"""HDF5Matrix: Keras 2 semantics, no silent full loads, and the one-line fit migration."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5.compat import hdf5matrix as compat
from lazyh5.compat.hdf5matrix import HDF5Matrix
from lazyh5.errors import InvalidArgumentError


@pytest.fixture
def seedish(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=np.arange(1000 * 12, dtype="f4").reshape(1000, 2, 2, 3))
        f.create_dataset("label", data=np.arange(1000))
    return path


def test_semantics(seedish):
    x = HDF5Matrix(seedish, "image", start=800, end=1000)
    y = HDF5Matrix(seedish, "label", start=800, end=1000)
    assert len(x) == 200 and x.shape == (200, 2, 2, 3) and x.ndim == 4
    assert x.size == 200 * 12 and x.dtype == np.float32
    assert y[0] == 800 and y[-1] == 999 and y[199] == 999
    np.testing.assert_array_equal(y[10:20], np.arange(810, 820))
    np.testing.assert_array_equal(y[10:20:3], np.arange(810, 820, 3))
    np.testing.assert_array_equal(y[20:10:-2], np.arange(820, 810, -2))
    np.testing.assert_array_equal(y[[1, 5, 9]], [801, 805, 809])
    np.testing.assert_array_equal(y[[9, 1, 1]], [809, 801, 801])
    np.testing.assert_array_equal(x[3], np.arange(803 * 12, 804 * 12).reshape(2, 2, 3))
    with pytest.raises(IndexError):
        y[200]
    with pytest.raises(IndexError, match="out of range"):
        HDF5Matrix(seedish, "label", start=900, end=1200)
    with pytest.raises(KeyError, match="no dataset 'nope'"):
        HDF5Matrix(seedish, "nope")


def test_normalizer(seedish):
    x = HDF5Matrix(seedish, "image", end=10, normalizer=lambda a: a / 2)
    np.testing.assert_array_equal(x[1], np.arange(12, 24).reshape(2, 2, 3) / 2)
    assert x.dtype == np.float32


def test_shape_changing_normalizers(seedish):
    raw = np.arange(1000 * 12, dtype="f4").reshape(1000, 2, 2, 3)
    flat = HDF5Matrix(seedish, "image", end=100, normalizer=lambda a: a.reshape(len(a), -1))
    assert flat.shape == (100, 12) and flat.ndim == 2 and flat.size == 1200
    np.testing.assert_array_equal(flat[3], raw[3].ravel())  # a row: a batch of one
    np.testing.assert_array_equal(flat[-1], raw[99].ravel())
    np.testing.assert_array_equal(flat[:5], raw[:5].reshape(5, 12))
    np.testing.assert_array_equal(flat[[4, 1]], raw[[4, 1]].reshape(2, 12))
    assert np.asarray(flat).shape == (100, 12)
    strided = HDF5Matrix(seedish, "image", start=10, end=20, normalizer=lambda a: a[:, ::2])
    assert strided.shape == (10, 1, 2, 3)
    np.testing.assert_array_equal(strided[2:4], raw[12:14, ::2])
    column = HDF5Matrix(seedish, "label", end=10, normalizer=lambda a: a[:, None] * 2.0)
    assert column.shape == (10, 1) and column.dtype == np.float64
    np.testing.assert_array_equal(column[9], [18.0])


def test_normalizer_must_keep_one_row_per_row(seedish):
    with pytest.raises(InvalidArgumentError, match="one row per row"):
        HDF5Matrix(seedish, "image", normalizer=lambda a: a.sum())
    with pytest.raises(InvalidArgumentError, match=r"'image' in '.*plain.h5'"):
        HDF5Matrix(seedish, "image", normalizer=lambda a: a.reshape(-1))


def test_slices_past_the_end_raise_as_in_keras2(seedish):
    """Keras 2's HDF5Matrix raised IndexError for a slice whose stop passes ``end``, even
    where the file has more rows; int and list indices past the end raise too."""
    everything = HDF5Matrix(seedish, "label")
    with pytest.raises(IndexError, match=r"slice 1000:1001 reaches past the end .* 1000 rows"):
        everything[1000:1001]
    y = HDF5Matrix(seedish, "label", start=800, end=900)  # the file goes on to row 999
    for key in [
        slice(99, 101),
        slice(0, 1000),
        slice(100, 101),
        slice(None, 101, 2),
        slice(150, 0, -1),
        slice(100, None, -1),
    ]:
        with pytest.raises(IndexError, match="past the end of HDF5Matrix of 'label'"):
            y[key]
    for key in [100, -101, [99, 100], np.array([0, 100])]:
        with pytest.raises(IndexError, match="out of range"):
            y[key]
    # in bounds: as numpy
    np.testing.assert_array_equal(y[90:100], np.arange(890, 900))
    np.testing.assert_array_equal(y[99:95:-1], [899, 898, 897, 896])
    assert len(y[150:]) == 0 and len(y[:]) == 100 and len(y[::-1]) == 100
    # negative bounds count from the end and are clipped, as in numpy
    np.testing.assert_array_equal(y[-300:3], [800, 801, 802])


def test_never_loads_everything_silently(seedish, monkeypatch):
    monkeypatch.setattr(compat, "MAX_IMPLICIT_LOAD", 1000)
    x = HDF5Matrix(seedish, "image")
    with pytest.raises(MemoryError, match="fit_kwargs") as err:
        np.asarray(x)
    assert "fit()" in str(err.value) and "predict()" in str(err.value)
    assert "evaluate_kwargs(x, y" in str(err.value) and "predict_kwargs(x" in str(err.value)
    small = HDF5Matrix(seedish, "label", end=10)
    np.testing.assert_array_equal(np.asarray(small), np.arange(10))


_SNIPPET = textwrap.dedent(
    """
    import sys, keras, lazyh5
    from lazyh5 import HDF5Matrix
    path = sys.argv[1]
    x_train = HDF5Matrix(path, "image", start=0, end=800, normalizer=lambda a: a / 255.0)
    y_train = HDF5Matrix(path, "label", start=0, end=800)
    x_test = HDF5Matrix(path, "image", start=800, end=1000, normalizer=lambda a: a / 255.0)
    y_test = HDF5Matrix(path, "label", start=800, end=1000)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    # the one changed line; before: model.fit(x_train, y_train, epochs=3, batch_size=32,
    #                                          validation_data=(x_test, y_test))
    h = model.fit(**lazyh5.compat.fit_kwargs(x_train, y_train, batch_size=32,
                  validation_data=(x_test, y_test)), epochs=3, verbose=0)
    # before: model.evaluate(x_test, y_test, batch_size=32), model.predict(x_test, ...)
    loss = model.evaluate(**lazyh5.compat.evaluate_kwargs(x_test, y_test, batch_size=32),
                          verbose=0)
    pred = model.predict(**lazyh5.compat.predict_kwargs(x_test, batch_size=32), verbose=0)
    in_memory = model.predict(x_test[:], batch_size=32, verbose=0)  # 200 rows: small
    assert pred.shape == (200, 4) and abs(pred - in_memory).max() < 1e-5
    assert abs(loss - h.history["val_loss"][-1]) < 1e-4
    print(h.history["loss"][0], h.history["loss"][-1], h.history["val_loss"][-1])
    """
)


def test_seed_training_snippet_with_one_line_change(tmp_path):
    pytest.importorskip("keras")
    path = tmp_path / "learn.h5"
    rng = np.random.default_rng(0)
    label = rng.integers(0, 4, 1000)
    image = (label[:, None, None, None] * 60 + rng.integers(0, 40, (1000, 4, 4, 1))).astype("u1")
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image, chunks=(50, 4, 4, 1))
        f.create_dataset("label", data=label)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", _SNIPPET, str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    first, last, val = map(float, out.stdout.split()[-3:])
    assert last < first and val < 1.0


def test_public_name():
    assert lazyh5.HDF5Matrix is HDF5Matrix
