"""Train a small Keras model straight from an HDF5 file, with a validation split.

Runs on whichever Keras backend is selected:

    KERAS_BACKEND=tensorflow python examples/train_keras.py
    KERAS_BACKEND=jax python examples/train_keras.py
"""

from __future__ import annotations

import argparse
import os

from _data import make_images

import lazyh5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dir", default="lazyh5-examples")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    path = make_images(os.path.join(args.dir, "images.h5"), args.n)

    import keras

    ds = lazyh5.open_dataset(path)
    ds = ds.assign(image=ds["image"].astype("float32") / 255.0)  # lazy, applied per block
    train, val = lazyh5.BatchLoader(ds, "image", "label", batch_size=64, seed=0).split(0.8)

    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(
        train.keras(), validation_data=val.keras(), epochs=args.epochs, verbose=2, shuffle=False
    )
    print(
        f"backend {keras.backend.backend()}: val accuracy {history.history['val_accuracy'][-1]:.3f}"
    )


if __name__ == "__main__":
    main()
