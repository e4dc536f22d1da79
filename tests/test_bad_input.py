"""Bad input to every public entry point: a clear lazyh5 error, and no file changes.

One table, ``CASES``: each row is ``(case id, builder, call, expected error, substrings)``.

- the *builder* makes the files of the case in an empty folder (always ``good.h5``,
  plus the bad input) and returns the path the call is given;
- the *call* runs one public entry point on that path (the Python API, the ``.h5``
  accessor, or a CLI command run in-process so the exception itself is checked);
- the *expected error* is a :class:`lazyh5.Lazyh5Error` subclass; ``MAY_READ`` (only
  for files with flipped bytes) accepts a clean read *or* any lazyh5 error naming the
  file (mostly :class:`CorruptFileError`; a flipped bit in a name gives
  :class:`ObjectNotFoundError`);
- every *substring* must be in the message; ``{file}`` stands for the path's name.
  Together they name the file, the object and what was expected.

Every file in the folder is hashed before and after the call: nothing may change,
appear or disappear. The console script itself (exit status 2, a one-line message,
no traceback) is checked in a few real subprocesses at the end.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.errors import (
    AlreadyExistsError,
    CorruptFileError,
    DimensionError,
    FileBusyError,
    FileMissingError,
    InvalidArgumentError,
    InvalidIndexError,
    Lazyh5Error,
    NotHDF5Error,
    ObjectNotFoundError,
    ReadOnlyError,
    UnsupportedDtypeError,
)
from tests._files import UNREADABLE, unreadable
from tests._process import hold_for_writing, run_lazyh5

MAY_READ = "may read"  # flipped bytes: a clean read, or a lazyh5 error naming the file

# -- builders: make the case's files in `tmp`, return the path the call gets ----------


def _write_numeric(path: Path) -> None:
    """Numbers only: no variable-length strings, whose damaged global heap makes HDF5
    loop forever (see docs/reliability.md); flipped-byte cases are built from this."""
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "x",
            data=np.arange(400, dtype="f4").reshape(100, 4),
            chunks=(10, 4),
            compression="gzip",
        )
        f.create_dataset("y", data=np.arange(100, dtype="i8"))
        f.create_dataset("g/z", data=np.arange(10.0))
        f["x"].attrs["scale"] = np.float64(2.0)


def _write_good(path: Path) -> None:
    """Every kind of dataset the table needs: the numeric ones, strings, compound, empty."""
    _write_numeric(path)
    with h5py.File(path, "a") as f:
        f.create_dataset("scalar", data=1.5)
        f.create_dataset("names", data=np.array([b"n%03d" % i for i in range(100)]))  # S4
        f.create_dataset("words", data=[f"w{i}" for i in range(100)], dtype=h5py.string_dtype())
        cmpd = np.zeros(100, dtype=[("a", "i4"), ("b", "f8")])
        f.create_dataset("cmpd", data=cmpd)
        f.create_dataset("empty", shape=(0, 4), dtype="f4")


def good(tmp: Path, stack: contextlib.ExitStack) -> Path:
    _write_good(tmp / "good.h5")
    return tmp / "good.h5"


def _unreadable(kind: str) -> Callable[[Path, contextlib.ExitStack], Path]:
    """good.h5, and next to it a path of one of ``tests._files.UNREADABLE``."""

    def build(tmp, stack):
        return unreadable(kind, tmp, good(tmp, stack))

    build.__name__ = kind
    return build


missing, directory, empty, text, truncated = map(_unreadable, UNREADABLE)


def flipped(seed: int) -> Callable[[Path, contextlib.ExitStack], Path]:
    """A numeric file with 1-8 random bits flipped anywhere (seeded: the same every run)."""

    def build(tmp, stack):
        good(tmp, stack)
        _write_numeric(tmp / "source.h5")
        buf = bytearray((tmp / "source.h5").read_bytes())
        (tmp / "source.h5").unlink()
        rng = np.random.default_rng(seed)
        for _ in range(rng.integers(1, 9)):
            buf[rng.integers(8, len(buf))] ^= 1 << int(rng.integers(0, 8))
        (tmp / f"flipped{seed}.h5").write_bytes(bytes(buf))
        return tmp / f"flipped{seed}.h5"

    build.__name__ = f"flipped{seed}"
    return build


def empty_rows(tmp, stack):
    good(tmp, stack)
    with h5py.File(tmp / "rows0.h5", "w") as f:
        f.create_dataset("x", shape=(0, 4), dtype="f4")
        f.create_dataset("y", shape=(0,), dtype="i8")
    return tmp / "rows0.h5"


def vlen(tmp, stack):
    good(tmp, stack)
    with h5py.File(tmp / "vlen.h5", "w") as f:
        f.create_dataset("y", data=np.arange(3))
        f.create_dataset("ragged", (3,), dtype=h5py.vlen_dtype(np.int32))
    return tmp / "vlen.h5"


def new_path(tmp, stack):
    good(tmp, stack)
    return tmp / "out.h5"


def in_missing_folder(tmp, stack):
    good(tmp, stack)
    return tmp / "nofolder" / "out.h5"


def busy(tmp, stack):
    """good.h5, held open for writing by another (real) process until the case ends."""
    p = good(tmp, stack)
    holder = hold_for_writing(p)
    stack.callback(holder.wait)
    stack.callback(holder.kill)
    return p


# -- calls: one public entry point each ------------------------------------------------


# The calls that read values return them by dataset path ({"/x": array}), for the
# flipped-byte cases that read cleanly to compare with h5py's.


def _load(obj: Any) -> dict[str, np.ndarray]:
    """Read every value of a Dataset or DataTree, then close it; the values of the
    variables read from datasets, by dataset path."""
    nodes = obj.subtree if isinstance(obj, xr.DataTree) else [obj]
    out = {}
    for node in nodes:
        ds = node.dataset if isinstance(node, xr.DataTree) else node
        for var in ds.variables.values():
            values = var.values
            if "lazyh5_path" in var.encoding:
                out[var.encoding["lazyh5_path"]] = values
    obj.close()
    return out


def open_ds(**kw):
    def call(p):
        return _load(lazyh5.open_dataset(p, **kw))

    return call


def open_tree(**kw):
    def call(p):
        return _load(lazyh5.open_datatree(p, **kw))

    return call


def xr_open(**kw):
    def call(p):
        return _load(xr.open_dataset(p, engine="lazyh5", **kw))

    return call


def matrix(dataset="x", index=None, **kw):
    def call(p):
        m = lazyh5.HDF5Matrix(p, dataset, **kw)
        try:
            values = m[slice(None) if index is None else index]
        finally:
            m.close()
        return {"/" + dataset: values} if index is None else {}

    return call


def loader(x="x", y="y", **kw):
    def call(p):
        ds = lazyh5.open_dataset(p)
        try:
            batches = list(lazyh5.BatchLoader(ds, x, y, **kw))
        finally:
            ds.close()
        if kw.get("shuffle", True) or not batches:
            return {}
        return {
            f"/{x}": np.concatenate([b[0] for b in batches]),
            f"/{y}": np.concatenate([b[1] for b in batches]),
        }

    return call


def assign(var, key, value, *, mode="r+", loc=False):
    """``ds[var].h5[key] = value`` (``value(ds)`` if callable: a lazy expression)."""

    def call(p):
        ds = lazyh5.open_dataset(p, mode=mode)
        try:
            v = value(ds) if callable(value) else value
            (ds[var].h5.loc if loc else ds[var].h5)[key] = v
        finally:
            ds.close()

    return call


def assign_many(key, values):
    def call(p):
        ds = lazyh5.open_dataset(p, mode="r+")
        try:
            ds.h5[key] = values
        finally:
            ds.close()

    return call


def create(variables=None, **kw):
    def call(p):
        ds = lazyh5.create(p, {"v": ((10, 3), "f4")} if variables is None else variables, **kw)
        ds.close()

    return call


def to_hdf5(source=None, **kw):
    """``to_hdf5`` of good.h5's x and y (or ``source(ds)``) into the case's path."""

    def call(p):
        src = lazyh5.open_dataset(
            next(q / "good.h5" for q in p.parents if (q / "good.h5").exists())
        )
        try:
            obj = source(src) if source is not None else src[["x", "y"]]
            lazyh5.to_hdf5(p, obj, progress=False, **kw)
        finally:
            src.close()

    return call


def cli(*argv: str):
    """A CLI command run in-process (``{p}`` is the path, ``{tmp}`` its folder)."""

    def call(p):
        from lazyh5.cli.main import _parser

        args = _parser().parse_args([a.format(p=p, tmp=p.parent) for a in argv])
        args.run(args)

    return call


# -- the table -------------------------------------------------------------------------

MISSING = (FileMissingError, ["{file}", "no such file", "expected an existing HDF5 file"])
A_DIR = (FileMissingError, ["{file}", "is a directory", "expected an HDF5 file"])
EMPTY = (NotHDF5Error, ["{file}", "empty (0 bytes)", "expected an HDF5 file"])
TEXT = (NotHDF5Error, ["{file}", "not an HDF5 file", "expected a file written by"])
TRUNC = (CorruptFileError, ["{file}", "damaged or truncated"])
BUSY = (FileBusyError, ["{file}", "locked by another process", "close it there first"])

# Entry points that read an existing file.
READERS = {
    "open_dataset": open_ds(),
    "open_datatree": open_tree(),
    "xr.open_dataset": xr_open(),
    "open_dataset-r+": open_ds(mode="r+"),
    "HDF5Matrix": matrix(),
    "create-append": create(mode="a"),
    "cli-info": cli("info", "{p}"),
    "cli-show": cli("show", "{p}", "x", "-o", "{tmp}/x.png"),
}
FLIP_READERS = {
    "open_dataset": open_ds(),
    "open_datatree": open_tree(),
    "xr.open_dataset": xr_open(),
    "HDF5Matrix": matrix(),
    "BatchLoader": loader(batch_size=7, shuffle=False),
    "cli-info": cli("info", "{p}"),
}

CASES: list[tuple[str, Callable, Callable, Any, list[str]]] = []
for name, call in READERS.items():
    for kind, build, (error, expect) in [
        ("missing", missing, MISSING),
        ("directory", directory, A_DIR),
        ("empty", empty, EMPTY),
        ("text", text, TEXT),
        ("truncated", truncated, TRUNC),
        ("busy", busy, BUSY),
    ]:
        if (name, kind) == ("create-append", "missing"):
            continue  # mode="a" creates a missing file: not an error
        CASES.append((f"{name}-{kind}", build, call, error, expect))
for seed in range(8):
    for name, call in FLIP_READERS.items():
        CASES.append((f"{name}-flipped{seed}", flipped(seed), call, MAY_READ, []))

NO_GROUP = ["{file}", "no group '/nope'", "groups at '/'"]
CASES += [
    # -- groups, datasets, variables, dims= ------------------------------------------
    ("open_dataset-no-group", good, open_ds(group="nope"), ObjectNotFoundError, NO_GROUP),
    ("open_datatree-no-group", good, open_tree(group="nope"), ObjectNotFoundError, NO_GROUP),
    ("xr.open_dataset-no-group", good, xr_open(group="nope"), ObjectNotFoundError, NO_GROUP),
    ("open_dataset-group-is-dataset", good, open_ds(group="x"), ObjectNotFoundError,
     ["{file}", "'/x'", "is a dataset, not a group"]),
    ("dims-missing-dataset", good, open_ds(dims={"nope": ("a",)}), ObjectNotFoundError,
     ["{file}", "nope", "no such dataset", "available"]),
    ("dims-wrong-count", good, open_ds(dims={"x": ("a",)}), DimensionError,
     ["{file}", "'x'", "1 name(s)", "2 axes"]),
    ("dims-repeated", good, open_ds(dims={"x": ("a", "a")}), DimensionError,
     ["{file}", "'x'", "repeats a name"]),
    ("dims-conflicting-lengths", good, open_ds(dims={"x": ("a", "b"), "empty": ("a", "b")}),
     DimensionError, ["{file}", "dimension 'a'", "length", "different names"]),
    ("xr.open_dataset-dims-wrong-count", good, xr_open(dims={"x": ("a", "b", "c")}),
     DimensionError, ["{file}", "'x'", "3 name(s)", "2 axes"]),
    ("open_dataset-bad-mode", good, open_ds(mode="w"), InvalidArgumentError,
     ["{file}", "mode='w'", "must be 'r'"]),
    ("open_datatree-bad-mode", good, open_tree(mode="a"), InvalidArgumentError,
     ["{file}", "mode='a'", "must be 'r'"]),
    # -- HDF5Matrix --------------------------------------------------------------------
    ("HDF5Matrix-no-dataset", good, matrix("nope"), ObjectNotFoundError,
     ["{file}", "'nope'", "expected one of"]),
    ("HDF5Matrix-group", good, matrix("g"), ObjectNotFoundError,
     ["{file}", "'g'", "expected one of"]),
    ("HDF5Matrix-scalar", good, matrix("scalar"), DimensionError,
     ["{file}", "'scalar'", "is a scalar", "needs a dataset with rows"]),
    ("HDF5Matrix-start-negative", good, matrix(start=-1), InvalidIndexError,
     ["{file}", "'x'", "start=-1", "expected 0 <= start <= end <= 100"]),
    ("HDF5Matrix-end-too-big", good, matrix(end=101), InvalidIndexError,
     ["{file}", "'x'", "end=101", "expected 0 <= start <= end <= 100"]),
    ("HDF5Matrix-start-after-end", good, matrix(start=60, end=40), InvalidIndexError,
     ["{file}", "'x'", "start=60", "expected 0 <= start <= end <= 100"]),
    ("HDF5Matrix-index-out-of-range", good, matrix(index=100), InvalidIndexError,
     ["{file}", "'x'", "index 100", "expected -100 <= index < 100"]),
    ("HDF5Matrix-index-list-out-of-range", good, matrix(index=[1, -101]), InvalidIndexError,
     ["{file}", "'x'", "index -101", "expected -100 <= index < 100"]),
    # -- BatchLoader -------------------------------------------------------------------
    ("BatchLoader-no-variable", good, loader(x="nope"), ObjectNotFoundError,
     ["{file}", "'nope'", "available"]),
    ("BatchLoader-no-dim", good, loader(dim="nope"), DimensionError,
     ["{file}", "'nope'", "pass dim="]),
    ("BatchLoader-batch-size-0", good, loader(batch_size=0), InvalidArgumentError,
     ["{file}", "batch_size", "positive integer", "got 0"]),
    ("BatchLoader-batch-size-negative", good, loader(batch_size=-3), InvalidArgumentError,
     ["{file}", "batch_size", "positive integer", "got -3"]),
    ("BatchLoader-batch-size-float", good, loader(batch_size=2.5), InvalidArgumentError,
     ["{file}", "batch_size", "positive integer", "got 2.5"]),
    ("BatchLoader-start-negative", good, loader(start=-1), InvalidIndexError,
     ["{file}", "start=-1", "expected 0 <= start <= end <= 100"]),
    ("BatchLoader-end-too-big", good, loader(end=101), InvalidIndexError,
     ["{file}", "end=101", "expected 0 <= start <= end <= 100"]),
    ("BatchLoader-start-after-end", good, loader(start=60, end=40), InvalidArgumentError,
     ["{file}", "no rows", "start=60", "expected at least one row"]),
    ("BatchLoader-0-rows", empty_rows, loader(), InvalidArgumentError,
     ["{file}", "no rows", "of 0 rows", "expected at least one row"]),
    ("BatchLoader-scalar", good, loader(x="scalar"), DimensionError,
     ["{file}", "'scalar'", "needs the sample dimension"]),
    ("BatchLoader-fixed-strings", good, loader(x="names"), UnsupportedDtypeError,
     ["{file}", "'names'", "numeric and bool"]),
    ("BatchLoader-vlen-strings", good, loader(x="words"), UnsupportedDtypeError,
     ["{file}", "'words'", "numeric and bool"]),
    ("BatchLoader-compound", good, loader(x="cmpd"), UnsupportedDtypeError,
     ["{file}", "'cmpd'", "numeric and bool"]),
    ("BatchLoader-vlen-numeric", vlen, loader(x="ragged"), ObjectNotFoundError,
     ["{file}", "'ragged'", "available"]),
    # -- writing through the .h5 accessor ------------------------------------------------
    ("assign-wrong-dtype", good, assign("y", slice(0, 2), np.array([1.5, 2.5])),
     UnsupportedDtypeError, ["{file}", "'y'", "float64", "int64", "same_kind"]),
    ("assign-wrong-dtype-lazy", good, assign("y", slice(None), lambda ds: ds["x"][:, 0] * 1.5),
     UnsupportedDtypeError, ["{file}", "'y'", "float32", "int64", "same_kind"]),
    ("assign-wrong-shape", good, assign("x", slice(0, 10), np.zeros((5, 4), "f4")),
     DimensionError, ["{file}", "'x'", "shape (5, 4)", "(10, 4)", "broadcasts"]),
    ("assign-extra-dim", good,
     assign("y", slice(None), xr.DataArray(np.zeros((100, 2)), dims=("sample", "zz"))),
     DimensionError, ["{file}", "'y'", "'zz'"]),
    ("assign-index-out-of-range", good, assign("x", 100, 0.0), InvalidIndexError,
     ["{file}", "'x'", "100", "expected -100 <= index < 100"]),
    ("assign-index-array-out-of-range", good, assign("y", [0, 200], 1), InvalidIndexError,
     ["{file}", "'y'", "out of bounds", "expected -100 <= index < 100"]),
    ("assign-too-many-indices", good, assign("y", (0, 1), 1), InvalidIndexError,
     ["{file}", "'y'", "key has 2 entries", "1 dimension"]),
    ("assign-value-out-of-dtype-range", good, assign("y", 0, 2**70), InvalidArgumentError,
     ["{file}", "'y'", "out of range for int64"]),
    ("assign-unknown-dim", good, assign("y", {"nope": 0}, 1), ObjectNotFoundError,
     ["{file}", "'y'", "no dimension(s) ['nope']"]),
    ("assign-loc-missing-label", good, assign("y", {"sample": 500}, 1, loc=True),
     ObjectNotFoundError, ["{file}", "'y'", "500", "not found along 'sample'"]),
    ("assign-compound", good, assign("cmpd", 0, 5), UnsupportedDtypeError,
     ["{file}", "'cmpd'", "same_kind"]),
    ("assign-read-only", good, assign("y", 0, 1, mode="r"), ReadOnlyError,
     ["{file}", "'y'", "read-only", "mode='r+'"]),
    ("assign-many-unknown-variable", good, assign_many({"sample": 0}, {"nope": 1}),
     ObjectNotFoundError, ["{file}", "'nope'", "expected one of"]),
    ("assign-many-one-bad", good, assign_many({"sample": 0}, {"y": 1, "x": np.zeros(3)}),
     DimensionError, ["{file}", "'x'", "shape (3,)"]),
    # -- create -----------------------------------------------------------------------
    ("create-exists", good, create(), AlreadyExistsError,
     ["{file}", "already exists", "mode='w'"]),
    ("create-missing-folder", in_missing_folder, create(), FileMissingError,
     ["nofolder", "does not exist", "expected an existing folder"]),
    ("create-directory", directory, create(mode="w"), FileMissingError,
     ["{file}", "is a directory", "expected a path for an HDF5 file"]),
    ("create-replace-busy", busy, create(mode="w"), FileBusyError,
     ["{file}", "locked by another process", "close it there first"]),
    ("create-append-existing-name", good,
     create({"new": ((100,), "f4"), "x": ((100, 4), "f4")}, mode="a"), AlreadyExistsError,
     ["{file}", "'x'", "already exists"]),
    ("create-append-dim-clash", good,
     create({"new": ((7,), "f4")}, dims={"new": ("y",)}, mode="a"), DimensionError,
     ["{file}", "dimension 'y'", "clashes with the existing object '/y'"]),
    ("create-bad-mode", new_path, create(mode="r"), InvalidArgumentError,
     ["{file}", "mode must be", "got 'r'"]),
    ("create-no-variables", new_path, create({}), InvalidArgumentError,
     ["{file}", "no variables", "expected {{name: (shape, dtype)}}"]),
    ("create-negative-shape", new_path, create({"v": ((-1,), "f4")}), InvalidArgumentError,
     ["{file}", "'v'", "negative length", "expected lengths >= 0"]),
    ("create-bad-dtype", new_path, create({"v": ((3,), "float99")}), UnsupportedDtypeError,
     ["{file}", "'v'", "float99", "not a numpy dtype"]),
    ("create-dims-wrong-count", new_path, create(dims={"v": ("a",)}), DimensionError,
     ["{file}", "'v'", "1 name(s)", "2 axes"]),
    ("create-dims-unknown", new_path, create(dims={"nope": ("a",)}), DimensionError,
     ["{file}", "['nope']", "not in variables"]),
    ("create-bad-chunks", new_path, create(hdf5_chunks=(5,)), InvalidArgumentError,
     ["{file}", "chunks (5,)", "'v'", "has 2"]),
    ("create-bad-compression", new_path, create(compression="zip"), InvalidArgumentError,
     ["{file}", "'zip'", "expected 'gzip'"]),
    ("create-append-bad-filter-option", good,
     create({"a": ((4,), "f4"), "new": ((4,), "f4")}, mode="a", compression="gzip",
            compression_opts={"new": 99}),
     InvalidArgumentError, ["{file}", "'new'", "GZIP setting must be an integer from 0-9"]),
    # -- to_hdf5 ----------------------------------------------------------------------
    ("to_hdf5-exists", good, to_hdf5(), AlreadyExistsError,
     ["{file}", "already exists", "mode='w'"]),
    ("to_hdf5-missing-folder", in_missing_folder, to_hdf5(), FileMissingError,
     ["nofolder", "does not exist", "expected an existing folder"]),
    ("to_hdf5-directory", directory, to_hdf5(mode="w"), FileMissingError,
     ["{file}", "is a directory", "expected a path for an HDF5 file"]),
    ("to_hdf5-replace-busy", busy, to_hdf5(mode="w"), FileBusyError,
     ["{file}", "locked by another process", "close it there first"]),
    ("to_hdf5-bad-mode", new_path, to_hdf5(mode="a"), InvalidArgumentError,
     ["{file}", "mode must be", "got 'a'"]),
    ("to_hdf5-no-variables", new_path, to_hdf5(lambda ds: xr.Dataset()), InvalidArgumentError,
     ["{file}", "no variables", "expected at least one"]),
    ("to_hdf5-bad-chunks", new_path, to_hdf5(hdf5_chunks={"x": (5,)}), InvalidArgumentError,
     ["{file}", "chunks (5,)", "'x'", "has 2"]),
    ("to_hdf5-bad-compression", new_path, to_hdf5(compression="zip"), InvalidArgumentError,
     ["{file}", "'zip'", "expected 'gzip'"]),
    ("to_hdf5-bad-filter-option", new_path, to_hdf5(compression="gzip", compression_opts=99),
     InvalidArgumentError, ["{file}", "'x'", "GZIP setting must be an integer from 0-9"]),
    # -- CLI (in-process: the exception itself) ------------------------------------------
    ("cli-show-no-variable", good, cli("show", "{p}", "nope", "-o", "{tmp}/o.png"),
     ObjectNotFoundError, ["{file}", "'nope'", "available"]),
    ("cli-show-strings", good, cli("show", "{p}", "names", "-o", "{tmp}/o.png"),
     UnsupportedDtypeError, ["{file}", "'names'", "not numeric"]),
    ("cli-show-compound", good, cli("show", "{p}", "cmpd", "-o", "{tmp}/o.png"),
     UnsupportedDtypeError, ["{file}", "'cmpd'", "not numeric"]),
    ("cli-show-scalar", good, cli("show", "{p}", "scalar", "-o", "{tmp}/o.png"),
     DimensionError, ["{file}", "'scalar'", "is a scalar"]),
    ("cli-show-index-out-of-range", good,
     cli("show", "{p}", "y", "--index", "5,500", "-o", "{tmp}/o.png"), InvalidArgumentError,
     ["{file}", "'y'", "[500]", "out of range for length 100"]),
    ("cli-show-bad-index", good,
     cli("show", "{p}", "y", "--index", "1:2:3:4", "-o", "{tmp}/o.png"), InvalidArgumentError,
     ["{file}", "'y'", "1:2:3:4", "expected START:STOP[:STEP]"]),
    ("cli-show-no-group", good, cli("show", "{p}", "z", "--group", "nope", "-o", "{tmp}/o.png"),
     ObjectNotFoundError, NO_GROUP),
]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, str]:
    """Hash of every file (and a marker for every folder) below ``folder``."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize(
    ("case", "build", "call", "error", "expect"), [pytest.param(*c, id=c[0]) for c in CASES]
)
def test_bad_input(tmp_path, case, build, call, error, expect):
    with contextlib.ExitStack() as stack:
        path = build(tmp_path, stack)
        before = _snapshot(tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skipped datasets warn; asserted elsewhere
            try:
                values = call(path)
            except Exception as err:
                raised = err
            else:
                raised = None
        gc.collect()  # let dropped handles close before hashing
        after = _snapshot(tmp_path)
    if error == MAY_READ:
        assert raised is None or isinstance(raised, Lazyh5Error), repr(raised)
    else:
        assert raised is not None, f"{case}: no error raised"
        assert isinstance(raised, error), f"{case}: {type(raised).__name__}: {raised}"
    if raised is not None:
        assert isinstance(raised, Lazyh5Error), f"{case}: {type(raised).__name__}: {raised}"
        message = str(raised)
        for part in expect:
            assert part.format(file=path.name) in message, f"{part!r} not in {message!r}"
        if error == MAY_READ:
            assert path.name in message
    assert after == before, f"{case}: files changed"
    if error == MAY_READ and raised is None:
        _same_as_h5py(case, path, values or {})


def _same_as_h5py(case: str, path: Path, values: dict[str, np.ndarray]) -> None:
    """What lazyh5 read from a damaged file is what h5py reads from it."""
    with h5py.File(path, "r") as f:
        for name, got in values.items():
            try:
                want = f[name][()]
            except Exception as err:
                raise AssertionError(f"{case}: lazyh5 read {name}, h5py cannot: {err!r}") from err
            np.testing.assert_array_equal(got, want, err_msg=f"{case}: {name}")


# -- the console script ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["info", "{tmp}/missing.h5"], "no such file"),
        (["info", "{tmp}/trunc.h5"], "damaged or truncated"),
        (["show", "{tmp}/good.h5", "nope", "-o", "{tmp}/o.png"], "no variable 'nope'"),
        (["show", "{tmp}/good.h5", "y", "--index", "500", "-o", "{tmp}/o.png"], "out of range"),
    ],
    ids=["info-missing", "info-truncated", "show-no-variable", "show-bad-index"],
)
def test_console_script_reports_one_line(tmp_path, argv, expect):
    truncated(tmp_path, contextlib.ExitStack())
    before = _snapshot(tmp_path)
    argv = [a.format(tmp=tmp_path) for a in argv]
    proc = run_lazyh5(*argv)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lazyh5 {argv[0]}: error: "), proc.stderr
    assert expect in lines[0]
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["bench", "rechunk"])
def test_bench_and_rechunk_refuse_bad_files(tmp_path, command):
    """``bench`` and ``rechunk`` report bad inputs like the rest."""
    truncated(tmp_path, contextlib.ExitStack())
    (tmp_path / "text.h5").write_text("not hdf5")
    before = _snapshot(tmp_path)
    extra = [str(tmp_path / "rechunked.h5")] if command == "rechunk" else ["--x", "x"]
    for name, error, words in [
        ("missing.h5", FileMissingError, "no such file"),
        ("text.h5", NotHDF5Error, "not an HDF5 file"),
        ("trunc.h5", CorruptFileError, "damaged or truncated"),
    ]:
        with pytest.raises(error, match=words) as info:
            cli(command, "{p}", *extra)(tmp_path / name)
        assert name in str(info.value)
    assert _snapshot(tmp_path) == before


def test_holder_process_is_real(tmp_path):
    """The busy cases' holder really holds the lock: a plain h5py open fails too."""
    with contextlib.ExitStack() as stack:
        p = busy(tmp_path, stack)  # the holder has opened it
        with pytest.raises(OSError, match="lock"):
            h5py.File(p, "r", locking=True)


def test_reliability_page_counts_the_cases():
    page = (Path(__file__).parent.parent / "docs" / "reliability.md").read_text()
    assert f"is one table of {len(CASES)} cases" in page
