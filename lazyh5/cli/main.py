"""Entry point of the ``lazyh5`` console script: parses arguments, dispatches commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import Lazyh5Error
from . import bench, demo, info, rechunk, show


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lazyh5",
        description="HDF5 files as lazy, labeled arrays: inspect, draw, benchmark and "
        "rechunk files, run the demo.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info.add_parser(sub)
    show.add_parser(sub)
    bench.add_parser(sub)
    rechunk.add_parser(sub)
    demo.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (Lazyh5Error, OSError, ValueError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"lazyh5 {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
