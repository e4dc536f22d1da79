"""Mutation testing of lazyh5's core, module by module, with only the relevant tests.

Usage (from the repository root, with the test extras installed)::

    python scripts/mutation.py                      # every module below
    python scripts/mutation.py lazyh5/feed/plan.py  # some of them
    python scripts/mutation.py --jobs 1 --out build/mutation

Each module runs in its own copy of the repository (``<out>/<module>/``), so the
worktree is never touched, and writes ``<out>/scores.md`` (the per-module table and
every survivor's diff, quoted by docs/reliability.md) and ``<out>/scores.json``.

The tool is mutmut 3, not cosmic-ray: mutmut mutates every function once into a
trampoline, records which tests call which function, then forks one process per
mutant from a warm interpreter and runs only those tests. cosmic-ray starts a fresh
pytest (xarray, dask, h5py imports: seconds) per mutant and runs the whole selection,
which does not fit an hour on 2 cores. ``process_isolation = "forkserver"`` matters:
forking from the process that ran the tests inherits lazyh5's thread pools without
their threads, and every mutant then hangs.

Not part of CI's default run: a full pass takes most of an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FEED = ["tests/test_feed_loader.py", "tests/test_feed_shuffle.py"]
SHARDS = ["tests/test_feed_distributed.py"]
WRITE = ["tests/test_write_accessor.py", "tests/test_property_slicing.py"]
READ = ["tests/test_decode.py", "tests/test_parity.py", "tests/test_property_slicing.py"]
TO_HDF5 = ["tests/test_to_hdf5.py"]
# Tests that train in other processes (JAX, Keras, the docs' code) or kill one: their
# calls are not recorded, and they cost minutes per surviving mutant.
SLOW = "not (jax or keras or docs_code or sigkill)"

# module -> the test files that exercise it (plus the new tests/test_mutants_*.py)
MODULES: dict[str, list[str]] = {
    "lazyh5/feed/buffers.py": [*FEED, "tests/test_mutants_feed.py", "tests/test_mutants_loader.py"],
    "lazyh5/backend/selection.py": [*READ, "tests/test_mutants_read.py"],
    "lazyh5/feed/shard.py": [*SHARDS, "tests/test_mutants_feed.py", "tests/test_mutants_loader.py"],
    "lazyh5/feed/plan.py": [
        *FEED,
        *SHARDS,
        "tests/test_mutants_feed.py",
        "tests/test_mutants_loader.py",
    ],
    "lazyh5/feed/shuffle.py": [
        *FEED,
        *SHARDS,
        "tests/test_mutants_feed.py",
        "tests/test_mutants_loader.py",
    ],
    "lazyh5/feed/state.py": [
        *FEED,
        *SHARDS,
        "tests/test_mutants_feed.py",
        "tests/test_mutants_loader.py",
    ],
    "lazyh5/backend/chunking.py": [*READ, "tests/test_create.py", "tests/test_mutants_read.py"],
    "lazyh5/backend/decode.py": [*READ, "tests/test_mutants_read.py"],
    "lazyh5/backend/rows.py": [*READ, *FEED, "tests/test_mutants_read.py"],
    "lazyh5/backend/positions.py": [
        *WRITE,
        *TO_HDF5,
        "tests/test_mutants_write.py",
        "tests/test_mutants_positions.py",
    ],
    "lazyh5/backend/view.py": [
        *WRITE,
        *TO_HDF5,
        "tests/test_mutants_write.py",
        "tests/test_mutants_positions.py",
        "tests/test_mutants_view.py",
    ],
    "lazyh5/write/assign.py": [
        *WRITE,
        "tests/test_mutants_write.py",
        "tests/test_mutants_assign.py",
    ],
    "lazyh5/write/layout.py": [
        *TO_HDF5,
        "tests/test_create.py",
        "tests/test_mutants_to_hdf5.py",
        "tests/test_mutants_layout.py",
    ],
    "lazyh5/write/to_hdf5.py": [
        *TO_HDF5,
        "tests/test_mutants_to_hdf5.py",
        "tests/test_mutants_layout.py",
        "tests/test_remote_write.py",  # URLs: written locally, then uploaded
    ],
    "lazyh5/feed/loader.py": [
        *FEED,
        *SHARDS,
        "tests/test_mutants_feed.py",
        "tests/test_mutants_loader.py",
    ],
}

MUTMUT = str(Path(sys.executable).parent / "mutmut")
KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def _config(module: str, tests: list[str]) -> str:
    selection = [t for t in tests if (ROOT / t).exists()] + ["-k", SLOW]
    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["lazyh5"]\n'
        f"only_mutate = {json.dumps([module])}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(selection)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
        'process_isolation = "forkserver"\n'
        "use_git_change_detection = false\n"
        # a mutant that loops forever is killed after 4x its tests' time plus 20 s
        "timeout_multiplier = 4.0\n"
        "timeout_constant = 5.0\n"
    )


def _workdir(out: Path, module: str, tests: list[str]) -> Path:
    work = out / module.replace("/", "_").removesuffix(".py")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(ROOT / "lazyh5", work / "lazyh5", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    text = (ROOT / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(text + _config(module, tests))
    return work


def run_module(module: str, out: Path, jobs: int) -> dict:
    """Mutate one module, run its tests against every mutant, return the tally."""
    work = _workdir(out, module, MODULES[module])
    started = time.monotonic()
    with open(work / "mutmut.log", "w") as log:
        subprocess.run(
            ["nice", "-n", "10", MUTMUT, "run", "--max-children", str(jobs)],
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    minutes = round((time.monotonic() - started) / 60, 1)
    (work / "minutes").write_text(str(minutes))
    return collect(module, work)


def rerun_survivors(module: str, out: Path, jobs: int) -> dict:
    """Run the survivors of a finished run again, against the current tests.

    The module's code is the same (else it runs in full), so killed mutants stay
    killed; the other modules' code is brought up to date, and mutmut records which of
    the new tests call each function before running them.
    """
    work = out / module.replace("/", "_").removesuffix(".py")
    if _config(module, MODULES[module]) not in (work / "pyproject.toml").read_text():
        # mutmut drops every result when its test selection changes: run it all again
        print(f"{module}: test files added since its run; running it in full", flush=True)
        return run_module(module, out, jobs)
    if (work / module).read_text() != (ROOT / module).read_text():
        print(f"{module}: changed since its run; running it in full", flush=True)
        return run_module(module, out, jobs)
    names = list(collect(module, work)["survivors"])
    for tests in (work / "tests", work / "mutants" / "tests"):
        shutil.rmtree(tests)
        shutil.copytree(ROOT / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    # The new tests may need the current code of the other modules.
    for path in (ROOT / "lazyh5").rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.as_posix() != module:
            for base in (work, work / "mutants"):
                (base / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, base / rel)
    started = time.monotonic()
    if names:
        with open(work / "mutmut.log", "a") as log:
            subprocess.run(
                ["nice", "-n", "10", MUTMUT, "run", "--max-children", str(jobs), *names],
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
    done = work / "minutes"
    minutes = float(done.read_text()) if done.exists() else 0.0
    minutes += (time.monotonic() - started) / 60
    (work / "minutes").write_text(str(round(minutes, 1)))
    return collect(module, work)


def collect(module: str, work: Path) -> dict:
    """The tally of a finished run in ``work``: killed, total, each survivor's diff."""
    listing = subprocess.run(
        [MUTMUT, "results", "--all", "true"], cwd=work, capture_output=True, text=True
    ).stdout
    status = dict(re.findall(r"^\s+(\S+): (.+)$", listing, re.M))
    survivors = {}
    for name, state in sorted(status.items(), key=lambda kv: _number(kv[0])):
        if state not in KILLED:
            diff = subprocess.run([MUTMUT, "show", name], cwd=work, capture_output=True, text=True)
            survivors[name] = {"status": state, "diff": _short_diff(diff.stdout)}
    killed = sum(s in KILLED for s in status.values())
    minutes = work / "minutes"
    return {
        "module": module,
        "killed": killed,
        "total": len(status),
        "minutes": float(minutes.read_text()) if minutes.exists() else None,
        "survivors": survivors,
    }


def _number(name: str) -> tuple[str, int]:
    base, _, n = name.rpartition("_")
    return (base, int(n) if n.isdigit() else 0)


def _short_diff(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln[:1] in "+-" and ln[:3] not in ("---", "+++")]
    return "\n".join(lines)


def write_report(results: list[dict], out: Path) -> str:
    rows = ["| module | killed / total | score | survivors | minutes |"]
    rows.append("| --- | --- | --- | --- | --- |")
    for r in results:
        score = 100 * r["killed"] / r["total"] if r["total"] else 0.0
        rows.append(
            f"| `{r['module']}` | {r['killed']} / {r['total']} | {score:.1f}% "
            f"| {len(r['survivors'])} | {r['minutes']} |"
        )
    table = "\n".join(rows)
    details = []
    for r in results:
        for name, s in r["survivors"].items():
            details.append(f"### {name} ({s['status']})\n\n```diff\n{s['diff']}\n```\n")
    (out / "scores.md").write_text(table + "\n\n## Survivors\n\n" + "\n".join(details))
    (out / "scores.json").write_text(json.dumps(results, indent=1))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument(
        "--report", action="store_true", help="only rebuild the table from finished runs"
    )
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="rerun only the survivors of finished runs, against the current tests",
    )
    args = parser.parse_args()
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"no test selection for {unknown}; known: {sorted(MODULES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    # Runs of some modules update the table of earlier runs (kept in scores.json).
    saved = args.out / "scores.json"
    earlier = {r["module"]: r for r in json.loads(saved.read_text())} if saved.exists() else {}
    for module in args.modules or list(MODULES):
        work = args.out.resolve() / module.replace("/", "_").removesuffix(".py")
        if args.report:
            if not (work / "mutants").exists():
                continue
            r = earlier[module] = collect(module, work)
        elif args.survivors:
            if not (work / "mutants").exists():
                continue
            r = earlier[module] = rerun_survivors(module, args.out.resolve(), args.jobs)
        else:
            r = earlier[module] = run_module(module, args.out.resolve(), args.jobs)
        print(f"{module}: {r['killed']} / {r['total']} killed, {r['minutes']} min", flush=True)
        for name, s in r["survivors"].items():
            print(f"  {s['status']}: {name}\n    " + s["diff"].replace("\n", "\n    "), flush=True)
    print(write_report([earlier[m] for m in MODULES if m in earlier], args.out))


if __name__ == "__main__":
    main()
