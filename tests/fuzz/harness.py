"""Fuzz harness: mutated HDF5 files must never crash or hang a process using lazyh5.

A mutated file is opened and fully read through lazyh5 in a *worker process*; the
parent only mutates files and watches. Acceptable outcomes are a clean read or a
:class:`lazyh5.Lazyh5Error` (a clear error naming the file). Findings are saved to the
corpus folder so the regression test replays them forever:

- ``crash``: the worker died (the HDF5 C library crashed);
- ``hang``: the worker stopped answering;
- ``raw``: an exception that is not a lazyh5 error leaked out (h5py's ``OSError``,
  ``RuntimeError``...), i.e. the error is not translated into a clear one.

    python -m tests.fuzz.harness --seconds 60 --corpus tests/data/fuzz
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

WORKER = r"""
import sys, warnings
warnings.simplefilter("ignore")
import lazyh5
for line in sys.stdin:
    path = line.strip()
    try:
        tree = lazyh5.open_datatree(path)
        for node in tree.subtree:
            for var in node.dataset.variables.values():
                var.values
        tree.close()
        out = "ok"
    except lazyh5.Lazyh5Error as err:
        out = "error " + type(err).__name__
    except Exception as err:
        out = "raw " + type(err).__name__ + " " + " ".join(str(err).split())[:200]
    print(out, flush=True)
"""


def make_plain_files(folder: Path) -> list[Path]:
    """Small valid files that exercise many HDF5 structures."""
    rng = np.random.default_rng(0)
    paths = []
    p = folder / "chunked.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset(
            "image",
            data=rng.random((40, 4, 4, 3), dtype="f4"),
            chunks=(8, 4, 4, 3),
            compression="gzip",
            shuffle=True,
        )
        f.create_dataset("label", data=np.arange(40) % 10, chunks=(10,), compression="lzf")
        f.create_dataset("names", data=["a", "bb", "ccc"], dtype=h5py.string_dtype())
        f.create_dataset("scalar", data=1.5)
        f["image"].attrs["units"] = "px"
        f.attrs["title"] = "fuzz"
        g = f.create_group("group/sub")
        g.create_dataset("x", data=np.arange(12.0).reshape(3, 4))
    paths.append(p)
    p = folder / "contiguous.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=np.arange(256, dtype="i2"))
        f.create_dataset("y", data=np.ones((16, 16)))
    paths.append(p)
    return paths


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(0, 4)
    if kind == 0:  # flip a few random bytes
        for _ in range(rng.integers(1, 8)):
            buf[rng.integers(0, len(buf))] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # overwrite a run with random bytes
        start = int(rng.integers(0, len(buf)))
        n = int(rng.integers(1, 64))
        buf[start : start + n] = rng.bytes(min(n, len(buf) - start))
    elif kind == 2:  # truncate
        del buf[int(rng.integers(8, len(buf))) :]
    else:  # flip bytes in the first 2 KiB, where the superblock and root group live
        for _ in range(rng.integers(1, 4)):
            buf[rng.integers(8, min(2048, len(buf)))] ^= 0xFF
    return bytes(buf)


class Worker:
    """A long-lived child process that reads files through lazyh5 on request."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("<exit>")

    def check(self, path: Path, timeout: float) -> str:
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        try:
            answer = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            return "hang"
        return "crash" if answer == "<exit>" else answer

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def replay(path: Path, timeout: float = 60) -> str:
    """Outcome of reading one file in a fresh worker.

    ``'ok'``, ``'error X'`` (X a lazyh5 error), ``'raw X message'`` (X not one),
    ``'crash'`` or ``'hang'``.
    """
    worker = Worker()
    try:
        return worker.check(path, timeout)
    finally:
        worker.close()


def fuzz(
    seconds: float,
    corpus: Path,
    seed: int = 0,
    timeout: float = 20,
    cases: int | None = None,
) -> dict[str, int]:
    """Mutate seed files for ``seconds`` (or ``cases`` mutations, whichever ends first).

    Findings (crashes, hangs, raw errors) are saved into ``corpus``. Counts of
    outcomes are returned: ``ok``, ``error``, ``raw``, ``crash``, ``hang``.
    """
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    corpus.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        seeds = [p.read_bytes() for p in make_plain_files(Path(tmp))]
        worker = Worker()
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline and (cases is None or i < cases):
            case = Path(tmp) / f"case{i}.h5"
            case.write_bytes(mutate(seeds[i % len(seeds)], rng))
            outcome = worker.check(case, timeout)
            key = outcome.split()[0]
            counts[key] = counts.get(key, 0) + 1
            if key in ("crash", "hang", "raw"):
                shutil.copy(case, corpus / f"{key}-{seed}-{i}.h5")
            if key in ("crash", "hang"):
                worker.close()
                worker = Worker()
            os.unlink(case)
            i += 1
        worker.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--corpus", type=Path, default=Path("tests/data/fuzz"))
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--cases", type=int, default=None)
    args = parser.parse_args()
    counts = fuzz(args.seconds, args.corpus, args.seed, cases=args.cases)
    print(f"seed {args.seed}: {sum(counts.values())} cases: {counts}")


if __name__ == "__main__":
    main()
