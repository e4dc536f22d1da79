"""``lazyh5 demo``: the seed's story end to end on a generated data set.

1. create an HDF5 file like the seed's (uint8 images + labels) and assign slices;
2. open it lazily and show what it holds;
3. preprocess out of core (uint8 → normalised float32) into a new file;
4. train a small Keras model from the file with a validation split.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {"tiny": 1_000, "small": 20_000, "medium": 200_000, "large": 1_000_000}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the end-to-end demo on generated data")
    p.add_argument(
        "--size",
        default="small",
        help=f"number of images, or one of {', '.join(f'{k}={v}' for k, v in SIZES.items())}",
    )
    p.add_argument("--out", default="lazyh5-demo", help="output folder (default: lazyh5-demo)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default: 2)")
    p.add_argument("--no-train", action="store_true", help="skip the Keras training step")
    p.set_defaults(run=run)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _write_images(ds, n: int, rng: np.random.Generator, block: int = 4096) -> None:
    """Fill the images with learnable data: the class is the mean brightness band."""
    from tqdm.auto import tqdm

    labels = rng.integers(0, 10, n)
    ds["label"].h5[:] = labels
    for start in tqdm(range(0, n, block), desc="writing images", unit="block"):
        stop = min(start + block, n)
        lab = labels[start:stop, None, None, None]
        noise = rng.integers(0, 60, (stop - start, 32, 32, 3))
        ds["image"].h5[start:stop] = (lab * 20 + noise).astype(np.uint8)


def run(args: argparse.Namespace) -> int:
    import lazyh5

    n = SIZES.get(args.size) or int(args.size)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw_path, prep_path = out / "images.h5", out / "images_float32.h5"
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()

    _step(f"1. create {raw_path} with {n} images of 32×32×3 uint8 and {n} labels")
    ds = lazyh5.create(
        raw_path,
        {"image": ((n, 32, 32, 3), "u1"), "label": ((n,), "i8")},
        dims={"image": ("sample", "y", "x", "channel")},
        compression="lzf",
        mode="w",
    )
    _write_images(ds, n, rng)
    ds["label"].h5[10:20] = np.arange(10)  # the seed's `label_set[10:20] = ...`
    ds.close()
    print(f"   {os.path.getsize(raw_path) / 2**20:.1f} MiB on disk (lzf)")

    _step("2. open it lazily (reads metadata only)")
    t = time.perf_counter()
    ds = lazyh5.open_dataset(raw_path)
    print(f"   opened in {1000 * (time.perf_counter() - t):.1f} ms")
    print(ds)
    print("   labels 10..19:", ds["label"][10:20].values.tolist())

    _step("3. preprocess out of core: uint8 → float32 normalised, into a new file")
    image = ds["image"].astype("float32") / 255.0
    mean, std = 0.5, 0.25
    prepped = ds.assign(image=(image - mean) / std)
    t = time.perf_counter()
    lazyh5.to_hdf5(prepped, prep_path, mode="w", compression="lzf")
    took = time.perf_counter() - t
    print(f"   wrote {prep_path} at {n / took:,.0f} images/s")

    if not args.no_train:
        _step("4. train a small Keras model from the file, 80/20 validation split")
        _train(lazyh5, prep_path, args.epochs)

    _step("done")
    print(f"   total {time.perf_counter() - t0:.1f} s, peak memory {_peak_rss_mib():.0f} MiB")
    print(f"   files in {out.resolve()}")
    return 0


def _train(lazyh5, path: Path, epochs: int) -> None:
    import keras

    ds = lazyh5.open_dataset(path)
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=64, seed=0)
    train, val = loader.split(0.8)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    history = model.fit(train.keras(), validation_data=val.keras(), epochs=epochs, verbose=2)
    took = time.perf_counter() - t
    seen = len(train) * train.batch_size * epochs
    print(f"   trained on ~{seen / took:,.0f} samples/s (keras backend: {keras.backend.backend()})")
    print(f"   val accuracy: {history.history['val_accuracy'][-1]:.3f}")


if __name__ == "__main__":
    sys.exit(run(argparse.Namespace(size="tiny", out="lazyh5-demo", epochs=1, no_train=False)))
