"""Train from object storage: write a file to S3, open it by URL, feed it to a model.

With no ``--endpoint``, a local S3 API server is started on 127.0.0.1 (moto's server
mode: ``pip install "moto[server]"``) with throw-away credentials, so the example runs
anywhere; pass ``--endpoint https://...`` (with credentials in the environment) to use
a real S3-compatible store instead. Credentials come from the environment, as the
docs recommend: every process, dask workers included, finds its own.

    python examples/remote.py [--n 5000] [--bucket lazyh5-demo] [--endpoint URL]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import uuid

import numpy as np
from _data import make_images

import lazyh5


@contextlib.contextmanager
def local_s3():
    """A local S3 API server on a free port of 127.0.0.1, with test credentials."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def train(url: str) -> float:
    """One epoch of a nearest-class-mean classifier on brightness, from ``url``; returns
    its accuracy on the held-out rows (also read from ``url``)."""
    ds = lazyh5.open_dataset(url)  # metadata only: a few requests
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=256, seed=0)
    fit, val = loader.split(0.8)
    sums, counts = np.zeros(10), np.zeros(10)
    for x, y in fit:  # shuffled batches, read from the store by byte range
        np.add.at(sums, y, x.reshape(len(x), -1).mean(axis=1))
        np.add.at(counts, y, 1)
    centres = sums / np.maximum(counts, 1)
    right = total = 0
    for x, y in val:
        brightness = x.reshape(len(x), -1).mean(axis=1)
        guess = np.abs(brightness[:, None] - centres[None, :]).argmin(axis=1)
        right, total = right + int((guess == y).sum()), total + len(y)
    ds.close()
    return right / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--bucket", default="lazyh5-demo")
    parser.add_argument("--endpoint", default=None, help="an S3-compatible store's URL")
    parser.add_argument("--dir", default="lazyh5-examples")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    local = make_images(os.path.join(args.dir, "images.h5"), args.n)

    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint or stack.enter_context(local_s3())
        os.environ["AWS_ENDPOINT_URL"] = endpoint  # read by s3fs's client, as by the AWS CLI
        if not args.endpoint:
            import s3fs

            s3fs.S3FileSystem().mkdir(args.bucket)
        url = f"s3://{args.bucket}/{uuid.uuid4().hex[:8]}/images.h5"
        # written locally, uploaded whole: a failed run leaves no partial object
        lazyh5.to_hdf5(url, lazyh5.open_dataset(local), progress=False)
        print(f"uploaded {local} to {url}")
        print(lazyh5.open_dataset(url))
        print(f"accuracy from {url}: {train(url):.3f}")


if __name__ == "__main__":
    main()
