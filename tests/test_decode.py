"""Reads through lazyh5.backend.read (row copies, parallel decoding) give exactly what
h5py gives."""

from __future__ import annotations

import threading

import h5py
import hdf5plugin
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lazyh5
from lazyh5.backend import decode, read, threads
from lazyh5.backend.rows import row_copy

SHAPE = (37, 11, 3)
CHUNKS = (8, 4, 3)

# name -> (create_dataset kwargs, whether the parallel path decodes it itself)
PIPELINES = {
    "none": ({}, True),
    "gzip+shuffle": ({"compression": "gzip", "shuffle": True}, True),
    "gzip1": ({"compression": "gzip", "compression_opts": 1}, True),
    "gzip9+shuffle": ({"compression": "gzip", "compression_opts": 9, "shuffle": True}, True),
    "shuffle": ({"shuffle": True}, True),
    "lzf": ({"compression": "lzf"}, True),  # imagecodecs (the test extra has it)
    "fletcher32": ({"compression": "gzip", "fletcher32": True}, False),
    "scaleoffset": ({"scaleoffset": 0}, False),
    "blosc-lz4": (dict(hdf5plugin.Blosc("lz4", 5, hdf5plugin.Blosc.SHUFFLE)), True),
    "blosc-zstd-bit": (dict(hdf5plugin.Blosc("zstd", 3, hdf5plugin.Blosc.BITSHUFFLE)), True),
    "zstd": (dict(hdf5plugin.Zstd(3)), True),
    "lz4": (dict(hdf5plugin.LZ4(nbytes=64)), True),  # small blocks: several per chunk
    "bitshuffle-lz4": (dict(hdf5plugin.Bitshuffle(cname="lz4")), False),
}
DTYPES = ["<f4", ">f8", "<i2", ">i8", "u1", "?", "<c8"]


def _data(dtype: str, rng: np.random.Generator) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(SHAPE) > 0.5
    if dt.kind == "c":
        return (rng.integers(0, 9, SHAPE) + 1j * rng.integers(0, 9, SHAPE)).astype(dt)
    return rng.integers(0, 100, SHAPE).astype(dt)  # compressible, exact in every dtype


def _fill(dtype: str):
    # HDF5 converts numeric fill values only; bool/complex keep the default (zero).
    return None if np.dtype(dtype).kind in "bc" else 1


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory):
    """One dataset per (pipeline, dtype), some chunks left unallocated (fill value)."""
    path = tmp_path_factory.mktemp("decode") / "pipelines.h5"
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        for name, (kwargs, _) in PIPELINES.items():
            for dtype in DTYPES:
                if name == "scaleoffset" and np.dtype(dtype).kind in "bc":
                    continue  # scaleoffset takes only integers and floats
                dset = f.create_dataset(
                    f"{name}/{dtype}", SHAPE, dtype, chunks=CHUNKS, fillvalue=_fill(dtype), **kwargs
                )
                data = _data(dtype, rng)
                dset[:24] = data[:24]  # rows 24.. stay unallocated → fill value
                dset[32:] = data[32:]  # the partial edge chunk (rows 32..36) is written
    return path


def _keys() -> st.SearchStrategy:
    """Slices (any bounds, steps), integers, and one sorted index array on some axis."""

    def axis(n):
        bounds = st.tuples(st.integers(-n - 2, n + 2), st.integers(-n - 2, n + 2))
        return st.one_of(
            bounds.map(lambda b: slice(*b)),
            st.tuples(bounds, st.integers(1, 5)).map(lambda t: slice(*t[0], t[1])),
            st.integers(-n, n - 1),
        )

    base = st.tuples(*(axis(n) for n in SHAPE))
    arr_axis = st.integers(0, len(SHAPE) - 1)
    arr = st.lists(st.integers(0, SHAPE[0] - 1), min_size=1, max_size=12, unique=True)
    return st.one_of(
        base,
        st.tuples(base, arr_axis, arr).map(
            lambda t: tuple(
                np.unique([v % SHAPE[i] for v in t[2]]) if i == t[1] else k
                for i, k in enumerate(t[0])
            )
        ),
    )


def _decoded(dset: h5py.Dataset, key: tuple):
    """``dset[key]`` by the parallel decoding strategy, whether or not h5py is faster."""
    key = tuple(key) + (slice(None),) * (dset.ndim - len(key))
    return read.read_chunks(dset, decode.format_of(dset), dset.shape, key).run()


@pytest.mark.parametrize("name", list(PIPELINES))
def test_plan_decodes_supported_and_falls_back_otherwise(pipeline_file, name):
    with h5py.File(pipeline_file, "r") as f:
        for dtype in f[name]:
            fmt = decode.format_of(f[name][dtype])
            assert (fmt is not None) == PIPELINES[name][1], (name, dtype)


@pytest.mark.parametrize("name", [n for n, (_, ok) in PIPELINES.items() if ok])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=_keys(), dtype=st.sampled_from(DTYPES))
def test_parallel_path_is_byte_identical_to_h5py(pipeline_file, name, key, dtype):
    with h5py.File(pipeline_file, "r") as f:
        dset = f[name][dtype]
        expected = np.asarray(dset[key])
        got = _decoded(dset, key)
    assert got is not None
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("inflate", [decode._gzip, decode._deflate], ids=["zlib", "libdeflate"])
def test_both_gzip_decoders_give_h5py_bytes_and_refuse_bad_streams(
    pipeline_file, inflate, monkeypatch
):
    """libdeflate (used when imagecodecs is installed) and zlib decode every gzip chunk
    as h5py does, and refuse what h5py would not read as one chunk's bytes."""
    import zlib

    monkeypatch.setitem(decode.DECODERS, decode.GZIP, inflate)
    with h5py.File(pipeline_file, "r") as f:
        for name in ("gzip1", "gzip+shuffle", "gzip9+shuffle"):
            for dtype in f[name]:
                dset = f[name][dtype]
                fmt = decode.format_of(dset)
                for i in range(dset.id.get_num_chunks()):
                    info = dset.id.get_chunk_info(i)
                    mask, raw = dset.id.read_direct_chunk(info.chunk_offset)
                    decoded = decode.decode_chunk(fmt, mask, raw)
                    box = tuple(
                        slice(o, o + c) for o, c in zip(info.chunk_offset, fmt.chunks, strict=True)
                    )
                    want = dset[box]
                    got = decoded[tuple(slice(0, n) for n in want.shape)]
                    assert got.tobytes() == want.tobytes(), (name, dtype, i)
    fmt = decode.ChunkFormat((64, 4), np.dtype("f4"), (decode.GZIP,))
    values = np.arange(256, dtype="f4").tobytes()
    good = zlib.compress(values)
    assert inflate(good, 4, len(values)) == values
    bad = {
        "longer": zlib.compress(values + b"\0"),
        "shorter": zlib.compress(values[:-4]),
        "truncated": good[:-9],
        "checksum": good[:-1] + bytes([good[-1] ^ 1]),
        "garbage": b"not a zlib stream",
    }
    for stream in bad.values():
        with pytest.raises(decode.Undecodable):
            decode.decode_chunk(fmt, 0, stream)


@pytest.mark.parametrize("name", list(PIPELINES))
def test_every_pipeline_through_open_dataset(pipeline_file, name):
    """The backend (parallel path or fallback) equals h5py, for every dtype, whole and sliced."""
    with h5py.File(pipeline_file, "r") as f:
        expected = {dtype: f[name][dtype][...] for dtype in f[name]}
    ds = lazyh5.open_dataset(pipeline_file, group=name, chunks={})
    for dtype, want in expected.items():
        var = ds[dtype]
        # xarray turns big-endian data native; values and kind must still match exactly.
        native = want.dtype.newbyteorder("=")
        assert var.dtype == native
        assert var.values.tobytes() == want.astype(native).tobytes()
        part = var.isel({var.dims[0]: [1, 5, 30, 36], var.dims[1]: slice(2, 9)}).values
        assert part.tobytes() == want[[1, 5, 30, 36], 2:9].astype(native).tobytes()
    ds.close()


def test_decoding_runs_outside_the_lock(pipeline_file, monkeypatch):
    lock = threading.Lock()
    held = []
    original = decode.decode_chunk

    def spy(fmt, mask, raw):
        held.append(lock.locked())
        return original(fmt, mask, raw)

    monkeypatch.setattr(decode, "decode_chunk", spy)
    with h5py.File(pipeline_file, "r") as f:
        dset = f["gzip+shuffle"]["<f4"]
        with lock:
            chunks = read.read_chunks(dset, decode.format_of(dset), dset.shape, (slice(None),) * 3)
        got = chunks.run()
        np.testing.assert_array_equal(got, dset[...])
    assert held and not any(held)


def test_chunks_skipped_by_the_filter_mask(tmp_path):
    """A chunk written with a filter skipped (mask bit set) still decodes."""
    import zlib

    path = tmp_path / "mask.h5"
    data = np.arange(64, dtype="<f4").reshape(8, 8)
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("x", (16, 8), "<f4", chunks=(8, 8), compression="gzip")
        dset.id.write_direct_chunk((0, 0), data.tobytes(), filter_mask=1)  # gzip skipped
        dset.id.write_direct_chunk((8, 0), zlib.compress((data + 1).tobytes()), filter_mask=0)
    with h5py.File(path, "r") as f:
        got = _decoded(f["x"], (slice(None), slice(None)))
        np.testing.assert_array_equal(got, f["x"][...])
    np.testing.assert_array_equal(got[:8], data)


def test_lzf_chunks_stored_raw_or_compressed_decode_like_h5py(tmp_path):
    """h5py's LZF filter stores a chunk that does not shrink as is (mask bit set):
    both kinds decode through imagecodecs, in parallel, exactly as h5py reads them."""
    rng = np.random.default_rng(5)
    data = rng.random((1024, 96)).astype("<f4")  # random floats: LZF gives up
    data[512:] = np.round(data[512:] * 4)  # a few values: LZF compresses these
    path = tmp_path / "lzf.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(256, 96), compression="lzf")
    with h5py.File(path, "r") as f:
        masks = []
        f["x"].id.chunk_iter(lambda info: masks.append(info.filter_mask))
        assert sorted(masks) == [0, 0, 1, 1]
        assert read.worthwhile(decode.format_of(f["x"]))
        got = _decoded(f["x"], (slice(3, 1000), slice(None)))
        assert got.tobytes() == f["x"][3:1000].tobytes() == data[3:1000].tobytes()
        # rows whose chunks are all stored as is are copied straight from the file
        whole = (slice(None),)
        assert row_copy(f["x"], f["x"].shape, (slice(3, 500), *whole)) is not None
        assert row_copy(f["x"], f["x"].shape, (slice(3, 600), *whole)) is None
        got = _decoded(f["x"], (slice(3, 500), slice(None)))
        assert got.tobytes() == data[3:500].tobytes()


def test_writes_through_r_plus_are_seen_before_flush(tmp_path):
    path = tmp_path / "rw.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", (20, 5), "f4", chunks=(4, 5), compression="gzip")
    with h5py.File(path, "r+") as f:
        f["x"][3:9] = 7.0  # still in HDF5's chunk cache
        got = _decoded(f["x"], (slice(None), slice(None)))
        np.testing.assert_array_equal(got, f["x"][...])
    assert got[3:9].min() == 7.0


def test_big_endian_and_parallel_pool_over_many_chunks(tmp_path):
    path = tmp_path / "big.h5"
    data = np.random.default_rng(3).integers(0, 1000, (4096, 64)).astype(">f8")
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(256, 64), compression="gzip", shuffle=True)
    with h5py.File(path, "r") as f:  # 16 chunks, 2 MiB: decoded in the thread pool
        got = _decoded(f["x"], (slice(None), slice(3, 60)))
    assert got.dtype == data.dtype and got.tobytes() == data[:, 3:60].tobytes()
    ds = lazyh5.open_dataset(path)
    np.testing.assert_array_equal(ds["x"].values, data)
    ds.close()


def test_h5py_keeps_what_it_reads_faster(tmp_path):
    """Small compressed chunks and unfiltered chunks not made of whole rows go to h5py;
    big compressed chunks decode in parallel; whole-row unfiltered chunks are copied
    straight from the file."""
    path = tmp_path / "policy.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("plain", (4096, 64), "f4", chunks=(256, 64), data=np.ones((4096, 64)))
        f.create_dataset("cols", (4096, 64), "f4", chunks=(256, 16))
        f.create_dataset("tiny", (4096, 64), "f4", chunks=(16, 16), compression="gzip")
        f.create_dataset("big", (4096, 64), "f4", chunks=(256, 64), compression="gzip")
    with h5py.File(path, "r") as f:
        formats = [decode.format_of(f[n]) for n in ("plain", "tiny", "big")]
        assert [read.worthwhile(p) for p in formats] == [False, False, True]
        key = (slice(None), slice(None))
        assert isinstance(read.prepare(f["cols"], (4096, 64), key), read.ByH5py)
        big = read.prepare(f["big"], (4096, 64), key)  # not written: fill values
        assert not isinstance(big, read.ByH5py)
        np.testing.assert_array_equal(big.run(None), f["big"][:])
        got = read.read(lambda: f["plain"], threading.Lock(), (4096, 64), key)
        np.testing.assert_array_equal(got, f["plain"][:])


def _row_file(path, mode="w"):
    rng = np.random.default_rng(0)
    with h5py.File(path, mode) as f:
        d = f.create_dataset("x", (1000, 3, 5), "<i2", chunks=(64, 3, 5), fillvalue=-7)
        d[:300] = rng.integers(-999, 999, (300, 3, 5))
        d[700:] = rng.integers(-999, 999, (300, 3, 5))  # chunks over 300..700 unallocated
        f.create_dataset("be", data=np.arange(200, dtype=">f8").reshape(100, 2), chunks=(7, 2))


@pytest.mark.parametrize(
    "rows",
    [
        slice(None),
        slice(0, 1),
        slice(63, 65),
        slice(250, 760),
        slice(990, None),
        slice(5, 5),
        slice(-40, -3),
        0,
        333,
        -1,
        999,
    ],
)
def test_whole_row_chunks_copied_from_the_file_equal_h5py(tmp_path, rows):
    path = tmp_path / "rows.h5"
    _row_file(path)
    with h5py.File(path, "r") as f:
        for name in ("x", "be"):
            dset = f[name]
            full = (slice(None),) * (dset.ndim - 1)
            if isinstance(rows, int) and not -len(dset) <= rows < len(dset):
                continue
            strategy = read.prepare(dset, dset.shape, (rows, *full))
            assert isinstance(strategy, read.RowRead)
            got = strategy.run(None)
            want = dset[(rows, *full)]
            assert got is not None and got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


def test_files_open_for_writing_are_read_by_h5py(tmp_path):
    """HDF5's chunk cache may hold data not yet on disk: no copying behind its back."""
    path = tmp_path / "rows.h5"
    _row_file(path)
    with h5py.File(path, "r+") as f:
        f["x"][0] = 1234
        key = (slice(None), slice(None), slice(None))
        assert isinstance(read.prepare(f["x"], f["x"].shape, key), read.ByH5py)
    ds = lazyh5.open_dataset(path, mode="r+")
    ds["x"].h5[1] = 4321
    assert int(ds["x"][1, 0, 0]) == 4321 and int(ds["x"][0, 0, 0]) == 1234


def test_decode_threads_setting(monkeypatch):
    monkeypatch.setenv("LAZYH5_DECODE_THREADS", "3")
    assert threads.decode_threads() == 3
    monkeypatch.setenv("LAZYH5_DECODE_THREADS", "nonsense")
    assert threads.decode_threads() >= 1


@pytest.fixture(scope="module")
def big_chunk_file(tmp_path_factory):
    """Chunks of 64 KiB and more (the size the backend decodes itself), some unallocated."""
    path = tmp_path_factory.mktemp("decode") / "big.h5"
    data = np.random.default_rng(5).integers(0, 50, (300, 40, 30)).astype("<f4")
    with h5py.File(path, "w") as f:
        dset = f.create_dataset(
            "x", data.shape, "<f4", chunks=(64, 20, 15), compression="gzip", shuffle=True
        )
        dset.attrs["_FillValue"] = np.float32(-1)
        dset[:100] = data[:100]
        dset[192:, :20] = data[192:, :20]  # the rest stays unallocated: fill value
    return path


@settings(max_examples=30, deadline=None)
@given(
    rows=st.one_of(
        st.tuples(st.integers(0, 299), st.integers(1, 300), st.integers(1, 7)).map(
            lambda t: slice(t[0], t[0] + t[1], t[2])
        ),
        st.lists(st.integers(0, 299), min_size=1, max_size=20),
    ),
    cols=st.tuples(st.integers(0, 39), st.integers(0, 40)).map(lambda t: slice(*sorted(t))),
    last=st.integers(0, 29),
)
def test_backend_reads_through_the_parallel_path_like_h5py(big_chunk_file, rows, cols, last):
    with h5py.File(big_chunk_file, "r") as f:
        assert read.worthwhile(decode.format_of(f["x"]))
        index = np.array(rows) if isinstance(rows, list) else rows
        expected = f["x"][...][index, cols, last]
    ds = lazyh5.open_dataset(big_chunk_file, chunks={}, mask_and_scale=False)
    var = ds["x"]
    got = var.isel({var.dims[0]: rows, var.dims[1]: cols, var.dims[2]: last}).values
    ds.close()
    assert got.tobytes() == expected.tobytes()


def test_compound_types_packed_decode_padded_fall_back(tmp_path):
    packed = np.dtype([("a", "<i4"), ("b", ">f8"), ("c", "S3")])
    padded = np.dtype({"names": ["a", "b"], "formats": ["u1", "<f4"], "offsets": [0, 4]})
    path = tmp_path / "compound.h5"
    with h5py.File(path, "w") as f:
        for name, dt in (("packed", packed), ("padded", padded)):
            values = np.zeros(300, dt)
            values["a"] = np.arange(300) % 7
            values["b"] = np.arange(300) / 3
            f.create_dataset(name, data=values, chunks=(64,), compression="gzip")
    with h5py.File(path, "r") as f:
        assert decode.format_of(f["padded"]) is None
        got = _decoded(f["packed"], (slice(10, 290, 3),))
        assert got.tobytes() == f["packed"][10:290:3].tobytes()


def _overlong_chunk(f: h5py.File) -> None:
    """Dataset ``x``: 128 x 256 float32 in two gzip chunks, the second over-long (a bomb)."""
    import zlib

    dset = f.create_dataset("x", (128, 256), "f4", chunks=(64, 256), compression="gzip")
    dset[:64] = 1.0
    dset.id.write_direct_chunk((64, 0), zlib.compress(bytes(64 * 256 * 4 * 10)))


def test_damaged_chunks_are_left_to_h5py(tmp_path):
    """Garbage or over-long (bomb) chunks: no decode of ours, h5py's own error instead."""
    path = tmp_path / "damaged.h5"
    with h5py.File(path, "w") as f:
        _overlong_chunk(f)
        f.create_dataset("y", (128, 256), "f4", chunks=(64, 256), compression="gzip")
        f["y"].id.write_direct_chunk((0, 0), b"not a zlib stream at all")
    key = (slice(None), slice(None))
    with h5py.File(path, "r") as f:
        for name in ("x", "y"):
            with pytest.raises(decode.Undecodable):
                read.prepare(f[name], (128, 256), key).run(None)
        np.testing.assert_array_equal(_decoded(f["x"], (slice(0, 64), slice(None))), 1.0)
        x_by_h5py = f["x"][...]  # HDF5 keeps what fits of the over-long chunk
        with pytest.raises(OSError):
            f["y"][...]
    ds = lazyh5.open_dataset(path, chunks={})
    np.testing.assert_array_equal(ds["x"].values, x_by_h5py)
    with pytest.raises(OSError):
        ds["y"].load()
    ds.close()


@pytest.mark.parametrize("scatter", [False, True])
def test_copies_of_small_chunks_grouped_into_tasks_equal_h5py(tmp_path, monkeypatch, scatter):
    """Runs of a few rows are copied several to a task; every row lands where it should."""
    from lazyh5.backend import rows as file_rows

    path = tmp_path / "small.h5"
    data = np.arange(500 * 6, dtype="<i4").reshape(500, 6)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(8, 6))  # 192-byte chunks
    # 3 chunks per task, 21 chunks in rows 5..165: 7 tasks, the first and last partial
    monkeypatch.setattr(file_rows, "_TASK_BYTES", 3 * 8 * 6 * 4)
    monkeypatch.setattr(file_rows, "_RUN_BYTES", 8 * 6 * 4)  # a run per chunk
    with h5py.File(path, "r") as f:
        copy, _ = file_rows.row_copy(f["x"], f["x"].shape, (slice(5, 165), slice(None)))
    out = np.zeros((160, 6), "<i4")
    dst = np.random.default_rng(0).permutation(160) if scatter else None
    assert len(copy.copies) == 21 and len(copy.tasks(out, dst)) == 7
    copy.run(out, dst)  # the tasks, in the decode pool; closes the descriptor
    want = np.empty_like(out)
    if scatter:
        want[dst] = data[5:165]
    else:
        want[:] = data[5:165]
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize(
    "how, strategy",
    [
        ({"compression": "gzip", "chunks": (80, 256)}, "ChunkRead"),  # decoded here
        ({"chunks": (80, 256)}, "RowRead"),  # copied from the file
        ({"compression": "gzip", "chunks": (4, 4)}, "ByH5py"),  # small chunks
        ({"compression": "lzf", "chunks": (80, 256), "dtype": ">f4"}, "ChunkRead"),
    ],
    ids=["decoded", "copied", "small chunks", "big-endian"],
)
def test_read_places_each_selected_row_at_its_destination(tmp_path, how, strategy):
    """``read(..., out, rows=dst)``: selected row ``i`` lands in ``out[dst[i]]`` whichever
    strategy reads it, and no other row of ``out`` is touched."""
    how = dict(how)
    dtype = how.pop("dtype", "<f4")
    data = np.arange(400 * 256, dtype="f4").reshape(400, 256).astype(dtype)
    path = tmp_path / "placed.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, **how)
    dst = np.random.default_rng(1).permutation(300)[:150]
    out = np.full((300, 256), -1, dtype)
    key = (slice(90, 240), slice(None))
    with h5py.File(path, "r") as f:
        assert type(read.prepare(f["x"], (400, 256), key)).__name__ == strategy
        got = read.read(lambda: f["x"], threading.Lock(), (400, 256), key[:1], out, None, dst)
    assert got is out
    want = np.full((300, 256), -1, dtype)
    want[dst] = data[90:240]
    np.testing.assert_array_equal(out, want)


def test_read_with_rows_needs_an_output_and_slices(tmp_path):
    path = tmp_path / "placed.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros((10, 4)), chunks=(5, 4), compression="gzip")
    rows = np.arange(5)
    with h5py.File(path, "r") as f, pytest.raises(ValueError, match="rows needs an output"):
        read.read(lambda: f["x"], threading.Lock(), (10, 4), (slice(0, 5),), None, None, rows)
    out = np.zeros((5, 4))
    with h5py.File(path, "r") as f, pytest.raises(ValueError, match="a key of slices"):
        read.read(lambda: f["x"], threading.Lock(), (10, 4), (np.arange(5),), out, None, rows)


def test_rows_of_a_converted_type_are_placed_too(tmp_path):
    """A compound dataset HDF5 converts (a big-endian field) is read whole, then placed."""
    kind = np.dtype([("a", ">i4"), ("b", "<f8")])
    data = np.zeros(50, kind)
    data["a"], data["b"] = np.arange(50), np.arange(50) / 2
    path = tmp_path / "compound.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(10,), compression="gzip")
    from lazyh5.backend.view import find_array

    arr = find_array(lazyh5.open_dataset(path)["x"], "x")
    assert arr._read_dtype is not None  # read through HDF5's conversion
    out = np.zeros(60, arr.dtype)
    dst = np.arange(59, 9, -1)
    arr._getitem((slice(0, 50),), out, dst)
    assert out["a"][dst].tolist() == list(range(50)) and out["a"][:10].tolist() == [0] * 10
    np.testing.assert_array_equal(out["b"][dst], np.arange(50) / 2)


def test_rows_of_a_chunk_we_cannot_decode_are_placed_by_h5py(tmp_path):
    """An over-long chunk fails our decoder; h5py reads the selection, placed at ``rows``."""
    path = tmp_path / "long.h5"
    with h5py.File(path, "w") as f:
        _overlong_chunk(f)
    rows = np.arange(129, 1, -1)
    out = np.full((130, 256), -1.0, "f4")
    with h5py.File(path, "r") as f:
        want = f["x"][...]
        read.read(lambda: f["x"], threading.Lock(), (128, 256), (slice(0, 128),), out, None, rows)
    np.testing.assert_array_equal(out[rows], want)
    assert (out[:2] == -1).all()
