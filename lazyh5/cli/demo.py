"""``lazyh5 demo``: the h5py and Keras 2 recipe, redone with lazyh5, on ~1 GB of images.

This module parses the options; :mod:`lazyh5.demo` runs the steps.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

#: Named sizes (number of images). 350,000 images of 32×32×3 bytes are 1.08 GB.
SIZES = {"tiny": 1_000, "small": 20_000, "medium": 100_000, "large": 350_000}
DEFAULT_SIZE = "large"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``lazyh5 demo`` and its options on the ``lazyh5`` command line."""
    names = ", ".join(f"{k}={v:,}" for k, v in SIZES.items())
    p = sub.add_parser(
        "demo",
        help="the h5py and Keras 2 recipe, redone with lazyh5, on generated images (about 1 GB)",
        description="Create, assign, open lazily, preprocess out of core and train a Keras "
        "model on generated images; leaves the files and summary.png in --out.",
    )
    p.add_argument(
        "--size",
        default=DEFAULT_SIZE,
        help=f"number of images (e.g. 50000 or 50k), or one of {names} "
        f"(default: {DEFAULT_SIZE}, {SIZES[DEFAULT_SIZE] * 3072 / 1e9:.2f} GB of images)",
    )
    p.add_argument("--out", default="lazyh5-demo", help="output folder (default: lazyh5-demo)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default: 2)")
    p.add_argument("--no-train", action="store_true", help="skip the Keras training step")
    p.set_defaults(run=run)


def parse_size(spec: str) -> int:
    """The number of images for ``--size``: a name of :data:`SIZES`, ``N``, ``Nk`` or ``NM``.

    Raises
    ------
    ValueError
        For anything else, or fewer than 100 images (the demo assigns rows 10..19 and
        splits off a validation set).
    """
    spec = str(spec).strip()
    if spec.lower() in SIZES:
        return SIZES[spec.lower()]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmM]?)", spec.replace(",", "").replace("_", ""))
    if not m:
        raise ValueError(
            f"--size {spec!r}: expected a number of images or one of {', '.join(SIZES)}"
        )
    n = int(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()])
    if n < 100:
        raise ValueError(f"--size {spec!r}: the demo needs at least 100 images")
    return n


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed ``lazyh5 demo`` arguments; returns the exit code."""
    n = parse_size(args.size)
    if args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs}: must be at least 1")
    from ..demo.run import run_demo  # numpy, dask, xarray: only when the demo runs

    run_demo(n, Path(args.out), epochs=args.epochs, fit=not args.no_train)
    return 0
