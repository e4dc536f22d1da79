"""The read side, pinned down by the mutants that survived the other tests: chunk
selection, dask chunks of a read and HDF5 chunks of new datasets, each codec against
h5py (hostile chunks included), and rows copied straight from the file.

For selections, xarray hands the backend normalised keys (no negative indices, only
1-D integer arrays), so these cases are checked on
:func:`lazyh5.backend.selection.axis_of` itself, whose docstring documents them; the
values it leads to are checked against numpy in tests/test_property_slicing.py.
"""

from __future__ import annotations

import gc
import math
import os
import struct
import threading
import tracemalloc
import zlib

import dask
import fsspec
import h5py
import hdf5plugin
import imagecodecs
import numcodecs.blosc
import numcodecs.lz4
import numcodecs.zstd
import numpy as np
import pytest

import lazyh5
from lazyh5 import BatchLoader
from lazyh5.backend import decode, read
from lazyh5.backend import rows as file_rows
from lazyh5.backend.chunking import chunk_memory, dask_chunks, row_bytes, row_chunks
from lazyh5.backend.ranges import RangeReader
from lazyh5.backend.selection import axis_of
from lazyh5.cli.info import describe
from tests._files import write_feed


def _pieces(axis):
    return [
        (ci, np.asarray(src).tolist(), np.asarray(dst).tolist()) for ci, src, dst in axis.pieces
    ]


@pytest.mark.parametrize(
    "key",
    [np.zeros((2, 2), int), np.array([1.0, 2.0]), np.array([True, False]), np.array(["a"])],
    ids=["2-d", "float", "bool", "str"],
)
def test_index_arrays_other_than_1d_integers_are_not_handled(key):
    assert axis_of(key, 10, 4) is None


def test_negative_indices_count_from_the_end():
    axis = axis_of(np.array([-1, 0, -6]), 10, 4)
    assert axis.size == 3 and not axis.drop and axis.is_array
    assert _pieces(axis) == [(0, [0], [1]), (1, [0], [2]), (2, [1], [0])]
    one = axis_of(-3, 10, 4)
    assert one.drop and one.size == 1
    assert [(ci, s.start, s.stop) for ci, s, _ in one.pieces] == [(1, 3, 4)]


def test_empty_slices_touch_no_chunk():
    for start in (0, 3, 4, 10):
        axis = axis_of(slice(start, start), 10, 4)
        assert axis.size == 0 and axis.pieces == []
    assert axis_of(slice(7, 2), 10, 4).pieces == []


# --- chunking: the dask chunks of a read and the HDF5 chunks of a new dataset ---------


@pytest.mark.parametrize(
    "budget, threads, share",
    [("128MiB", 16, 8 << 20), ("128MiB", 2, 16 << 20), ("64MiB", 4, 8 << 20), (8, 8, 1)],
)
def test_a_chunk_takes_the_budget_shared_by_at_least_8_threads(budget, threads, share):
    assert chunk_memory(budget, threads=threads) == share


def _budget_rows(h: int, row_elements: int, itemsize: int, share: int) -> int:
    """The documented rule: the most whole HDF5 chunks of ``h`` rows whose elements,
    counted as at least 8 bytes each, fit ``share`` bytes; never less than one chunk."""
    rows = share // (row_elements * max(itemsize, 8)) // h * h
    return max(rows, h)


@pytest.mark.parametrize("dtype", ["u1", "f4", "f8", "c16", "S32", "str"])
def test_dask_chunks_follow_the_budget_counted_as_float64(tmp_path, dtype):
    path = tmp_path / "budget.h5"
    n, h = 300_000, 64
    with h5py.File(path, "w") as f:
        kind = h5py.string_dtype() if dtype == "str" else dtype
        f.create_dataset("x", (n, 10), kind, chunks=(h, 10))
        f.create_dataset("flat", (n, 1), "u1")  # contiguous: no HDF5 chunks to follow
    with dask.config.set(num_workers=2), lazyh5.set_options(memory_budget="8MiB"):
        ds = lazyh5.open_dataset(path)  # shared by 8: 1 MiB per chunk
        info = describe(path)["groups"]["/"]["datasets"]
    # strings have no item size: planned as 16 bytes each (`lazyh5 info` shows it;
    # open_dataset reads strings into memory)
    rows = _budget_rows(h, 10, 16 if dtype == "str" else np.dtype(dtype).itemsize, 1 << 20)
    assert info["x"]["dask_chunks"] == [rows, 10]
    if dtype != "str":
        assert ds["x"].chunks[0][0] == rows
    assert ds["flat"].chunks == ((1 << 17, 1 << 17, n - (2 << 17)), (1,))
    ds.close()


def test_an_hdf5_chunk_bigger_than_the_limit_stays_whole():
    # 256 rows of 3 KiB as float64 (6 MiB) over a 1 MiB limit: one HDF5 chunk each
    assert dask_chunks((2000, 32, 32, 3), (256, 32, 32, 3), np.dtype("f4"), "1MiB") == (
        256,
        32,
        32,
        3,
    )
    limit = 64 * 32 * 32 * 3 * 8 * 5 + 100  # room for exactly 5 chunks of 64 rows
    planned = dask_chunks((2000, 32, 32, 3), (64, 32, 32, 3), np.dtype("u1"), limit)
    assert planned == (320, 32, 32, 3)


def test_contiguous_variables_get_chunks_within_their_axes():
    assert dask_chunks((200_000, 1), None, np.dtype("u1"), "1MiB") == (1 << 17, 1)
    assert dask_chunks((0,), None, np.dtype("f8"), "1MiB") == (1,)
    assert dask_chunks((), None, np.dtype("f8")) == ()


def _created_chunks(tmp_path, shape, dtype):
    path = tmp_path / "new.h5"
    lazyh5.create(path, {"x": (shape, dtype)}).close()
    with h5py.File(path, "r") as f:
        return f["x"].chunks


@pytest.mark.parametrize(
    "shape, dtype, chunks",
    [
        ((20_000, 32, 32, 3), "u1", (341, 32, 32, 3)),  # 3 KiB rows: 341 in 1 MiB
        ((5000, 16, 16), "f4", (1024, 16, 16)),  # 1 KiB rows
        ((2_000_000,), "u1", (1 << 20,)),  # 1-byte rows
        ((100_000,), "i8", (100_000,)),  # capped at the rows there are
        ((100, 1), "f8", (100, 1)),
        ((10, 1024, 1024, 3), "f4", (1, 1024, 1024, 3)),  # 12 MiB rows: one per chunk
        ((2, 2**32 - 1), "u1", (1, 2**32 - 1)),  # the biggest chunk HDF5 takes
    ],
)
def test_created_datasets_get_chunks_of_whole_rows_of_about_1_mib(tmp_path, shape, dtype, chunks):
    assert row_chunks(shape, dtype) == chunks  # whole numbers: the layout records them
    assert _created_chunks(tmp_path, shape, dtype) == chunks


def test_rows_too_big_for_an_hdf5_chunk_get_h5pys_guess(tmp_path):
    shape = (2, 1 << 30, 4)  # rows of 4 GiB
    with h5py.File(tmp_path / "guess.h5", "w") as f:
        guess = f.create_dataset("x", shape, "u1", chunks=True).chunks
    assert guess[1] < shape[1]
    assert _created_chunks(tmp_path, shape, "u1") == guess


@pytest.mark.parametrize(
    "shape, dtype, axis, chunks",
    [
        ((100_000, 32, 32, 3), "u1", 0, (256, 32, 32, 3)),  # 341 rows fit: 256
        ((100_000, 64), "u1", 0, (16384, 64)),  # 16384 fit exactly
        ((10, 600 << 10), "u1", 0, (1, 600 << 10)),  # one 600 KiB row fits
        ((10, 1024, 1024, 3), "f4", 0, (1, 1024, 1024, 3)),  # none fits: one row
        ((3000, 5000), "u1", 1, (3000, 256)),  # samples along axis 1: 3000-byte rows
        ((64, 100), "f8", 1, (64, 100)),  # capped at the 100 samples
    ],
)
def test_training_chunks_hold_a_power_of_two_rows(shape, dtype, axis, chunks):
    assert row_chunks(shape, dtype, axis, power_of_two=True) == chunks


def test_row_bytes_counts_one_row_along_the_sample_axis():
    assert row_bytes((1000, 32, 32, 3), np.dtype("f4")) == 12288
    assert row_bytes((1000, 32, 32, 3), "u1", axis=3) == 1000 * 32 * 32
    assert row_bytes((1000, 0), "f8") == 1  # empty rows still count a byte


# --- decode: each codec against h5py's own filters, and hostile chunks ----------------

CHUNK = (64, 256)  # 64 KiB of float32: big enough for the backend to decode itself


def _one_chunk(tmp_path, filters: dict, raw: bytes, mask: int = 0):
    """A file whose one chunk (``CHUNK``, float32) holds ``raw``, written past h5py's
    filters; returns its path."""
    path = tmp_path / "raw.h5"
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("x", CHUNK, "<f4", chunks=CHUNK, **filters)
        dset.id.write_direct_chunk((0, 0), raw, filter_mask=mask)
    return path


def _lz4_frame(size: int, block: int, blocks: list[bytes]) -> bytes:
    # the HDF5 LZ4 filter's frame: total and block size, then each block's length + bytes
    body = b"".join(struct.pack(">I", len(b)) + b for b in blocks)
    return struct.pack(">QI", size, block) + body


def _lz4_block(plain: bytes) -> bytes:
    return numcodecs.lz4.compress(plain)[4:]  # without numcodecs' own size header


@pytest.mark.parametrize("layout", ["1-byte blocks", "one 2 GiB block", "short last block"])
def test_lz4_frames_decode_like_h5py(tmp_path, layout):
    data = np.arange(math.prod(CHUNK), dtype="<f4").reshape(CHUNK)
    raw = data.tobytes()
    if layout == "1-byte blocks":  # each stored as is: no smaller once compressed
        frame = _lz4_frame(len(raw), 1, [raw[i : i + 1] for i in range(len(raw))])
    elif layout == "one 2 GiB block":  # a block size over the chunk: the chunk is one block
        frame = _lz4_frame(len(raw), 1 << 31, [_lz4_block(raw)])
    else:
        parts = [raw[i : i + 10_000] for i in range(0, len(raw), 10_000)]
        frame = _lz4_frame(len(raw), 10_000, [_lz4_block(p) for p in parts])
    path = _one_chunk(tmp_path, dict(hdf5plugin.LZ4()), frame)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][...], data)
        got = decode.decode_chunk(decode.format_of(f["x"]), 0, frame)
    assert got.tobytes() == raw


def test_lz4_frame_of_zero_byte_blocks_is_refused_like_h5py(tmp_path):
    frame = _lz4_frame(math.prod(CHUNK) * 4, 0, [b"\0" * 8])
    path = _one_chunk(tmp_path, dict(hdf5plugin.LZ4()), frame)
    with h5py.File(path, "r") as f:
        with pytest.raises(OSError):
            f["x"][...]
        with pytest.raises(decode.Undecodable):
            decode.decode_chunk(decode.format_of(f["x"]), 0, frame)


def test_filters_skipped_for_a_chunk_are_skipped_in_any_position(tmp_path):
    """Random bytes do not shrink under lzf: h5py stores them shuffled only (mask 2)."""
    bits = np.random.default_rng(2).integers(0, 2**32, (256, 256), dtype="u4")
    data = bits.view("<f4")
    data[128:] = 1.0  # these chunks do shrink: both filters applied (mask 0)
    path = tmp_path / "lzf.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=CHUNK, compression="lzf", shuffle=True)
    with h5py.File(path, "r") as f:
        dset, masks = f["x"], []
        fmt = decode.format_of(dset)
        for row in range(0, 256, CHUNK[0]):
            mask, raw = dset.id.read_direct_chunk((row, 0))
            masks.append(mask)
            got = decode.decode_chunk(fmt, mask, raw)
            assert got.tobytes() == dset[row : row + CHUNK[0]].tobytes()
    assert masks == [2, 2, 0, 0]


BOMB = 64 << 20  # what each hostile chunk claims or inflates to: 1024 times the chunk


def _bomb(codec: str) -> tuple[dict, bytes]:
    zeros = bytes(BOMB)
    if codec == "gzip":
        return {"compression": "gzip"}, zlib.compress(zeros)
    if codec == "lzf":
        return {"compression": "lzf"}, imagecodecs.lzf_encode(zeros, header=False)
    if codec == "blosc":
        return dict(hdf5plugin.Blosc("lz4")), numcodecs.blosc.compress(zeros, b"lz4", 5, 1)
    if codec == "zstd":
        return dict(hdf5plugin.Zstd()), numcodecs.zstd.Zstd(3).encode(zeros)
    # lz4: a header claiming BOMB bytes in one block, then a few bytes of garbage
    return dict(hdf5plugin.LZ4()), _lz4_frame(BOMB, BOMB, [b"garbage"])


@pytest.mark.parametrize("codec", ["gzip", "gzip-zlib", "lzf", "blosc", "zstd", "lz4"])
def test_hostile_chunks_are_refused_without_allocating_what_they_claim(
    tmp_path, monkeypatch, codec
):
    if codec == "gzip-zlib":  # the inflater used where imagecodecs lacks libdeflate
        monkeypatch.setitem(decode.DECODERS, decode.GZIP, decode._gzip)
        codec = "gzip"
    filters, raw = _bomb(codec)
    path = _one_chunk(tmp_path, filters, raw)
    with h5py.File(path, "r") as f:
        fmt = decode.format_of(f["x"])
    tracemalloc.start()
    try:
        with pytest.raises(decode.Undecodable):
            decode.decode_chunk(fmt, 0, raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * fmt.nbytes  # the chunk and a copy or two, far from BOMB


def test_every_codec_named_is_found_with_the_test_extra():
    # numcodecs and imagecodecs (the test extra) bring every optional decoder
    found = decode._available_decoders()
    named = {decode.GZIP, decode.SHUFFLE, decode.LZF, decode.LZ4, decode.BLOSC, decode.ZSTD}
    assert set(found) == named
    assert found == decode.DECODERS


def test_strings_are_left_to_h5py(tmp_path):
    """Variable-length strings hold heap references in the file, not their values."""
    words = np.array([f"row {i}" * (i % 5) for i in range(4000)], dtype=object)
    path = tmp_path / "strings.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("plain", data=words, dtype=h5py.string_dtype(), chunks=(1000,))
        f.create_dataset(
            "gzip", data=words, dtype=h5py.string_dtype(), chunks=(4000,), compression="gzip"
        )
    with h5py.File(path, "r") as f:
        for name in ("plain", "gzip"):
            assert decode.format_of(f[name]) is None
            got = read.read(lambda n=name: f[n], threading.Lock(), (4000,), (slice(10, 3990),))
            assert got.tolist() == f[name][10:3990].tolist()


def test_array_fields_decode_like_h5py_and_padded_ones_fall_back(tmp_path):
    packed = np.dtype([("a", "<i4"), ("v", "<f4", (3,))])
    inner = np.dtype({"names": ["x", "y"], "formats": ["u1", "<f4"], "offsets": [0, 4]})
    padded = np.dtype([("a", "<i4"), ("v", inner, (2,))])
    path = tmp_path / "arrays.h5"
    with h5py.File(path, "w") as f:
        for name, dt in (("packed", packed), ("padded", padded)):
            values = np.zeros(8192, dt)
            values["a"] = np.arange(8192)
            f.create_dataset(name, data=values, chunks=(4096,), compression="gzip")
    with h5py.File(path, "r") as f:
        assert decode.format_of(f["padded"]) is None
        fmt = decode.format_of(f["packed"])
        mask, raw = f["packed"].id.read_direct_chunk((4096,))
        assert decode.decode_chunk(fmt, mask, raw).tobytes() == f["packed"][4096:].tobytes()


# --- rows: the chunk-address table of whole-row chunks stored plain ------------------


def _rows_file(path):
    """Rows 0..299 and 700..999 written; the 64-row chunks over 300..700 unallocated."""
    data = np.arange(1000 * 6, dtype="<i4").reshape(1000, 6)
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("x", (1000, 6), "<i4", chunks=(64, 6), fillvalue=-1)
        dset[:300] = data[:300]
        dset[700:] = data[700:]
    return data


@pytest.mark.parametrize("table", [True, False], ids=["one pass", "chunk by chunk"])
def test_row_file_copies_allocated_chunks_and_leaves_holes_to_h5py(tmp_path, monkeypatch, table):
    path = tmp_path / "rows.h5"
    data = _rows_file(path)
    if not table:  # the addresses asked of HDF5 one chunk at a time
        monkeypatch.setattr(file_rows, "_TABLE_MAX", 0)
    with h5py.File(path, "r") as f:
        found = file_rows.row_file(lambda: f["x"], threading.Lock(), (1000, 6))
        assert (found.table is not None) == table
        for start, stop in [(0, 300), (5, 70), (700, 1000), (710, 990)]:
            copy = found.copy(start, stop)
            assert copy is not None, (start, stop)
            np.testing.assert_array_equal(copy.run(), data[start:stop])
        assert found.copy(250, 400) is None  # the fill value comes from h5py
        assert found.copy(320, 380) is None


def test_row_files_close_their_descriptor_when_dropped(tmp_path):
    path = tmp_path / "rows.h5"
    _rows_file(path)
    with h5py.File(path, "r") as f:
        gc.collect()
        before = len(os.listdir("/proc/self/fd"))
        found = file_rows.row_file(lambda: f["x"], threading.Lock(), (1000, 6))
        assert len(os.listdir("/proc/self/fd")) == before + 1  # its own duplicate
        del found
        gc.collect()
        assert len(os.listdir("/proc/self/fd")) == before


def test_row_file_of_chunks_stored_compressed_or_as_is_copies_those_as_is(tmp_path):
    """lzf stores a chunk it cannot shrink as is: those rows are copied, the others
    have to be decoded (``Compressed``), wherever the first chunk falls."""
    data = np.random.default_rng(4).random((1024, 96)).astype("<f4")
    data[:512] = np.round(data[:512] * 4)  # a few values: these chunks shrink
    path = tmp_path / "lzf.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data, chunks=(256, 96), compression="lzf")
    with h5py.File(path, "r") as f:
        found = file_rows.row_file(lambda: f["x"], threading.Lock(), (1024, 96))
        assert found is not None
        np.testing.assert_array_equal(found.copy(600, 1000).run(), data[600:1000])
        with pytest.raises(file_rows.Compressed):
            found.copy(0, 10)


def test_no_row_file_for_chunks_that_split_rows(tmp_path):
    path = tmp_path / "cols.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.ones((1000, 6), "<i4"), chunks=(64, 3))
    with h5py.File(path, "r") as f:
        assert file_rows.row_file(lambda: f["x"], threading.Lock(), (1000, 6)) is None


@pytest.mark.parametrize("task_bytes", [16 << 20, 1000], ids=["one task", "many tasks"])
def test_rows_of_a_file_url_are_fetched_by_range_like_local(tmp_path, monkeypatch, task_bytes):
    """A ``file://`` URL takes the remote path (byte ranges) with no server."""
    monkeypatch.setattr(file_rows, "_REMOTE_TASK_BYTES", task_bytes)
    path = write_feed(tmp_path / "feed.h5")
    remote, local = lazyh5.open_dataset(f"file://{path}"), lazyh5.open_dataset(path)
    for rows in (slice(0, 2000), slice(5, 70), slice(1990, 2000)):
        np.testing.assert_array_equal(remote["image"][rows].values, local["image"][rows].values)
    for shuffle in (False, True):
        kwargs = {"batch_size": 100, "shuffle": shuffle, "seed": 4, "block_size": "8KiB"}
        got = BatchLoader(remote, "image", "label", **kwargs)
        want = BatchLoader(local, "image", "label", **kwargs)
        for (gx, gy), (wx, wy) in zip(got, want, strict=True):
            np.testing.assert_array_equal(gx, wx)
            np.testing.assert_array_equal(gy, wy)
            np.testing.assert_array_equal(gx[:, 0, 0], gy)  # image[i] == label[i] == i
        for i in (0, 7, len(got) - 1):  # random access: rows gathered one range each
            for g, w in zip(got._read_batch(0, i), want._read_batch(0, i), strict=True):
                np.testing.assert_array_equal(g, w)
    remote.close()
    local.close()


def test_scattered_runs_of_more_rows_than_one_preadv_takes_and_their_holes(tmp_path):
    """``out[dst]``: a run of 2048 rows takes two ``preadv`` calls (1024 buffers each);
    rows of unallocated chunks land at their destinations too."""
    data = np.arange(8192 * 2, dtype="<i4").reshape(8192, 2)
    path = tmp_path / "scatter.h5"
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("x", (8192, 2), "<i4", chunks=(2048, 2), fillvalue=-1)
        dset[:4096] = data[:4096]
        dset[6144:] = data[6144:]  # rows 4096..6144 unallocated
    dst = np.random.default_rng(0).permutation(8000)
    with h5py.File(path, "r") as f:
        copy, _ = file_rows.row_copy(f["x"], (8192, 2), (slice(100, 8100), slice(None)))
        want = np.empty((8000, 2), "<i4")
        want[dst] = f["x"][100:8100]
    out = np.zeros_like(want)
    copy.run(out, dst)
    np.testing.assert_array_equal(out, want)


def test_a_compressed_chunk_as_big_as_its_values_is_still_decoded(tmp_path):
    data = np.arange(64 * 256, dtype="<f4").reshape(CHUNK)
    stream = zlib.compress(data.tobytes())
    raw = stream + bytes(data.nbytes - len(stream))  # inflate stops at the stream's end
    path = _one_chunk(tmp_path, {"compression": "gzip"}, raw)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][...], data)
        assert file_rows.row_copy(f["x"], CHUNK, (slice(None), slice(None))) is None
    ds = lazyh5.open_dataset(path, chunks={})
    np.testing.assert_array_equal(ds["x"].values, data)
    ds.close()


def test_rows_of_big_rows_through_a_url_are_scattered_and_gathered_like_local(
    tmp_path, monkeypatch
):
    """Rows of 4 KiB through a ``file://`` URL: a shuffled epoch places each run of rows
    at its destinations (``dst``) from the ranges fetched, and random batches gather
    one range per row; both equal the local file's, row for row."""
    monkeypatch.setattr(file_rows, "_REMOTE_TASK_BYTES", 64 << 10)  # several tasks a block
    n = 1500
    rows = np.arange(n, dtype="<f4")[:, None, None] * np.ones((1, 32, 32), "<f4")
    path = tmp_path / "big.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=rows, chunks=(50, 32, 32))
        f.create_dataset("label", data=np.arange(n), chunks=(50,))
    remote, local = lazyh5.open_dataset(f"file://{path}"), lazyh5.open_dataset(path)
    kwargs = {"batch_size": 64, "shuffle": True, "seed": 3, "block_size": "256KiB"}
    got = BatchLoader(remote, "image", "label", **kwargs)
    want = BatchLoader(local, "image", "label", **kwargs)
    seen = []
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gy, wy)
        np.testing.assert_array_equal(gx[:, 5, 7], gy)  # image[i] == i == label[i]
        seen.append(gy)
    assert sorted(np.concatenate(seen).tolist()) == list(range(n))
    for i in (0, 5, len(got) - 1):
        (gx, gy), (wx, wy) = got._read_batch(0, i), want._read_batch(0, i)
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gx[:, 0, 0], gy)
    remote.close()
    local.close()


def test_row_copy_takes_whole_rows_and_single_rows_only(tmp_path):
    path = tmp_path / "rows.h5"
    data = _rows_file(path)
    with h5py.File(path, "r") as f:
        dset = f["x"]
        assert file_rows.row_copy(dset, (1000, 6), (slice(0, 10),)) is None  # a short key
        assert file_rows.row_copy(dset, (1000, 6), (1000, slice(None))) is None  # past the end
        for row in (0, 5, 999, -1, -1000):
            copy, drop = file_rows.row_copy(dset, (1000, 6), (row, slice(None)))
            assert drop and copy.rows == 1, row
            np.testing.assert_array_equal(copy.run()[0], data[row])


def test_row_copy_of_other_drivers_is_left_to_h5py(tmp_path):
    """Only the default (sec2) driver's descriptor holds the file's bytes at their offsets."""
    path = tmp_path / "rows.h5"
    _rows_file(path)
    with h5py.File(path, "r", driver="core") as f:
        assert file_rows.row_copy(f["x"], (1000, 6), (slice(0, 10), slice(None))) is None


@pytest.mark.parametrize("table", [True, False], ids=["one pass", "chunk by chunk"])
def test_rows_of_one_element_are_copied_from_their_chunks(tmp_path, monkeypatch, table):
    """Chunks are looked up by their first element, which a row of one element has too."""
    if not table:
        monkeypatch.setattr(file_rows, "_TABLE_MAX", 0)
    path = tmp_path / "column.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(100, dtype="<i8")[:, None], chunks=(10, 1))
    with h5py.File(path, "r") as f:
        copy, _ = file_rows.row_copy(f["x"], (100, 1), (slice(5, 55), slice(None)))
        assert copy.fills == [] and sum(n for *_, n in copy.copies) == 50  # none by h5py
        np.testing.assert_array_equal(copy.run()[:, 0], np.arange(5, 55))
        found = file_rows.row_file(lambda: f["x"], threading.Lock(), (100, 1))
        np.testing.assert_array_equal(found.copy(5, 55).run()[:, 0], np.arange(5, 55))


def test_chunk_tables_are_read_in_one_pass_up_to_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "rows.h5"
    _rows_file(path)  # 1000 rows in 64-row chunks: 16 chunks
    with h5py.File(path, "r") as f:
        fmt = decode.format_of(f["x"])
        monkeypatch.setattr(file_rows, "_TABLE_MAX", 16)
        assert file_rows.chunk_table(f["x"], fmt) is not None
        monkeypatch.setattr(file_rows, "_TABLE_MAX", 15)
        assert file_rows.chunk_table(f["x"], fmt) is None


def test_row_runs_join_chunks_back_to_back_in_the_file_up_to_the_limit():
    """One preadv per run: chunks that follow each other in the file make one, up to
    ``limit`` bytes (or one chunk, whatever its size)."""
    where = {0: 1000, 4: 1040, 8: 1080, 12: 1120}.__getitem__
    assert file_rows.row_runs(1, 15, 4, 10, where) == ([(1010, 0, 14)], [])
    assert file_rows.row_runs(0, 16, 4, 10, where, limit=80) == ([(1000, 0, 8), (1080, 8, 8)], [])
    assert file_rows.row_runs(0, 8, 4, 10, where, limit=10) == ([(1000, 0, 4), (1040, 4, 4)], [])
    # back to back in the file, but a chunk between them is unallocated
    gap = {0: 1000, 4: None, 8: 1040}.__getitem__
    assert file_rows.row_runs(0, 12, 4, 10, gap) == ([(1000, 0, 4), (1040, 8, 4)], [(4, 8)])
    # in the file in reverse row order: no run to join
    back = {0: 1040, 4: 1000}.__getitem__
    assert file_rows.row_runs(0, 8, 4, 10, back) == ([(1040, 0, 4), (1000, 4, 4)], [])


def test_row_runs_follow_each_chunks_own_address():
    """Chunks need not lie in the file in row order, nor back to back."""
    where = {0: 9000, 4: 1000, 8: 5000}
    copies, holes = file_rows.row_runs(1, 11, 4, 10, where.__getitem__)
    assert copies == [(9010, 0, 3), (1000, 3, 4), (5000, 7, 3)] and holes == []
    asked = []
    assert file_rows.row_runs(5, 5, 4, 10, asked.append) == ([], [])
    assert asked == []  # an empty range looks up no chunk


def test_rows_spanning_chunks_written_out_of_order_read_like_h5py(tmp_path):
    """Chunks written last-first lie in the file in reverse row order."""
    data = np.arange(640 * 8, dtype="<f4").reshape(640, 8) * 2
    path = tmp_path / "reversed.h5"
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("x", (640, 8), "<f4", chunks=(64, 8))
        for lo in range(576, -1, -64):
            dset[lo : lo + 64] = data[lo : lo + 64]
    with h5py.File(path, "r") as f:
        first, second = (f["x"].id.get_chunk_info_by_coord((r, 0)).byte_offset for r in (0, 64))
        assert first > second
    ds = lazyh5.open_dataset(path)
    for rows in (slice(30, 100), slice(0, 640), slice(63, 65)):
        np.testing.assert_array_equal(ds["x"][rows].values, data[rows])
    loader = BatchLoader(ds, "x", batch_size=50, shuffle=True, seed=1, block_size="8KiB")
    got = np.concatenate(list(loader))
    np.testing.assert_array_equal(np.sort(got[:, 0]), data[:, 0])
    np.testing.assert_array_equal(got[:, 1] - got[:, 0], np.full(640, 2, "<f4"))
    ds.close()


def test_rows_of_a_remote_file_are_gathered_one_range_each(tmp_path):
    """Any rows, in any order, one range request each, all sent together; an
    unallocated chunk leaves the rows to h5py (``False``), which knows its fill value."""
    path = tmp_path / "rows.h5"
    data = _rows_file(path)  # rows 300..700 unallocated
    reader = RangeReader(fsspec.filesystem("file"), str(path), "rows.h5", path.stat().st_size)
    with h5py.File(path, "r") as f:
        found = file_rows.row_file(lambda: f["x"], threading.Lock(), (1000, 6), reader)
    rows = np.array([999, 3, 64, 3, 250, 700, 0])
    out = np.zeros((len(rows), 6), "<i4")
    assert found.gather(rows, out)
    np.testing.assert_array_equal(out, data[rows])
    assert reader.requests >= 1
    assert not found.gather(np.array([5, 400]), np.zeros((2, 6), "<i4"))


def test_a_scatter_places_consecutive_file_bytes_at_each_destination(tmp_path):
    """``LocalBytes.scatter`` fills the destinations of an iovec array from consecutive
    bytes of the file, more than ``IOV_MAX`` at a time, and a read cut short by the end
    of the file raises, naming the byte it started at."""
    from lazyh5.backend import ranges

    path = tmp_path / "bytes.bin"
    path.write_bytes(np.arange(3000, dtype="<u4").tobytes())
    out = np.zeros((3000, 4), np.uint8)
    dst = np.random.default_rng(0).permutation(2500)
    iov = ranges.iovecs(out, dst * 4, 4)
    source = ranges.LocalBytes(os.open(path, os.O_RDONLY))
    try:
        source.scatter(iov, 500, 2000, 2000)  # rows 500.. of the file, from byte 2000 on
        got = out.view("<u4")[:, 0]
        np.testing.assert_array_equal(got[dst[500:]], np.arange(500, 2500))
        assert not got[dst[:500]].any() and not got[2500:].any()
        with pytest.raises(OSError, match="ends inside a chunk at byte 11996"):
            source.scatter(iov, 0, 2, 11996)  # 8 bytes wanted, 4 left
    finally:
        source.close()


def test_iovecs_refuse_destinations_outside_their_array():
    """The kernel writes where an iovec points: every destination is checked first."""
    from lazyh5.backend import ranges

    out = np.zeros((10, 4), np.uint8)
    assert ranges.iovecs(out, np.array([0, 36]), 4)[:, 1].tolist() == [4, 4]
    with pytest.raises(IndexError, match="outside an array of 40 bytes"):
        ranges.iovecs(out, np.array([0, 37]), 4)
    with pytest.raises(IndexError, match="outside"):
        ranges.iovecs(out, np.array([-1]), 4)
    with pytest.raises(ValueError, match="C-contiguous"):
        ranges.iovecs(out[:, :2], np.array([0]), 2)
    assert ranges.iovecs(out, np.array([], np.int64), 4).shape == (0, 2)
