"""Run lazyh5 on a dask.distributed cluster.

With no address a 2-worker LocalCluster is started; pass `--address tcp://host:8786` to use
an existing scheduler (the file must be readable at the same path on every worker).

    python examples/dask_cluster.py [--address tcp://127.0.0.1:8786]
"""

from __future__ import annotations

import argparse
import os

from _data import make_images

import lazyh5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--address", default=None)
    parser.add_argument("--dir", default="lazyh5-examples")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    path = os.path.abspath(make_images(os.path.join(args.dir, "images.h5"), args.n))

    from distributed import Client, LocalCluster

    if args.address:
        client = Client(args.address)
    else:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
        client = Client(cluster)
    with client:
        print(client)
        ds = lazyh5.open_dataset(path)
        counts = (ds["label"] == 3).sum().compute()  # runs on the workers
        brightness = ds["image"].astype("float32").mean().compute()
        print(f"{int(counts)} images of class 3; mean brightness {float(brightness):.2f}")
        out = os.path.join(args.dir, "images_float32_distributed.h5")
        lazyh5.to_hdf5(out, ds.assign(image=ds["image"] / 255.0), mode="w", progress=False)
        print("wrote", out, "from the workers")


if __name__ == "__main__":
    main()
