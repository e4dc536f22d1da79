"""Train a small model in plain JAX straight from an HDF5 file.

``loader.jax()`` puts each batch on the device two batches ahead of the training step;
the model is a softmax regression on the pixels (uint8, scaled on the device), trained
with ``jax.grad`` and SGD:

    python examples/train_jax.py
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

    import jax
    import jax.numpy as jnp

    ds = lazyh5.open_dataset(path)  # uint8 images go to the device, 4x fewer bytes
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=64, seed=0)
    train, val = loader.split(0.8)

    def logits(params, x):
        x = x.reshape(len(x), -1).astype(jnp.float32) / 255.0 - 0.5  # on the device
        return x @ params["w"] + params["b"]

    def loss_fn(params, x, y):
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits(params, x)), y[:, None], 1))

    @jax.jit
    def step(params, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads), loss

    params = {"w": jnp.zeros((32 * 32 * 3, 10)), "b": jnp.zeros(10)}
    for epoch in range(args.epochs):
        losses = []
        for x, y in train.jax(prefetch=2):
            params, loss = step(params, x, y)
            losses.append(loss)
        print(f"epoch {epoch}: mean loss {float(jnp.mean(jnp.stack(losses))):.4f}")
    correct = sum(int((logits(params, x).argmax(1) == y).sum()) for x, y in val.jax())
    print(f"jax on {jax.devices()[0].platform}: val accuracy {correct / val.rows:.3f}")


if __name__ == "__main__":
    main()
