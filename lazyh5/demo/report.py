"""What the demo prints as it runs, and the :class:`Report` its summary is drawn from.

Every step prints what it did, how fast (MB/s, images/s, samples/s) and the peak memory of
the process so far; progress bars go to stdout with those lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MB = 1e6


@dataclass
class Report:
    """What the demo measured, for the final summary and the PNG."""

    n: int
    out: Path
    lines: list[tuple[str, str]] = field(default_factory=list)
    disk: dict[str, int] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    batch_loss: list[float] = field(default_factory=list)
    steps_per_epoch: int = 0
    val_accuracy: float | None = None

    def add(self, what: str, figures: str) -> None:
        """Record a line of the summary table."""
        self.lines.append((what, figures))


def peak_rss_mib() -> float:
    """The peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def step(title: str) -> None:
    """Print the heading of a step."""
    print(f"\n== {title}", flush=True)


def say(text: str) -> None:
    """Print one indented line of a step."""
    print(f"   {text}", flush=True)


def say_peak_memory() -> None:
    """Print the peak memory of the process so far."""
    say(f"peak memory so far {peak_rss_mib():,.0f} MiB")


def gb(nbytes: float) -> str:
    """``nbytes`` in GB from 0.1 GB on, else in MB."""
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / MB:.1f} MB"


def bar(total: int, desc: str, unit: str, **kwargs: Any) -> Any:
    """A tqdm progress bar on stdout, with the demo's messages (redrawn less often when
    stdout is not a terminal)."""
    from tqdm.auto import tqdm

    tty = sys.stdout.isatty()
    return tqdm(
        file=sys.stdout,
        total=total,
        desc=f"   {desc}",
        unit=unit,
        mininterval=0.1 if tty else 5.0,
        dynamic_ncols=tty,
        ncols=None if tty else 100,
        **kwargs,
    )


def dask_bar(progress: Any, keep: Callable[[str], bool], grow: bool = False) -> Any:
    """A dask callback advancing ``progress`` (a bar) by one per finished task that ``keep``s.

    The bar is left open, so that one bar can follow several computations; with ``grow``,
    each computation adds its matching tasks to the bar's total when it starts.
    """
    from dask.callbacks import Callback

    def name(key: Any) -> str:
        return str(key[0] if isinstance(key, tuple) else key)

    class _DaskBar(Callback):
        def _start_state(self, dsk: Any, state: Any) -> None:
            if grow:
                progress.total = (progress.total or 0) + sum(keep(name(key)) for key in dsk)
                progress.refresh()

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if keep(name(key)):
                progress.update(1)

        def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
            if grow and not errored:  # some tasks (fused, finalize) are not reported
                progress.update(progress.total - progress.n)

    return _DaskBar()


#: TensorFlow's native log lines that say nothing to a demo user, printed whatever
#: ``TF_CPP_MIN_LOG_LEVEL`` says: absl INFO lines and their preamble while Keras imports
#: TensorFlow, and oneDNN's note that float16 inputs use Eigen kernels on CPUs without
#: AVX-512 (logged at ERROR level, although nothing is wrong).
_NATIVE_CHATTER = re.compile(
    r"^I\d{4} |absl::InitializeLog\(\)|^To enable the following instructions:"
    r"|oneDNN supports DT_HALF only on platforms with AVX-512"
)


@contextlib.contextmanager
def filtered_stderr(drop: re.Pattern[str] = _NATIVE_CHATTER) -> Iterator[None]:
    """Capture file descriptor 2 (native libraries write there) and re-emit what is not ``drop``.

    Everything else written meanwhile (warnings, errors) is printed when the block ends.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            sys.stderr.write(
                "".join(line for line in text.splitlines(True) if not drop.search(line))
            )
            sys.stderr.flush()
