"""Out-of-core preprocessing: uint8 images → normalised float32, streamed into a new file.

python examples/preprocess.py [--n 5000] [--dir lazyh5-examples]
"""

from __future__ import annotations

import argparse
import os

from _data import make_images

import lazyh5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--dir", default="lazyh5-examples")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    path = make_images(os.path.join(args.dir, "images.h5"), args.n)

    ds = lazyh5.open_dataset(path)
    image = ds["image"].astype("float32") / 255.0
    mean = image.mean().compute()  # one streaming pass; a scalar in memory
    std = image.std().compute()
    prepped = ds.assign(image=(image - mean) / std)
    prepped["image"].attrs.update(mean=float(mean), std=float(std))
    out = os.path.join(args.dir, "images_float32.h5")
    lazyh5.to_hdf5(out, prepped, mode="w", compression="lzf")
    back = lazyh5.open_dataset(out)
    print(back)
    print(f"written mean {float(back['image'].mean()):.3f}, std {float(back['image'].std()):.3f}")


if __name__ == "__main__":
    main()
