"""lazyh5's settings: the memory budget that sizes the dask chunks it chooses, and how
reads of remote files retry.

The values live in dask's configuration under ``lazyh5.*`` (so they reach
dask.distributed workers with the tasks' configuration), and can also be set with
``dask.config.set({"lazyh5.memory-budget": "256MiB"})`` or environment variables such
as ``DASK_LAZYH5__MEMORY_BUDGET=256MiB``; :func:`set_options` is the documented way.
"""

from __future__ import annotations

import sys
from typing import Any

import dask
import dask.local
import dask.threaded
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

#: Keys and defaults of the remote read settings (see :func:`set_options`).
REMOTE_KEYS = {
    "remote_retries": ("lazyh5.remote-retries", 5),
    "remote_backoff": ("lazyh5.remote-backoff", 0.05),
    "remote_timeout": ("lazyh5.remote-timeout", 30.0),
}


def memory_budget() -> int:
    """The memory budget in bytes: :func:`set_options`'s value, or the default."""
    return parse_bytes(dask.config.get(MEMORY_BUDGET_KEY, None) or DEFAULT_MEMORY_BUDGET)


def threads() -> int:
    """The threads dask computes with here: its ``num_workers`` setting, else the cores."""
    return max(1, int(dask.config.get("num_workers", None) or dask.system.CPU_COUNT))


def computes_here() -> bool:
    """Whether dask computes in this process (its threaded or synchronous scheduler), not
    on a dask.distributed client.

    A client can only be active once ``distributed`` is imported, and dask's
    ``get_scheduler()`` imports it to ask: half a second at a loader's first epoch, for
    users who never use it. So dask is asked only once it is imported.
    """
    here = (None, dask.threaded.get, dask.local.get_sync)
    scheduler = dask.config.get("scheduler", None)
    if "distributed" not in sys.modules:
        if scheduler is None:
            return True
        if isinstance(scheduler, str):  # "distributed" here: dask raises when computing
            return dask.base.named_schedulers.get(scheduler.lower(), False) in here
    return dask.base.get_scheduler() in here


def remote_settings() -> tuple[int, float, float]:
    """``(retries, backoff, timeout)`` for reads of remote files (:func:`set_options`).

    >>> remote_settings()
    (5, 0.05, 30.0)
    """
    retries, backoff, timeout = (dask.config.get(key, None) for key, _ in REMOTE_KEYS.values())
    defaults = [default for _, default in REMOTE_KEYS.values()]
    return (
        int(defaults[0] if retries is None else retries),
        float(defaults[1] if backoff is None else backoff),
        float(defaults[2] if timeout is None else timeout),
    )


def _remote_values(given: dict[str, Any]) -> dict[str, Any]:
    values = {}
    for name, value in given.items():
        if value is None:
            continue
        whole = name == "remote_retries"
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (value >= 0 if name != "remote_timeout" else value > 0)
        if not ok or (whole and int(value) != value):
            what = "a whole number >= 0" if whole else "a number of seconds"
            what += "" if name != "remote_timeout" else " > 0"
            raise InvalidArgumentError(f"{name} must be {what}, got {value!r}")
        values[REMOTE_KEYS[name][0]] = int(value) if whole else float(value)
    return values


def set_options(
    *,
    memory_budget: int | str | None = None,
    remote_retries: int | None = None,
    remote_backoff: float | None = None,
    remote_timeout: float | None = None,
) -> Any:
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
    remote_retries
        How many times a failed read of a remote file (an fsspec URL) is sent again
        when the fault is transient: a 5xx answer, a timeout, a connection reset, a
        short read. Default 5; then :class:`~lazyh5.errors.RemoteReadError`.
    remote_backoff
        Seconds before the first retry; each retry waits twice as long as the one
        before (at most 2 s), half of it random so clients spread out. Default 0.05.
    remote_timeout
        Seconds one range request of a remote file may take. Default 30.

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
    >>> from lazyh5.options import remote_settings
    >>> with lazyh5.set_options(remote_retries=2, remote_timeout=5):
    ...     remote_settings()
    (2, 0.05, 5.0)
    """
    values = _remote_values(
        {
            "remote_retries": remote_retries,
            "remote_backoff": remote_backoff,
            "remote_timeout": remote_timeout,
        }
    )
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
