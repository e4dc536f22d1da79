"""``lazyh5 bench FILE --x VAR --y VAR``: how fast a file feeds training, and what limits it.

Measures :class:`lazyh5.BatchLoader` (in order and shuffled) against a hand-written h5py
loop and a single-thread h5py block read on the same rows, then says what limits the feed
and recommends a layout. This module parses the options; :mod:`lazyh5.bench` does the work.
"""

from __future__ import annotations

import argparse
import json

from .._files import check_readable_hdf5
from ..bench.measure import DEFAULT_SECONDS, bench
from ..bench.render import render
from ..bench.variables import PREFIX_BYTES
from ..errors import InvalidArgumentError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``lazyh5 bench`` and its options on the ``lazyh5`` command line."""
    p = sub.add_parser(
        "bench",
        help="measure a file as a training feed (lazyh5 vs an h5py loop) and explain its limits",
    )
    p.add_argument("file", help="HDF5 file")
    p.add_argument("--x", required=True, metavar="VAR", help="input variable (e.g. image)")
    p.add_argument("--y", default=None, metavar="VAR", help="target variable (e.g. label)")
    p.add_argument("--group", default=None, help="group holding the variables")
    p.add_argument(
        "--dim", default=None, help="sample dimension (default: 'sample', else the first of --x)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="rows per batch (default: 32)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--seconds",
        type=float,
        default=None,
        help=f"time per method (default: {DEFAULT_SECONDS:g}), on a prefix of about "
        f"{PREFIX_BYTES >> 20} MiB of rows",
    )
    budget.add_argument(
        "--max-samples",
        type=int,
        default=None,
        metavar="N",
        help="instead of a time: one pass over the first N rows per method",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def _check(args: argparse.Namespace) -> None:
    """Refuse a missing or unreadable file, then out-of-range numbers."""
    check_readable_hdf5(args.file)
    if args.batch_size <= 0:
        raise InvalidArgumentError(
            f"--batch-size must be a positive integer, got {args.batch_size}"
        )
    if args.seconds is not None and not args.seconds > 0:
        raise InvalidArgumentError(f"--seconds must be positive, got {args.seconds}")
    if args.max_samples is not None and args.max_samples <= 0:
        raise InvalidArgumentError(f"--max-samples must be positive, got {args.max_samples}")


def run(args: argparse.Namespace) -> int:
    """Run ``lazyh5 bench`` with parsed arguments: print the report; returns the exit code."""
    _check(args)
    report = bench(
        args.file,
        args.x,
        args.y,
        group=args.group,
        dim=args.dim,
        batch_size=args.batch_size,
        seconds=args.seconds,
        max_samples=args.max_samples,
    )
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0
