"""Files written by other software, generated here, read dataset by dataset.

PyTables, pandas' ``HDFStore`` (through PyTables), h5netcdf, and h5py's low-level API
for the HDF5 types the others do not write (time, quad-precision floats, array element
types, opaque, references, enum, a filter that is not installed). For each dataset:

- readable ones equal h5py's values (compounds field by field, in native byte order;
  array element types with their extra trailing dimensions);
- unreadable ones are skipped with a warning naming the file, the dataset and its HDF5
  type, and the rest of the file opens;
- a dataset whose filter is not installed opens, and raises ``MissingFilterError`` when
  read;
- no file is modified by opening or reading it (hashed before and after).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import textwrap
import warnings
import zlib
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from h5py import h5d, h5p, h5s, h5t, h5z

import lazyh5
from lazyh5.errors import MissingFilterError

READ = "read"

# What each generated dataset gives, when it is not READ (equal to h5py's values):
# ("skip", words of the warning), ("left out", member, words), ("filter", id, name),
# or ("dimension", None) for a netCDF dimension without coordinate values (no variable).
OUTCOMES: dict[tuple[str, str], tuple] = {
    ("pytables.h5", "/vlarray"): ("skip", "variable-length sequence of 32-bit integer"),
    ("pytables.h5", "/vlstrings"): ("skip", "variable-length sequence of 8-bit integer"),
    ("pytables.h5", "/table_time"): ("left out", "when", "H5T_TIME (64-bit time)"),
    ("pandas.h5", "/fixed/block2_values"): ("skip", "variable-length sequence"),
    ("lowlevel.h5", "/time"): ("skip", "H5T_TIME (64-bit time)"),
    ("lowlevel.h5", "/opaque"): ("skip", "opaque (4 bytes, tag 'raw bytes')"),
    ("lowlevel.h5", "/object_ref"): ("skip", "object reference"),
    ("lowlevel.h5", "/region_ref"): ("skip", "region reference"),
    ("lowlevel.h5", "/vlen_float"): ("skip", "variable-length sequence of 64-bit float"),
    ("lowlevel.h5", "/array_of_opaque"): ("skip", "array (2,) of opaque"),
    ("lowlevel.h5", "/compound_of_refs"): ("skip", "object reference (member 'ref')"),
    ("lowlevel.h5", "/lzo"): ("filter", 305, "lzo"),
    ("h5netcdf.nc", "/t"): ("dimension", None),
}
if np.finfo(np.longdouble).nmant != 112:  # x86: longdouble is x87's 80 bits, not IEEE quad
    OUTCOMES["lowlevel.h5", "/quad"] = ("skip", "128-bit float (precision 128 bits)")

# Every dataset the generators below write, by file (checked against the files, so a
# dataset a new library version adds cannot go untested).
DATASETS = {
    "pytables.h5": [
        "/table_le",
        "/table_be",
        "/table_nested",
        "/table_time",
        "/array_be",
        "/bools",
        "/strings",
        "/earray",
        "/carray_zlib",
        "/carray_blosc",
        "/carray_blosc2",
        "/carray_bzip2",
        "/enum",
        "/vlarray",
        "/vlstrings",
        "/group/inner",
    ],
    "pandas.h5": [
        "/fixed/axis0",
        "/fixed/axis1",
        "/fixed/block0_items",
        "/fixed/block0_values",
        "/fixed/block1_items",
        "/fixed/block1_values",
        "/fixed/block2_items",
        "/fixed/block2_values",
        "/table/table",
        "/series/index",
        "/series/values",
    ],
    "h5netcdf.nc": ["/x", "/t", "/temp", "/name", "/cloud", "/pair", "/sub/y"],
    "lowlevel.h5": [
        "/ok",
        "/compound_be",
        "/compound_nested",
        "/array_element",
        "/array_element_be_compound",
        "/enum",
        "/bool",
        "/time",
        "/quad",
        "/opaque",
        "/object_ref",
        "/region_ref",
        "/vlen_float",
        "/array_of_opaque",
        "/compound_of_refs",
        "/lzo",
    ],
}
CASES = [(name, path) for name, paths in DATASETS.items() for path in paths]
# Datasets whose filter h5py has only through hdf5plugin (Blosc, Blosc2, bzip2).
NEEDS_PLUGIN = {("pytables.h5", f"/carray_{name}") for name in ("blosc", "blosc2", "bzip2")}


# --- the files -------------------------------------------------------------------


def _rows(n: int = 6) -> np.ndarray:
    rows = np.zeros(n, [("i", "<i4"), ("x", "<f8", (2,)), ("s", "S8"), ("b", "?"), ("c", "<c16")])
    rows["i"] = np.arange(n) - 2
    rows["x"] = np.stack([np.arange(n) * 0.5, -np.arange(n) * 1.5], axis=1)
    rows["s"] = [f"row{k}".encode() for k in range(n)]
    rows["b"] = np.arange(n) % 2 == 0
    rows["c"] = np.arange(n) + 1j
    return rows


def _descriptions(tables) -> tuple[type, type, type]:
    """PyTables' row descriptions: a flat table, a nested one, one with a time column."""

    class Row(tables.IsDescription):
        i = tables.Int32Col(pos=0)
        x = tables.Float64Col(shape=(2,), pos=1)
        s = tables.StringCol(8, pos=2)
        b = tables.BoolCol(pos=3)
        c = tables.ComplexCol(16, pos=4)

    class Nested(tables.IsDescription):
        i = tables.Int64Col(pos=0)

        class inner(tables.IsDescription):  # the member's name
            u = tables.UInt16Col(pos=0)
            f = tables.Float32Col(pos=1)

            class deeper(tables.IsDescription):
                k = tables.Int8Col(pos=0)

    class Timed(tables.IsDescription):
        i = tables.Int32Col(pos=0)
        when = tables.Time64Col(pos=1)

    return Row, Nested, Timed


def _write_pytables(path: Path) -> None:
    tables = pytest.importorskip("tables")
    Row, Nested, Timed = _descriptions(tables)
    with tables.open_file(path, "w", title="written by PyTables") as f:
        f.create_table("/", "table_le", Row, "little-endian table", byteorder="little").append(
            _rows()
        )
        f.create_table("/", "table_be", Row, "big-endian table", byteorder="big").append(_rows())
        nested = f.create_table("/", "table_nested", Nested, byteorder="big")
        row = nested.row
        for k in range(4):
            row["i"], row["inner/u"], row["inner/f"], row["inner/deeper/k"] = k, 10 * k, k / 4, -k
            row.append()
        timed = f.create_table("/", "table_time", Timed)
        timed.append([(k, 1.7e9 + k) for k in range(3)])
        f.create_array("/", "array_be", np.arange(12, dtype=">i8").reshape(3, 4), "big")
        f.create_array("/", "bools", np.array([True, False, True]))
        f.create_array("/", "strings", np.array([b"ab", b"cde", b""]))
        earray = f.create_earray("/", "earray", tables.Float32Atom(), (0, 3))
        earray.append(np.arange(12, dtype="f4").reshape(4, 3))
        data = np.arange(400.0).reshape(20, 20)
        for name, lib in [
            ("zlib", "zlib"),
            ("blosc", "blosc:lz4"),
            ("blosc2", "blosc2:zstd"),
            ("bzip2", "bzip2"),
        ]:
            filters = tables.Filters(complevel=5, complib=lib, shuffle=True)
            f.create_carray("/", f"carray_{name}", obj=data, filters=filters, chunkshape=(5, 20))
        enum = tables.EnumAtom(["red", "green", "blue"], "red", base="uint8")
        f.create_earray("/", "enum", enum, (0,)).append(np.array([0, 2, 1, 1], "u1"))
        vlarray = f.create_vlarray("/", "vlarray", tables.Int32Atom())
        vlarray.append([1, 2, 3])
        vlarray.append([4])
        f.create_vlarray("/", "vlstrings", tables.VLStringAtom()).append(b"hello")
        group = f.create_group("/", "group", "a group")
        f.create_array(group, "inner", np.arange(5, dtype="i2"))


def _write_pandas(path: Path) -> None:
    pytest.importorskip("tables")  # pandas' HDFStore writes through PyTables
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {"a": np.arange(5), "b": np.linspace(0, 1, 5), "s": list("vwxyz")},
        index=pd.Index(np.arange(10, 15)),
    )
    with pd.HDFStore(path, "w") as store, warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*track_times")  # pandas 3 changes its default
        store.put("fixed", frame, format="fixed")
        store.put("table", frame, format="table", index=False)
        store.put("series", pd.Series(np.arange(3.0)), format="fixed")


def _write_h5netcdf(path: Path) -> None:
    h5netcdf = pytest.importorskip("h5netcdf")
    with h5netcdf.File(path, "w") as f:
        f.dimensions = {"x": 3, "t": None}
        x = f.create_variable("x", ("x",), float, data=np.arange(3.0))
        x.attrs["units"] = "m"
        temp = f.create_variable("temp", ("t", "x"), "f4", compression="gzip", chunks=(1, 3))
        f.resize_dimension("t", 2)
        temp[...] = np.arange(6, dtype="f4").reshape(2, 3)
        names = np.array(["a", "bb", "ccc"], object)
        f.create_variable("name", ("x",), h5py.string_dtype(), data=names)
        cloud_t = f.create_enumtype(np.uint8, "cloud_t", {"clear": 0, "cloudy": 1})
        with warnings.catch_warnings():  # its default fill value is one of the enum's
            warnings.simplefilter("ignore", UserWarning)
            f.create_variable("cloud", ("x",), cloud_t, data=np.array([0, 1, 1], "u1"))
        pair = np.dtype([("a", "<i4"), ("b", ">f8")])
        pair_t = f.create_cmptype(pair, "pair_t")
        f.create_variable(
            "pair", ("x",), pair_t, data=np.array([(1, 0.5), (2, 1.5), (3, 2.5)], pair)
        )
        f.create_group("sub").create_variable("y", ("x",), "i2", data=np.array([1, 2, 3], "i2"))


def _dataset(f: h5py.File, name: str, tid: h5t.TypeID, shape: tuple[int, ...], dcpl=None):
    space = h5s.create_simple(shape) if shape else h5s.create(h5s.SCALAR)
    return h5d.create(f.id, name.encode(), tid, space, dcpl=dcpl)


def _quad(values: list[float]) -> bytes:
    """IEEE binary128 little-endian bytes of values exact in float64."""
    out = b""
    for v in values:
        if v == 0:
            out += bytes(16)
            continue
        m, e = np.frexp(abs(v))  # v = m * 2**e, 0.5 <= m < 1
        frac = int((m * 2 - 1) * (1 << 112))
        bits = (int(v < 0) << 127) | ((int(e) - 1 + 16383) << 112) | frac
        out += bits.to_bytes(16, "little")
    return out


def _write_lowlevel(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["ok"] = np.arange(5.0)
        be = np.dtype([("a", ">i4"), ("b", ">f8"), ("c", "S3")])
        f["compound_be"] = np.array([(1, 2.5, b"x"), (-3, 4.25, b"yz")], be)
        nested = np.dtype([("a", "<i4"), ("n", [("x", ">f4"), ("y", "<i2", (2,))])])
        f["compound_nested"] = np.array([(1, (0.5, [1, 2])), (2, (1.5, [3, 4]))], nested)
        element = f.create_dataset("array_element", (5, 4), np.dtype(("<f8", (3,))))
        element[...] = np.arange(60.0).reshape(5, 4, 3)
        pair = np.dtype([("i", ">i2"), ("f", ">f4")])
        both = f.create_dataset("array_element_be_compound", (3,), np.dtype((pair, (2,))))
        both[...] = np.array([[(k, k / 2), (-k, k * 2)] for k in range(3)], pair)
        colour = h5py.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": 2}, basetype="i1")
        f.create_dataset("enum", data=np.array([2, 0, 1], "i1"), dtype=colour)
        f["bool"] = np.array([True, False, True])
        f["object_ref"] = np.array([f["ok"].ref, f["bool"].ref], h5py.ref_dtype)
        region = f.create_dataset("region_ref", (1,), h5py.regionref_dtype)
        region[0] = f["ok"].regionref[1:3]
        vlen = f.create_dataset("vlen_float", (2,), h5py.vlen_dtype("f8"))
        vlen[0], vlen[1] = np.array([1.0, 2.0]), np.array([3.0])
        refs = f.create_dataset("compound_of_refs", (1,), np.dtype([("ref", h5py.ref_dtype)]))
        refs[0] = (f["ok"].ref,)
        _dataset(f, "time", h5t.UNIX_D64LE, (3,))
        quad = h5t.IEEE_F64LE.copy()
        quad.set_size(16)
        quad.set_precision(128)
        quad.set_fields(127, 112, 15, 0, 112)
        quad.set_ebias(16383)
        quad_id = _dataset(f, "quad", quad, (3,))
        quad_id.write(h5s.ALL, h5s.ALL, np.frombuffer(_quad([1.0, -2.5, 0.0]), "V16"), quad)
        opaque = h5t.create(h5t.OPAQUE, 4)
        opaque.set_tag(b"raw bytes")
        _dataset(f, "opaque", opaque, (2,))
        _dataset(f, "array_of_opaque", h5t.array_create(opaque, (2,)), (2,))
        # A filter HDF5 does not have (LZO, 305): set optional (HDF5 refuses to create a
        # dataset with a missing mandatory filter), then chunks written as if it ran.
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_chunk((4,))
        dcpl.set_filter(305, h5z.FLAG_OPTIONAL, ())
        lzo = _dataset(f, "lzo", h5t.STD_I32LE, (8,), dcpl)
        lzo.write_direct_chunk((0,), zlib.compress(np.arange(4, dtype="<i4").tobytes()), 0)
        lzo.write_direct_chunk((4,), zlib.compress(np.arange(4, 8, dtype="<i4").tobytes()), 0)


WRITERS = {
    "pytables.h5": _write_pytables,
    "pandas.h5": _write_pandas,
    "h5netcdf.nc": _write_h5netcdf,
    "lowlevel.h5": _write_lowlevel,
}


class _Files:
    """The generated files by name, each written when a test first asks for it: a test
    of one file is skipped only when the package writing that file is missing."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.paths: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self.paths:
            WRITERS[name](self.folder / name)  # skips the test if its writer is missing
            self.paths[name] = self.folder / name
        return self.paths[name]


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> _Files:
    return _Files(tmp_path_factory.mktemp("foreign"))


# --- reading them ----------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _open(path: Path, group: str) -> tuple[xr.Dataset, dict[str, str]]:
    """The group opened as stored (no CF decoding), and the warnings opening gave (each
    with the file it points at)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_dataset(path, engine="lazyh5", group=group or None, decode_cf=False)
    return ds, {str(w.message): w.filename for w in caught}


def _reference(path: Path, dataset: str) -> np.ndarray:
    """What h5py reads (variable-length strings decoded as h5py's ``asstr``; fixed-length
    ones bytes, as h5py and h5netcdf give them), compounds in native order."""
    with h5py.File(path, "r") as f:
        dset = f[dataset]
        info = h5py.check_string_dtype(dset.dtype)
        if info is not None and info.length is None:
            return np.asarray(dset.asstr()[()], dtype=object)
        values = dset[()]
    if values.dtype.names is not None:
        values = values.astype(values.dtype.newbyteorder("="))
    return values


def _assert_equal_fields(got: np.ndarray, want: np.ndarray, label: str) -> None:
    if want.dtype.names is None:
        np.testing.assert_array_equal(got, want, err_msg=label)
        assert got.shape == want.shape, label
        return
    assert got.dtype.names == want.dtype.names, label
    for field in want.dtype.names:
        _assert_equal_fields(got[field], want[field], f"{label}, field {field!r}")


def _expected_variables(file: str, group: str) -> set[str]:
    """Names of the variables a group of ``file`` should open with."""
    names = set()
    for path in DATASETS[file]:
        parent, _, name = path.rpartition("/")
        outcome = OUTCOMES.get((file, path), (READ,))
        if parent == group and outcome[0] in (READ, "left out", "filter"):
            names.add(name)
    return names


@pytest.mark.parametrize(("file", "dataset"), CASES, ids=[f"{f}:{d}" for f, d in CASES])
def test_dataset(foreign, file, dataset, request):
    if (file, dataset) in NEEDS_PLUGIN:
        pytest.importorskip("hdf5plugin")
    path = foreign[file]
    before = _sha256(path)
    group, _, name = dataset.rpartition("/")
    outcome = OUTCOMES.get((file, dataset), (READ,))
    ds, said = _open(path, group)
    request.addfinalizer(ds.close)  # closed even if an assertion fails
    about = [w for w in said if f"'{dataset}'" in w]
    # The rest of the group opens, whatever this dataset is (the only other variables
    # allowed are index coordinates of dimensions).
    expected = _expected_variables(file, group)
    assert expected <= set(ds.variables), expected - set(ds.variables)
    assert set(ds.variables) - expected <= set(ds.dims)

    if outcome[0] == READ:
        assert not about, about
        got = ds[name].values
        assert got.dtype == got.dtype.newbyteorder("=") or got.dtype.names is None
        _assert_equal_fields(got, _reference(path, dataset), f"{file}:{dataset}")
        if got.dtype.kind in "iufb":  # a reduction computes on the declared shape
            assert float(ds[name].mean()) == pytest.approx(float(np.mean(got)))
    elif outcome[0] == "skip":
        (warning,) = about
        assert str(path) in warning and outcome[1] in warning, warning
        assert said[warning] == __file__  # pointing at the line that opened the file
        assert name not in ds.variables
    elif outcome[0] == "left out":
        member, label = outcome[1:]
        (warning,) = about
        assert str(path) in warning and f"'{member}'" in warning and label in warning
        got = ds[name].values
        assert member not in got.dtype.names
        with pytest.importorskip("tables").open_file(path) as f:  # it reads every member
            want = f.get_node(dataset).read()
        for field in got.dtype.names:
            np.testing.assert_array_equal(got[field], want[field])
    elif outcome[0] == "filter":
        code, filter_name = outcome[1:]
        assert not about, about
        with pytest.raises(MissingFilterError) as raised:
            ds[name].load()
        message = str(raised.value)
        for part in (str(path), dataset, str(code), filter_name, "PyTables"):
            assert part in message, message
        assert "damaged" not in message
    else:  # a netCDF dimension without coordinate values: a dimension, no variable
        assert name in ds.dims
        # no values read from the file (a position index lazyh5 adds has no encoding)
        assert name not in ds.variables or not ds[name].encoding
    ds.close()
    assert _sha256(path) == before, f"{file} changed by reading {dataset}"


@pytest.mark.parametrize("file", list(WRITERS))
def test_every_dataset_written_is_tested(foreign, file):
    with h5py.File(foreign[file], "r") as f:
        found = _dataset_paths(f)
    assert found == sorted(DATASETS[file]), file


def _dataset_paths(f: h5py.File) -> list[str]:
    found: list[str] = []
    f.visititems(lambda n, o: found.append(f"/{n}") if isinstance(o, h5py.Dataset) else None)
    return sorted(found)


@pytest.mark.parametrize("file", list(WRITERS))
def test_whole_files_open_through_every_reader(foreign, file):
    """Every group of the file opens (decoded) with open_datatree and its data loads."""
    if any(f == file for f, _ in NEEDS_PLUGIN):
        pytest.importorskip("hdf5plugin")
    path = foreign[file]
    before = _sha256(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        tree = lazyh5.open_datatree(path)
        for node in tree.subtree:
            for name, var in node.dataset.data_vars.items():
                if (file, f"{node.path.rstrip('/')}/{name}") not in OUTCOMES:
                    var.load()
        tree.close()
    assert _sha256(path) == before, file


def test_reliability_page_counts_the_datasets():
    """docs/reliability.md quotes how many datasets give each outcome (as on x86, where
    numpy cannot hold IEEE quad floats and the quad dataset is skipped)."""
    kinds = Counter(OUTCOMES.get(case, (READ,))[0] for case in CASES)
    if ("lowlevel.h5", "/quad") not in OUTCOMES:  # long double is IEEE quad here
        kinds[READ], kinds["skip"] = kinds[READ] - 1, kinds["skip"] + 1
    page = (Path(__file__).parent.parent / "docs" / "reliability.md").read_text()
    page = " ".join(page.split())  # sentences wrap across lines
    assert f"each of their {len(CASES)} datasets: {kinds[READ]} read equal" in page
    assert f"{kinds['skip']} are skipped with a warning" in page
    assert kinds["left out"] == kinds["filter"] == kinds["dimension"] == 1  # "one" each


def test_pytables_attribute_conventions(foreign):
    path = foreign["pytables.h5"]
    ds, _ = _open(path, "")
    try:
        with h5py.File(path, "r") as f:
            stored = dict(f["array_be"].attrs)
        assert stored["CLASS"] == b"ARRAY"
        # TITLE and VERSION are kept as text; CLASS is structural, as for dimension scales.
        assert ds["array_be"].attrs["TITLE"] == "big"
        assert ds["array_be"].attrs["VERSION"] == stored["VERSION"].decode()
        assert "CLASS" not in ds["array_be"].attrs
        assert ds.attrs["TITLE"] == "written by PyTables"
    finally:
        ds.close()


def test_array_element_type_is_a_trailing_dimension(tmp_path):
    path = tmp_path / "element.h5"
    values = np.arange(60.0).reshape(5, 4, 3)
    with h5py.File(path, "w") as f:
        f.create_dataset("a", (5, 4), np.dtype(("<f8", (3,))))[...] = values
    with lazyh5.open_dataset(path) as ds:
        assert ds["a"].dims == ("sample", "a_dim_1", "a_dim_2")
        assert ds["a"].shape == (5, 4, 3) and ds["a"].dtype == np.float64
        assert ds["a"].encoding["dtype"] == np.float64  # what a writer should store
        assert ds["a"].encoding["original_shape"] == (5, 4, 3)
        assert float(ds["a"].mean()) == values.mean()
        np.testing.assert_array_equal(ds["a"].load().values, values)
        for key in [
            {"sample": 2},
            {"a_dim_2": 1},
            {"a_dim_2": [2, 0]},
            {"sample": slice(1, 4), "a_dim_1": [0, 3], "a_dim_2": 2},
            {"sample": [4, 0], "a_dim_2": slice(None, None, -1)},
        ]:
            want = xr.DataArray(values, dims=ds["a"].dims).isel(key).values
            np.testing.assert_array_equal(ds["a"].isel(key).values, want, err_msg=str(key))


def test_big_endian_compound_computes_in_native_order(tmp_path):
    path = tmp_path / "be.h5"
    be = np.dtype([("a", ">i4"), ("b", ">f8"), ("n", [("c", ">u2"), ("d", "<f4")])])
    data = np.array([(k, k / 3, (k * 7, -k)) for k in range(10)], be)
    with h5py.File(path, "w") as f:
        f.create_dataset("rec", data=data, chunks=(4,), compression="gzip")
    with lazyh5.open_dataset(path) as ds:
        assert ds["rec"].dtype == be.newbyteorder("=")
        got = ds["rec"].compute().values
        _assert_equal_fields(got, data.astype(be.newbyteorder("=")), "rec")
        _assert_equal_fields(ds["rec"][[7, 2]].values, got[[7, 2]], "rec[[7, 2]]")


@pytest.mark.filterwarnings("ignore:skipping:UserWarning")
def test_enum_keeps_its_mapping_in_encoding(foreign):
    with lazyh5.open_dataset(foreign["lowlevel.h5"]) as ds:
        assert ds["enum"].dtype == np.int8
        assert ds["enum"].encoding["dtype"].metadata["enum"] == {"RED": 0, "GREEN": 1, "BLUE": 2}
        assert ds["bool"].dtype == bool


def test_blosc_without_hdf5plugin_names_the_package(foreign):
    """A fresh interpreter where hdf5plugin cannot be imported: Blosc data cannot decode."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["hdf5plugin"] = None  # import fails, as if not installed
        import lazyh5
        from lazyh5.errors import MissingFilterError
        ds = lazyh5.open_dataset({str(foreign["pytables.h5"])!r})
        ds["carray_zlib"].load()
        try:
            ds["carray_blosc"].load()
        except MissingFilterError as err:
            print(err)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    message = out.stdout
    for part in ("pytables.h5", "/carray_blosc", "32001", "'blosc'", "pip install hdf5plugin"):
        assert part in message, message


def test_missing_filter_error_is_an_oserror_and_a_lazyh5_error():
    assert issubclass(MissingFilterError, lazyh5.Lazyh5Error)
    assert issubclass(MissingFilterError, OSError)  # what h5py raised for it before


def test_hdf5matrix_names_the_missing_filter(foreign):
    from lazyh5 import HDF5Matrix

    with pytest.raises(MissingFilterError, match="filter 305 \\('lzo'\\)"):
        HDF5Matrix(foreign["lowlevel.h5"], "lzo")


@pytest.mark.filterwarnings("ignore:skipping:UserWarning")
def test_loader_and_cli_show_name_the_missing_filter(foreign, tmp_path):
    from lazyh5.cli.main import _parser

    path = foreign["lowlevel.h5"]
    before = _sha256(path)
    words = re.escape(f"cannot read '/lzo' in '{path}'") + r".*filter 305 \('lzo'\)"
    with lazyh5.open_dataset(path) as ds:
        loader = lazyh5.BatchLoader(ds, "lzo", batch_size=4, dim="lzo_dim_0")
        with pytest.raises(MissingFilterError, match=words):
            list(loader)
    args = _parser().parse_args(["show", str(path), "lzo", "-o", str(tmp_path / "lzo.png")])
    with pytest.raises(MissingFilterError, match=words):
        args.run(args)
    assert not (tmp_path / "lzo.png").exists()
    assert _sha256(path) == before


def test_cli_info_lists_types_it_cannot_read(foreign):
    from lazyh5.cli.info import describe

    before = _sha256(foreign["lowlevel.h5"])
    datasets = describe(foreign["lowlevel.h5"])["groups"]["/"]["datasets"]
    assert datasets["time"]["dtype"] == "H5T_TIME (64-bit time) (no numpy dtype)"
    assert datasets["time"]["logical_bytes"] == 3 * 8
    tables_info = describe(foreign["pytables.h5"])["groups"]["/"]["datasets"]
    assert tables_info["table_time"]["dtype"] == "compound of 2 members (no numpy dtype)"
    assert _sha256(foreign["lowlevel.h5"]) == before


def test_array_element_type_feeds_and_refuses_writes(tmp_path):
    path = tmp_path / "element.h5"
    values = np.arange(72.0).reshape(6, 4, 3)
    with h5py.File(path, "w") as f:
        f.create_dataset("a", (6, 4), np.dtype(("<f8", (3,))), chunks=(2, 4))[...] = values
        f["label"] = np.arange(6)
    ds = lazyh5.open_dataset(path)
    loader = lazyh5.BatchLoader(ds, x="a", y="label", batch_size=4, shuffle=True, seed=0)
    for x, y in loader:
        np.testing.assert_array_equal(x, values[y])
    ds.close()
    before = _sha256(path)
    ds = lazyh5.open_dataset(path, mode="r+")
    with pytest.raises(lazyh5.errors.UnsupportedDtypeError, match="array element type"):
        ds["a"].h5[1:2] = np.ones((1, 4, 3))
    ds.close()
    assert _sha256(path) == before
