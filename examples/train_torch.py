"""Train a small CNN with PyTorch straight from an HDF5 file, with DataLoader workers.

``DataLoader(loader.torch(), batch_size=None, num_workers=2)``: two worker processes
split each epoch's blocks (every image once per epoch, a new order each epoch), each
opening the file itself. The checkpoint holds the model, the optimizer and where the
data stands: with torchdata's ``StatefulDataLoader`` (``pip install torchdata``) a run
stopped mid-epoch resumes at the next batch; with a plain ``DataLoader``, at the start
of the epoch it stopped in.

    python examples/train_torch.py                  # trains, checkpointing
    python examples/train_torch.py --stop-after 10  # "preempted" after 10 steps
    python examples/train_torch.py --resume         # carries on from the checkpoint
"""

from __future__ import annotations

import argparse
import os

from _data import make_images

import lazyh5


def batches_of(dataset, workers: int):
    """A DataLoader over the lazyh5 dataset, and whether it can resume mid-epoch."""
    from torch.utils.data import DataLoader

    kwargs = {"batch_size": None, "num_workers": workers, "persistent_workers": workers > 0}
    try:
        from torchdata.stateful_dataloader import StatefulDataLoader
    except ImportError:
        return DataLoader(dataset, **kwargs), False
    return StatefulDataLoader(dataset, **kwargs), True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", default="lazyh5-examples")
    parser.add_argument("--stop-after", type=int, default=0, help="stop after this many steps")
    parser.add_argument("--resume", action="store_true", help="carry on from the checkpoint")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    path = make_images(os.path.join(args.dir, "images.h5"), args.n)
    checkpoint = os.path.join(args.dir, "checkpoint.pt")

    import torch
    from torch import nn

    torch.manual_seed(0)
    loader = lazyh5.BatchLoader(lazyh5.open_dataset(path), "image", "label", batch_size=64, seed=0)
    train, val = loader.split(0.8)
    dataset = train.torch()  # uint8 batches: 4x fewer bytes from the workers
    batches, stateful = batches_of(dataset, args.workers)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)

    def logits(x):
        return model(x.permute(0, 3, 1, 2).float() / 255.0 - 0.5)  # NHWC bytes -> NCHW floats

    def save(epoch: int) -> None:
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
        torch.save(state | {"batches": batches.state_dict() if stateful else None}, checkpoint)

    first, step = 0, 0
    if args.resume and os.path.exists(checkpoint):
        saved = torch.load(checkpoint)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        first = saved["epoch"]
        if saved["batches"] is not None:  # the workers carry on from their saved batches
            batches.load_state_dict(saved["batches"])
        print(f"resumed in epoch {first}")
    for epoch in range(first, args.epochs):
        dataset.set_epoch(epoch)  # the same epoch (shuffle order) in every worker
        losses = []
        for x, y in batches:
            loss = nn.functional.cross_entropy(logits(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step % 10 == 0:
                save(epoch)
            if step == args.stop_after:
                print(f"stopped after step {step} (loss {loss.item():.4f})")
                return
        save(epoch + 1)
        print(f"epoch {epoch}: {len(losses)} steps, mean loss {sum(losses) / len(losses):.4f}")
    with torch.no_grad():
        correct = sum(int((logits(x).argmax(1) == y).sum()) for x, y in val.torch())
    print(f"torch with {args.workers} workers: val accuracy {correct / val.rows:.3f}")


if __name__ == "__main__":
    main()
