"""lazyh5's one setting: the memory budget that sizes the dask chunks it chooses.

The value lives in dask's configuration under ``lazyh5.memory-budget``, so it can also
be set with ``dask.config.set({"lazyh5.memory-budget": "256MiB"})`` or the environment
variable ``DASK_LAZYH5__MEMORY_BUDGET=256MiB``; :func:`set_options` is the documented way.
"""

from __future__ import annotations

from typing import Any

import dask
from dask.utils import parse_bytes

from .errors import InvalidArgumentError

#: The key in dask's configuration.
MEMORY_BUDGET_KEY = "lazyh5.memory-budget"
#: What all threads' dask chunks may take at once, counted as float64 (see
#: :func:`lazyh5.backend.chunking.dask_chunks`). Shared by at least 8 threads, 128 MiB
#: gives chunks of 16 MiB as float64 (2 MiB of uint8) up to 8 threads and keeps a
#: 16-thread mean of uint8 images under 512 MiB (measured 330 MiB: xarray's
#: NaN-skipping mean holds about three float64 copies of a chunk per thread).
DEFAULT_MEMORY_BUDGET = "128MiB"


def memory_budget() -> int:
    """The memory budget in bytes: :func:`set_options`'s value, or the default."""
    return parse_bytes(dask.config.get(MEMORY_BUDGET_KEY, None) or DEFAULT_MEMORY_BUDGET)


def threads() -> int:
    """The threads dask computes with here: its ``num_workers`` setting, else the cores."""
    return max(1, int(dask.config.get("num_workers", None) or dask.system.CPU_COUNT))


def set_options(*, memory_budget: int | str | None = None) -> Any:
    """Set lazyh5's options, for the rest of the session or in a ``with`` block.

    Parameters
    ----------
    memory_budget
        What the dask chunks that lazyh5 chooses may take all together, one per
        thread, counted **as float64** (the dtype ``x / 255`` makes of any integer
        data): each chunk takes at most ``memory_budget / max(threads, 8)`` as
        float64, in whole HDF5 chunks (never fewer than one). Default ``"128MiB"``.
        It applies to :func:`lazyh5.open_dataset` (``chunks="budget"``),
        :func:`lazyh5.to_hdf5` and ``.h5[...] = expr`` writes; ``threads`` is dask's
        ``num_workers`` setting, else the machine's cores, when the file is opened.
        ``None`` leaves it as is.

    Returns
    -------
    A context manager: used in a ``with`` block, the previous values come back at its
    end; called on its own, the values hold for the rest of the session.

    Examples
    --------
    >>> import lazyh5
    >>> from lazyh5.options import memory_budget
    >>> with lazyh5.set_options(memory_budget="32MiB"):
    ...     memory_budget() // 2**20
    32
    >>> memory_budget() // 2**20
    128
    """
    values: dict[str, Any] = {}
    if memory_budget is not None:
        try:
            parsed = parse_bytes(memory_budget)
        except (TypeError, ValueError) as err:
            raise InvalidArgumentError(
                f"memory_budget must be a size such as '128MiB' or a number of bytes, "
                f"got {memory_budget!r}"
            ) from err
        if parsed <= 0:
            raise InvalidArgumentError(
                f"memory_budget must be a positive size, got {memory_budget!r}"
            )
        values[MEMORY_BUDGET_KEY] = parsed
    return dask.config.set(values)
