"""tf.data adapter: ``tf.data.Dataset.from_generator`` over a BatchLoader."""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    import tensorflow as tf
except ImportError as err:  # pragma: no cover - exercised only without tensorflow
    raise ImportError(
        "BatchLoader.tf() depends on TensorFlow; install it with `pip install lazyh5[tensorflow]`"
    ) from err


def _spec(loader, names: Any) -> Any:
    def one(name: str) -> tf.TensorSpec:
        var = loader._ds[name]
        shape = [var.sizes[d] for d in var.dims if d != loader.dim]
        return tf.TensorSpec(shape=(None, *shape), dtype=tf.as_dtype(np.dtype(var.dtype)))

    if isinstance(names, str):
        return one(names)
    if isinstance(names, dict):
        return {key: one(v) for key, v in names.items()}
    return tuple(one(n) for n in names)


def to_tf_dataset(loader) -> tf.data.Dataset:
    """The loader's batches as a ``tf.data.Dataset`` whose ``element_spec`` and
    cardinality are exact.

    Each pass over the dataset runs a new epoch of the loader (a new shuffle order). The
    cardinality (``len(loader)`` batches) lets Keras count the steps of an epoch and
    ``tf.distribute`` plan it; the dataset raises if the loader yields a different
    number of batches.

    Examples
    --------
    >>> import numpy as np, lazyh5
    >>> ds = lazyh5.create("tfd.h5", {"image": ((100, 4), "f4"), "label": ((100,), "i8")})
    >>> tfds = lazyh5.BatchLoader(ds, "image", "label", batch_size=32).tf()
    >>> int(tfds.cardinality()), [len(y) for _, y in tfds]
    (4, [32, 32, 32, 4])
    """
    spec = _spec(loader, loader.x)
    if loader.y is not None or loader.sample_weight is not None:
        # Keras' (x, None, sample_weight) when there is no y: tf.data's spec of None
        no_y = tf.type_spec_from_value(None)
        parts = [spec, no_y if loader.y is None else _spec(loader, loader.y)]
        if loader.sample_weight is not None:
            parts.append(_spec(loader, loader.sample_weight))
        spec = tuple(parts)
    dataset = tf.data.Dataset.from_generator(lambda: iter(loader), output_signature=spec)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(loader)))
    return dataset.prefetch(tf.data.AUTOTUNE)
