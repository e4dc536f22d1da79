"""Interactive analysis: open lazily, look around, compute only what you ask for.

python examples/interactive_analysis.py [--n 5000] [--dir /tmp/lazyh5-examples]
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

    ds = lazyh5.open_dataset(path)  # metadata only
    print(ds)
    print("HDF5 chunks of image:", ds["image"].encoding["chunksizes"])
    print("dask chunks of image:", ds["image"].chunks[0][:3], "...")

    # Label-based selection and lazy reductions: nothing is read until .compute()/.values
    first = ds.sel(sample=slice(0, 999))
    labels = first["label"].compute()  # grouping needs the (small) labels in memory
    brightness = first["image"].astype("float32").mean(("y", "x", "channel"))
    per_class = brightness.groupby(labels).mean()
    print("mean brightness per class (first 1000 images):")
    print(per_class.compute().round(1).to_series().to_string())


if __name__ == "__main__":
    main()
