"""fit_kwargs, evaluate_kwargs and predict_kwargs: streaming HDF5Matrix data through a
real Keras fit, evaluate and predict, with normalizers that change the rows' shape."""

from __future__ import annotations

import numpy as np
import pytest

from lazyh5.compat import HDF5Matrix, evaluate_kwargs, fit_kwargs, predict_kwargs
from lazyh5.errors import InvalidArgumentError

keras = pytest.importorskip("keras")

# Every block computes only its rows through the normalizer.
# Every block computes only its rows through the normalizer, and batches come from the
# loader's stream, not one read each.
pytestmark = [
    pytest.mark.filterwarnings("error:.*computes its whole chunk:UserWarning"),
    pytest.mark.filterwarnings("error:Keras asks for the batches:UserWarning"),
]

# The two normalizers Keras 2 users fed a Dense model or a strided view with.
NORMALIZERS = {
    "flatten": lambda a: a.reshape(len(a), -1),
    "stride": lambda a: a[:, ::2],
}


def _raw(n: int = 2000) -> np.ndarray:
    """feed_file's images: row ``i`` holds ``i``."""
    return np.arange(n, dtype="f4")[:, None, None] * np.ones((1, 4, 4), "f4")


def _epoch(pyds) -> list:
    pyds.on_epoch_begin()
    batches = [pyds[i] for i in range(len(pyds))]
    pyds.on_epoch_end()
    return batches


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_shape_changing_normalizer_streams(feed_file, name, shuffle):
    norm = NORMALIZERS[name]
    x = HDF5Matrix(feed_file, "image", start=100, end=1900, normalizer=norm)
    y = HDF5Matrix(feed_file, "label", start=100, end=1900)
    assert x.shape == (1800, *norm(_raw(1)).shape[1:])
    kwargs = fit_kwargs(x, y, batch_size=64, shuffle=shuffle, validation_data=(x, y))
    for pyds in (kwargs["x"], kwargs["validation_data"]):
        labels = []
        for xb, yb in _epoch(pyds):
            assert xb.shape == (len(yb), *x.shape[1:]) and xb.dtype == x.dtype
            np.testing.assert_array_equal(xb, norm(_raw()[yb]))  # each row with its label
            labels.append(yb)
        labels = np.concatenate(labels)
        np.testing.assert_array_equal(np.sort(labels), np.arange(100, 1900))
        in_order = pyds is kwargs["validation_data"] or not shuffle
        assert np.array_equal(labels, np.arange(100, 1900)) == in_order


def test_x_and_y_of_one_dataset(feed_file):
    """``fit(x, x)`` (an autoencoder) normalizes once; a target of the same dataset with
    another normalizer (or none) gets its own rows."""
    flatten = NORMALIZERS["flatten"]
    x = HDF5Matrix(feed_file, "image", end=640, normalizer=lambda a: flatten(a) + 1)
    raw = HDF5Matrix(feed_file, "image", end=640)
    for y, target in [(x, flatten(_raw(640)) + 1), (raw, _raw(640))]:
        for shuffle in (False, True):
            batches = _epoch(fit_kwargs(x, y, batch_size=64, shuffle=shuffle)["x"])
            xs, ys = (np.concatenate([b[k] for b in batches]) for k in (0, 1))
            rows = xs[:, 0].astype(int) - 1  # row i holds i
            np.testing.assert_array_equal(np.sort(rows), np.arange(640))
            np.testing.assert_array_equal(xs, flatten(_raw(640))[rows] + 1)
            np.testing.assert_array_equal(ys, target[rows])


def test_normalizer_changing_shape_per_block_is_named(feed_file):
    # one column for the first row alone, two for a block: not a row-wise function
    x = HDF5Matrix(feed_file, "image", normalizer=lambda a: a[:, : min(len(a), 2)])
    assert x.shape == (2000, 1, 4)
    pyds = predict_kwargs(x, batch_size=100)["x"]
    pyds.on_epoch_begin()
    with pytest.raises(InvalidArgumentError, match=r"HDF5Matrix 'image' in '.*feed.h5'"):
        pyds[0]
    pyds.on_epoch_end()


class _Batches(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_train_batch_end(self, batch, logs=None) -> None:
        self.count += 1


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_fit_with_shape_changing_normalizer(feed_file, name, shuffle):
    """A real fit of a Dense model: the target is the row's value, which a linear model
    of the scaled pixels learns."""
    keras.utils.set_random_seed(0)
    norm = NORMALIZERS[name]
    x = HDF5Matrix(feed_file, "image", end=1600, normalizer=lambda a: norm(a) / 2000.0)
    y = HDF5Matrix(feed_file, "label", end=1600, normalizer=lambda a: a / 2000.0)
    model = keras.Sequential(
        [keras.Input(x.shape[1:]), keras.layers.Flatten(), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse")
    before = model.evaluate(**evaluate_kwargs(x, y, batch_size=64), verbose=0)
    batches = _Batches()
    kwargs = fit_kwargs(x, y, batch_size=64, shuffle=shuffle)
    hist = model.fit(**kwargs, epochs=3, verbose=0, callbacks=[batches])
    assert batches.count == 3 * 25  # every batch of every epoch
    assert np.all(np.isfinite(hist.history["loss"]))
    after = model.evaluate(**evaluate_kwargs(x, y, batch_size=64), verbose=0)
    assert after < 0.01 and after < 0.1 * before, (before, after)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((16,)), keras.layers.Dense(3)])
    net.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return net


def test_predict_and_evaluate_stream_in_file_order(feed_file, model):
    flatten = NORMALIZERS["flatten"]
    x = HDF5Matrix(feed_file, "image", start=300, end=1300, normalizer=lambda a: flatten(a) / 2e3)
    y = HDF5Matrix(feed_file, "label", start=300, end=1300, normalizer=lambda a: a % 3)
    rows = _raw()[300:1300].reshape(1000, 16) / 2e3
    expected = model.predict(rows, batch_size=64, verbose=0)
    got = model.predict(**predict_kwargs(x, batch_size=64), verbose=0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # row i's prediction
    loss = model.evaluate(rows, np.arange(300, 1300) % 3, batch_size=64, verbose=0)
    streamed = model.evaluate(**evaluate_kwargs(x, y, batch_size=64), verbose=0)
    assert streamed == pytest.approx(loss, rel=1e-5)


def test_shuffled_training_data_refuses_predict(feed_file, model):
    flatten = NORMALIZERS["flatten"]
    x = HDF5Matrix(feed_file, "image", end=500, normalizer=lambda a: flatten(a) / 2e3)
    y = HDF5Matrix(feed_file, "label", end=500, normalizer=lambda a: a % 3)
    train = fit_kwargs(x, y, batch_size=50)["x"]
    with pytest.raises(InvalidArgumentError, match=r"predict_kwargs\(x"):
        model.predict(train, verbose=0)
    # evaluate's totals do not depend on the order: allowed, and equal to file order
    streamed = model.evaluate(**evaluate_kwargs(x, y, batch_size=50), verbose=0)
    assert model.evaluate(train, verbose=0) == pytest.approx(streamed, rel=1e-5)
    # and the dataset still trains after the refusal
    model.fit(train, epochs=1, verbose=0)
    # in file order, the training data predicts in file order
    in_order = fit_kwargs(x, y, batch_size=50, shuffle=False)["x"]
    np.testing.assert_allclose(
        model.predict(in_order, verbose=0),
        model.predict(_raw()[:500].reshape(500, 16) / 2e3, verbose=0),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("shuffle", [False, True])
def test_fit_kwargs_without_y(feed_file, shuffle):
    x = HDF5Matrix(feed_file, "image", start=64, end=1064)
    batches = _epoch(fit_kwargs(x, batch_size=100, shuffle=shuffle)["x"])
    assert all(isinstance(b, np.ndarray) and b.shape[1:] == (4, 4) for b in batches)
    rows = np.concatenate(batches)[:, 0, 0].astype(int)  # row i holds i
    np.testing.assert_array_equal(np.sort(rows), np.arange(64, 1064))
    assert np.array_equal(rows, np.arange(64, 1064)) == (not shuffle)
    assert repr(x) == (
        f"HDF5Matrix('{feed_file}', 'image', start=64, end=1064) shape=(1000, 4, 4) dtype=float32"
    )
