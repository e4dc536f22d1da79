"""Helpers for tests that involve other processes or lazyh5's threads: the console script
run as a user runs it, a process holding a file open for writing, the prefetch threads."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_HOLDER = (
    "import h5py, sys, time; f = h5py.File(sys.argv[1], 'r+', locking=True); "
    "print('open', flush=True); time.sleep(float(sys.argv[2]))"
)


def run_lazyh5(
    *args: object, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m lazyh5.cli.main ARGS`` in a subprocess (``env``: extra variables)."""
    return subprocess.run(
        [sys.executable, "-m", "lazyh5.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


_ROOT = Path(__file__).resolve().parent.parent


def run_on_two_jax_cpus(
    code: str, *args: object, cwd: Path | None = None, keras: bool = False, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``python -c CODE ARGS`` with JAX on two host CPU devices (fixed at JAX's first
    import, hence a new process), lazyh5 importable from this checkout and no
    ``TF_CONFIG``; ``keras=True`` also selects Keras' JAX backend."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(_ROOT),
    }
    if keras:
        env["KERAS_BACKEND"] = "jax"
    env.pop("TF_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def hold_for_writing(path: Path, seconds: float = 60) -> subprocess.Popen:
    """Another (real) process that holds ``path`` open for writing, with HDF5's file lock,
    for ``seconds``; returned once the file is open. Kill it when done."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline().strip() == b"open"
    except BaseException:
        holder.kill()
        holder.wait()
        raise
    return holder


def prefetch_threads() -> list[threading.Thread]:
    """The loaders' prefetch threads still alive."""
    return [t for t in threading.enumerate() if t.name == "lazyh5-prefetch" and t.is_alive()]


def wait_for_prefetch_threads(timeout: float = 5.0) -> list[threading.Thread]:
    """Wait up to ``timeout`` seconds for the prefetch threads to end; returns those left."""
    deadline = time.monotonic() + timeout
    while prefetch_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return prefetch_threads()


def run_until_exit(code: str, path: Path, how: str, pause: float) -> tuple[int, str]:
    """Run ``python -c code path how``; once it prints ``started``, send it SIGINT after
    ``pause`` seconds if ``how == "sigint"`` (else it exits by itself), and wait for it to
    end. Returns its exit status and its standard error.

    A process that has not ended 30 s after ``started`` is hung (exiting takes well under
    a second): it is killed and the test fails, saying so, with what it wrote to stderr.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "started"
        if how == "sigint":
            time.sleep(pause)  # let it run a moment: the interrupt lands mid-iteration
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"the process did not exit ({how}) within 30 s: {err}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, proc.stderr.read()
