"""Batches cut from a stream of row pieces (the loader's windows, a worker's share).

A batch that lies inside one piece is a view of it (no copy); one that spans two
pieces is joined once. The loader's epochs and the PyTorch workers both cut their
batches here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np


def cut_batches(
    pieces: Iterable[dict[str, np.ndarray]],
    names: Sequence[str],
    batch_size: int,
    *,
    skip: int = 0,
    last: bool = True,
    runs: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """The batches of consecutive ``pieces``, ``batch_size`` rows each.

    ``skip`` rows of the first piece are left out; ``last`` keeps the final, smaller
    batch. ``runs``: consecutive batches of a piece come as one view of up to ``runs``
    batches (cut later, e.g. by the process that PyTorch workers hand them to).

    Examples
    --------
    >>> import numpy as np
    >>> pieces = [{"x": np.arange(5)}, {"x": np.arange(5, 9)}]
    >>> [b["x"].tolist() for b in cut_batches(pieces, ["x"], 3, skip=1)]
    [[1, 2, 3], [4, 5, 6], [7, 8]]
    >>> [b["x"].tolist() for b in cut_batches([{"x": np.arange(9)}], ["x"], 2, runs=3)]
    [[0, 1, 2, 3, 4, 5], [6, 7], [8]]
    """
    first = names[0]
    carry: dict[str, np.ndarray] | None = None
    for rows in pieces:
        total, at, skip = len(rows[first]), skip, 0
        if carry is not None:  # finish the batch the piece before began
            head = {n: rows[n][: batch_size - len(carry[first])] for n in names}
            at += len(head[first])
            carry = {n: np.concatenate([carry[n], head[n]]) for n in names}
            if len(carry[first]) < batch_size:
                continue
            yield carry
            carry = None
        full = at + (total - at) // batch_size * batch_size
        step = batch_size * runs
        for i in range(at, full, step):  # views of the piece: no copy
            yield {n: rows[n][i : min(i + step, full)] for n in names}
        if full < total:
            carry = {n: rows[n][full:total] for n in names}
    if carry is not None and last:
        yield carry
