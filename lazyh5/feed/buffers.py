"""Block buffers, reused once nothing refers to them any more.

A fresh 16 MiB array per block costs the kernel a page fault and a page of zeroes per
4 KiB (the allocator hands big blocks back to the system when they are freed), which
costs nearly as much as copying the rows into them; reused buffers do not.

Batches are views of their block, and a view keeps its base array alive: a buffer is
reused only when the pool holds the last reference to it, so no batch a caller still
holds (nor a tensor sharing its memory) is ever overwritten.

Small requests (a window's labels) are not pooled: the allocator reuses small blocks
without the kernel, and a small request given the only free buffer, a large one, would
make the next large request allocate afresh (a 16 MiB buffer more per window held, in
each shuffled loader of ``uint8`` images made ``float32``).
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np


class Buffers:
    """Up to ``limit`` reusable byte buffers; arrays are views of them. Requests under
    ``smallest`` bytes get a plain ``np.empty``."""

    def __init__(self, limit: int, smallest: int = 1 << 20):
        self.limit, self.smallest = limit, smallest
        self._held: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An uninitialised array of ``shape``/``dtype``, in a reused buffer if one is free."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.smallest:
            return np.empty(shape, dtype)
        with self._lock:
            best = -1
            for i in range(len(self._held)):
                # 2 references: the list's and getrefcount's argument; any view of the
                # buffer (a batch, a tensor sharing memory) holds another. The smallest
                # that fits: a block's input rows taking a window's buffer would make
                # the next window allocate a new one.
                size = self._held[i].size
                smaller = best < 0 or size < self._held[best].size
                if sys.getrefcount(self._held[i]) == 2 and nbytes <= size and smaller:
                    best = i
            buf = self._held[best] if best >= 0 else None
            if buf is None:
                if len(self._held) >= self.limit or nbytes == 0:
                    return np.empty(shape, dtype)
                buf = np.empty(nbytes, np.uint8)
                self._held.append(buf)
        return buf[:nbytes].view(dtype).reshape(shape)
