"""Remote HDF5 files: URLs (a real S3 API server and an HTTP server on loopback, fsspec's
local and memory file systems) and file objects, read chunk-aware by byte range.

Every value is compared with h5py's reading of the local copy. The servers and the
fault-injecting proxy are the fixtures of ``tests/_servers.py``; the table of faults is
``tests/test_remote_faults.py``.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
import uuid

import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5 import BatchLoader
from lazyh5.backend.ranges import RangeReader, coalesce, request_count
from lazyh5.backend.view import h5_sources
from lazyh5.errors import CorruptFileError, FileMissingError, ReadOnlyError, RemoteReadError
from tests._servers import SECRET

pytest.importorskip("fsspec")
pytestmark = pytest.mark.usefixtures("close_leftover_files")

# Datasets of every storage the read path has a strategy for, each read by a different
# one: whole-row plain chunks (byte ranges copied), compressed chunks (fetched and
# decoded), plain chunks not whole rows, contiguous and compact storage, strings.
LAYOUTS = {
    "rows": {"shape": (600, 6, 5), "dtype": "f4", "chunks": (64, 6, 5)},
    "gzip": {"shape": (600, 6, 5), "dtype": "f8", "chunks": (50, 3, 5), "compression": "gzip"},
    "shuffled": {
        "shape": (600, 7),
        "dtype": "i2",
        "chunks": (128, 7),
        "compression": "gzip",
        "shuffle": True,
    },
    "lzf": {"shape": (600, 4), "dtype": "u1", "chunks": (100, 2), "compression": "lzf"},
    "tiles": {"shape": (600, 6, 5), "dtype": "i4", "chunks": (100, 2, 5)},
    "contiguous": {"shape": (600, 3), "dtype": "f4"},
    "bigendian": {"shape": (600, 5), "dtype": ">f8", "chunks": (64, 5), "compression": "gzip"},
    "fletcher": {  # only h5py decodes it: read through the metadata file object
        "shape": (600, 5),
        "dtype": "f4",
        "chunks": (64, 5),
        "compression": "gzip",
        "fletcher32": True,
    },
    "compound": {"shape": (600,), "dtype": [("a", "<i4"), ("b", "<f8")], "chunks": (100,)},
    "label": {"shape": (600,), "dtype": "i8", "chunks": (100,)},
}


def _plugin_layouts() -> dict:
    """Datasets compressed by HDF5 filter plugins (Blosc, Zstd, LZ4), when installed."""
    try:
        import hdf5plugin
    except ImportError:
        return {}
    spec = {"shape": (600, 6, 5), "dtype": "f4", "chunks": (50, 6, 5)}
    return {
        "blosc": {**spec, **hdf5plugin.Blosc("lz4", 5, hdf5plugin.Blosc.SHUFFLE)},
        "zstd": {**spec, **hdf5plugin.Zstd(3)},
        "lz4": {**spec, **hdf5plugin.LZ4(nbytes=64)},  # several LZ4 blocks per chunk
    }


LAYOUTS.update(_plugin_layouts())


def write_layouts(path) -> str:
    """A file holding every layout of :data:`LAYOUTS` (values that say where they are),
    plus strings, a scalar and a partly written (unallocated chunks) dataset."""
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as f:
        for name, spec in LAYOUTS.items():
            spec = dict(spec)
            shape, dtype = spec.pop("shape"), np.dtype(spec.pop("dtype"))
            values = rng.integers(0, 100, shape).astype(dtype)
            if dtype.kind == "f":
                values += rng.random(shape).astype(dtype)
            f.create_dataset(name, data=values, **spec)
        f.create_dataset("sparse", shape=(600, 5), dtype="f4", chunks=(100, 5), fillvalue=-1)
        f["sparse"][200:300] = 7.0
        f.create_dataset("names", data=np.array([f"n{i}".encode() for i in range(600)]))
        f.create_dataset("scalar", data=2.5)
        f["image"] = f["rows"]  # a hard link: the same dataset twice
        f.create_dataset("train/x", data=rng.random((40, 3)), chunks=(10, 3))
        f.create_dataset("test/x", data=rng.random((20, 3)), compression="gzip")
        f.attrs["title"] = "layouts"
    return str(path)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    return write_layouts(tmp_path_factory.mktemp("remote") / "layouts.h5")


@pytest.fixture
def memory_url(layouts):
    import fsspec

    url = f"memory://lazyh5-tests/{uuid.uuid4().hex}/layouts.h5"
    with open(layouts, "rb") as fh:
        fsspec.filesystem("memory").pipe(url, fh.read())
    return url


@pytest.fixture(params=["s3", "http", "memory", "file"])
def remote(request, layouts, tmp_path):
    """``(url, storage_options)`` of a copy of the layouts file, per kind of store."""
    kind = request.param
    if kind == "s3":
        server = request.getfixturevalue("s3_server")
        return server.upload(layouts), server.storage_options()
    if kind == "http":
        return request.getfixturevalue("http_server").add(layouts), None
    if kind == "memory":
        return request.getfixturevalue("memory_url"), None
    return f"file://{layouts}", None


SELECTIONS = [
    (slice(None),),
    (slice(3, 517, 7),),
    (slice(590, 600), slice(1, None)),
    (np.array([5, 3, 599, 3, 100, 64, 63]),),
    (42,),
]


@pytest.mark.parametrize("chunks", ["budget", None])
def test_values_equal_h5py_for_every_layout(remote, layouts, chunks):
    url, options = remote
    ds = lazyh5.open_dataset(url, storage_options=options, chunks=chunks)
    with h5py.File(layouts, "r") as ref:
        for name in [*LAYOUTS, "sparse", "image"]:
            whole = ref[name][()]
            np.testing.assert_array_equal(ds[name].values, whole, err_msg=name)
            for key in SELECTIONS:
                key = key[: whole.ndim]
                want = whole[key]
                got = ds[name].variable[key].values
                np.testing.assert_array_equal(got, want, err_msg=f"{name}[{key}]")
        local = lazyh5.open_dataset(layouts)  # strings: as lazyh5 shows a local file's
        assert ds["names"].values.tolist() == local["names"].values.tolist()
        assert float(ds["scalar"]) == 2.5 and ds.attrs["title"] == "layouts"


def test_datatree_and_encoding_name_the_url(remote):
    url, options = remote
    tree = lazyh5.open_datatree(url, storage_options=options)
    assert tree["train"]["x"].shape == (40, 3) and tree["test"]["x"].shape == (20, 3)
    source = tree["train"]["x"].encoding["source"]
    assert source == url.split("?")[0]


def test_xarray_engine_takes_urls_and_file_objects(memory_url, layouts):
    with h5py.File(layouts, "r") as ref:
        want = ref["gzip"][()]
    ds = xr.open_dataset(memory_url, engine="lazyh5", chunks={})
    np.testing.assert_array_equal(ds["gzip"].values, want)
    with open(layouts, "rb") as fh:
        ds = xr.open_dataset(fh, engine="lazyh5")
        np.testing.assert_array_equal(ds["gzip"].values, want)
        ds.close()
    with open(layouts, "rb") as fh:
        ds = xr.open_dataset(io.BytesIO(fh.read()), engine="lazyh5")
    np.testing.assert_array_equal(ds["gzip"].values, want)


def test_fsspec_file_object(memory_url, layouts):
    import fsspec

    with fsspec.open(memory_url, "rb") as fh:
        ds = lazyh5.open_dataset(fh, chunks=None)
        with h5py.File(layouts, "r") as ref:
            np.testing.assert_array_equal(ds["tiles"][10:300:3].values, ref["tiles"][10:300:3])
        ds.close()


def test_file_objects_refuse_to_pickle_with_a_clear_message(layouts):
    with open(layouts, "rb") as fh:
        ds = lazyh5.open_dataset(fh)
        with pytest.raises(TypeError, match=r"file object cannot be reopened.*path or URL"):
            pickle.dumps(ds)
        ds.close()


def test_open_mfdataset_over_a_url_glob(s3_server, layouts, tmp_path):
    folder = f"shards-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        path = tmp_path / f"shard{i}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("x", data=np.arange(10) + 10 * i, chunks=(5,), compression="gzip")
        s3_server.upload(path, f"{folder}/shard{i}.h5")
    pattern = f"s3://lazyh5/{folder}/*.h5"
    options = s3_server.storage_options()
    ds = lazyh5.open_mfdataset(
        pattern, storage_options=options, combine="nested", concat_dim="sample"
    )
    assert ds["x"].values.tolist() == list(range(30))
    urls = [f"s3://lazyh5/{folder}/shard{i}.h5" for i in range(3)]
    ds = xr.open_mfdataset(
        urls, engine="lazyh5", storage_options=options, combine="nested", concat_dim="sample"
    )
    assert ds["x"].values.tolist() == list(range(30))
    with pytest.raises(FileMissingError, match="no files match"):
        lazyh5.open_mfdataset(f"s3://lazyh5/{folder}/none*.h5", storage_options=options)


def test_opening_many_datasets_costs_a_few_requests(s3_server, s3_proxy, tmp_path):
    path = tmp_path / "many.h5"
    with h5py.File(path, "w") as f:
        for i in range(1000):
            f.create_dataset(f"d{i:04d}", data=np.arange(100.0) + i)
    url = s3_server.upload(path)
    before = request_count()
    ds = lazyh5.open_dataset(url, storage_options=s3_server.storage_options(s3_proxy.url))
    assert len(ds.data_vars) == 1000
    # One size lookup (HEAD) and the metadata blocks (ranged GETs): not one per dataset.
    assert s3_proxy.count(method="HEAD") == 1
    assert 1 <= s3_proxy.count(method="GET", ranged=True) <= 4
    assert request_count() - before == s3_proxy.count(method="GET", ranged=True)
    s3_proxy.reset_counts()
    assert float(ds["d0999"][99]) == 999 + 99
    assert ds["d0500"].values.tolist() == (np.arange(100.0) + 500).tolist()
    assert s3_proxy.count() <= 1  # the metadata block holds them (contiguous, small)


def test_chunk_reads_go_out_together_and_coalesce(s3_server, s3_proxy, layouts):
    ds = lazyh5.open_dataset(
        s3_server.upload(layouts), storage_options=s3_server.storage_options(s3_proxy.url)
    )
    s3_proxy.reset_counts()
    with h5py.File(layouts, "r") as ref:
        np.testing.assert_array_equal(ds["gzip"].values, ref["gzip"][()])
    # 24 compressed chunks, neighbours in the file: far fewer requests than chunks
    assert 1 <= s3_proxy.count(method="GET") < 24


def test_coalesce_merges_neighbours_and_keeps_far_ranges_apart():
    assert coalesce([(0, 10), (10, 20), (15, 18)], gap=0) == [(0, 20)]
    assert coalesce([(0, 10), (100, 110)], gap=50) == [(0, 10), (100, 110)]
    assert coalesce([(0, 10), (30, 40)], gap=50, limit=25) == [(0, 10), (30, 40)]


@pytest.mark.parametrize("builder", ["feed_file", "lzf_feed_file"])
def test_loader_reads_remote_rows_like_local(s3_server, request, builder):
    path = request.getfixturevalue(builder)
    remote = lazyh5.open_dataset(
        s3_server.upload(path), storage_options=s3_server.storage_options()
    )
    local = lazyh5.open_dataset(path)
    for shuffle in (False, True):
        kwargs = {"batch_size": 100, "shuffle": shuffle, "seed": 4, "block_size": "8KiB"}
        got = BatchLoader(remote, "image", "label", **kwargs)
        want = BatchLoader(local, "image", "label", **kwargs)
        assert len(got) == len(want) >= 20
        for (gx, gy), (wx, wy) in zip(got, want, strict=True):
            np.testing.assert_array_equal(gx, wx)
            np.testing.assert_array_equal(gy, wy)
        for i in (0, 7, len(got) - 1):  # random access (Keras' PyDataset): rows gathered
            for g, w in zip(got._read_batch(0, i), want._read_batch(0, i), strict=True):
                np.testing.assert_array_equal(g, w)


def test_remote_files_are_read_only(memory_url):
    with pytest.raises(ReadOnlyError, match=r"cannot update a remote object in place.*to_hdf5"):
        lazyh5.open_dataset(memory_url, mode="r+")
    ds = lazyh5.open_dataset(memory_url)
    with pytest.raises(ReadOnlyError, match="cannot update a remote object in place"):
        ds["rows"].h5[0:2] = 0.0


def test_a_truncated_object_is_corrupt_naming_the_url(s3_server, layouts, tmp_path):
    with open(layouts, "rb") as fh:
        data = fh.read()
    short = tmp_path / "short.h5"
    short.write_bytes(data[: len(data) // 2])
    url = s3_server.upload(short)
    with pytest.raises(CorruptFileError, match=url):
        ds = lazyh5.open_dataset(url, storage_options=s3_server.storage_options())
        ds["gzip"].load()


def test_a_chunk_past_the_end_is_corrupt_not_wrong_values(memory_url):
    ds = lazyh5.open_dataset(memory_url)
    reader = h5_sources(ds["gzip"].data)[0].store.ranges()
    assert isinstance(reader, RangeReader)
    with pytest.raises(CorruptFileError, match=r"bytes=\d+-\d+"):
        reader.fetch([(reader.size - 10, reader.size + 10)])


def test_missing_object_and_unknown_protocol(s3_server):
    missing = "s3://lazyh5/nothing-here.h5"
    with pytest.raises(FileMissingError, match=re.escape(missing)):
        lazyh5.open_dataset(missing, storage_options=s3_server.storage_options())
    with pytest.raises(lazyh5.errors.InvalidArgumentError, match="nosuchproto://"):
        lazyh5.open_dataset("nosuchproto://x/y.h5")


def test_retries_exhausted_name_url_and_range_without_secrets(s3_server, s3_proxy, layouts, caplog):
    caplog.set_level(logging.DEBUG)
    url = s3_server.upload(layouts)
    ds = lazyh5.open_dataset(url, storage_options=s3_server.storage_options(s3_proxy.url))
    s3_proxy.inject("status", times=None, method="GET", ranged=True, status=503)
    with (
        lazyh5.set_options(remote_retries=2, remote_backoff=0.001),
        pytest.raises(RemoteReadError, match=rf"'{url}' bytes=\d+-\d+.*after 2 retries") as err,
    ):
        ds["gzip"].load()
    assert SECRET not in str(err.value) and SECRET not in repr(err.value)
    assert SECRET not in caplog.text


def test_transient_faults_are_retried_to_the_right_values(http_server, http_proxy, layouts):
    name = http_server.add(layouts).rsplit("/", 1)[1]
    ds = lazyh5.open_dataset(f"{http_proxy.url}/{name}", chunks=None)
    with h5py.File(layouts, "r") as ref:
        for kind in ("status", "reset", "truncate"):
            http_proxy.inject(kind, times=2, method="GET", ranged=True)
            np.testing.assert_array_equal(ds["gzip"][100:400].values, ref["gzip"][100:400])
            np.testing.assert_array_equal(ds["rows"][200:500].values, ref["rows"][200:500])


def test_credentials_stay_out_of_reprs_encoding_and_pickles(s3_server, layouts):
    url = s3_server.upload(layouts)
    ds = lazyh5.open_dataset(url, storage_options=s3_server.storage_options())
    store = h5_sources(ds["gzip"].data)[0].store
    texts = [repr(ds), str(ds["gzip"].encoding), repr(store._manager), repr(store.source)]
    blob = pickle.dumps(ds)
    assert all(SECRET not in t for t in texts)
    assert SECRET.encode() not in blob and b"lazyh5-test-key" not in blob
    again = pickle.loads(blob)
    with h5py.File(layouts, "r") as ref:  # same process: the open file is shared
        np.testing.assert_array_equal(again["lzf"].values, ref["lzf"][()])


def test_urls_with_passwords_and_queries_are_redacted(http_server, layouts):
    name = http_server.add(layouts).rsplit("/", 1)[1]
    url = http_server.base.replace("http://", "http://user:pw-SECRET@") + f"/{name}?sig=X9Z"
    ds = lazyh5.open_dataset(url)
    source = ds["gzip"].encoding["source"]
    assert "pw-SECRET" not in source and "X9Z" not in source and source.endswith("?***")
    blob = pickle.dumps(ds)
    assert b"pw-SECRET" not in blob


def test_bad_settings_are_refused():
    with pytest.raises(lazyh5.errors.InvalidArgumentError, match="remote_retries"):
        lazyh5.set_options(remote_retries=-1)
    with pytest.raises(lazyh5.errors.InvalidArgumentError, match="remote_timeout"):
        lazyh5.set_options(remote_timeout=0)


def test_workers_reopen_the_url_with_their_own_credentials(s3_server, layouts, monkeypatch):
    distributed = pytest.importorskip("distributed")
    url = s3_server.upload(layouts)
    options = s3_server.storage_options()
    # The workers' own credentials: from their environment, never from the pickle.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", options["secret"])
    ds = lazyh5.open_dataset(url, storage_options=options)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        total = ds["gzip"].sum().compute()
        pids = client.run(lambda: __import__("os").getpid())
        assert len(set(pids.values())) == 2
        with open(layouts, "rb") as fh:
            local = lazyh5.open_dataset(fh)
            with pytest.raises(TypeError) as err:
                local["gzip"].sum().compute()
            chain, cause = [], err.value
            while cause is not None:  # distributed wraps the reason in its own error
                chain.append(str(cause))
                cause = cause.__cause__ or cause.__context__
            assert any("file object cannot be reopened" in text for text in chain), chain
            local.close()
    with h5py.File(layouts, "r") as ref:
        assert float(total) == pytest.approx(float(ref["gzip"][()].sum()))


def test_the_size_lookup_at_open_is_retried_too(s3_server, s3_proxy, layouts):
    url = s3_server.upload(layouts)
    # botocore retries on its own too: not here, so lazyh5's retries are what is seen
    one = {"config_kwargs": {"retries": {"max_attempts": 1}}}
    options = {**s3_server.storage_options(s3_proxy.url), **one}
    s3_proxy.inject("status", times=2, method="HEAD", status=503)
    with lazyh5.set_options(remote_backoff=0.001):
        assert lazyh5.open_dataset(url, storage_options=options)["label"].shape == (600,)
    s3_proxy.inject("status", times=None, method="HEAD", status=503)
    other = s3_server.upload(layouts)  # not opened yet in this process
    with (
        lazyh5.set_options(remote_retries=1, remote_backoff=0.001),
        pytest.raises(RemoteReadError, match=rf"cannot open '{other}'.*after 1 retries"),
    ):
        lazyh5.open_dataset(other, storage_options=options)


def test_a_forked_process_reads_the_url_with_its_own_connections(s3_server, layouts):
    import multiprocessing

    url = s3_server.upload(layouts)
    # chunks=None: no dask (its threaded scheduler does not run in a forked child)
    ds = lazyh5.open_dataset(url, storage_options=s3_server.storage_options(), chunks=None)
    with h5py.File(layouts, "r") as ref:
        want = ref["gzip"][100:300]
    np.testing.assert_array_equal(ds["gzip"][100:300].values, want)  # connected here first
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:  # as DataLoader and PyDataset workers are started
        got = pool.apply(_read_slice, (ds,))
    np.testing.assert_array_equal(got, want)


def _read_slice(ds: xr.Dataset) -> np.ndarray:
    return ds["gzip"][100:300].values


def test_an_object_that_is_not_hdf5_is_refused(s3_server, tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("a,b\n1,2\n" * 100)
    url = s3_server.upload(text)
    with pytest.raises(lazyh5.errors.NotHDF5Error, match=re.escape(url)):
        lazyh5.open_dataset(url, storage_options=s3_server.storage_options())


def test_a_server_without_range_requests_is_refused_clearly(layouts, tmp_path):
    import functools
    import shutil
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    shutil.copyfile(layouts, tmp_path / "layouts.h5")

    class Quiet(SimpleHTTPRequestHandler):  # answers every GET whole: no Range support
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/layouts.h5"
        # Opening reads the whole (small) file in one block: fine; a chunk is not.
        ds = lazyh5.open_dataset(url)
        with pytest.raises(RemoteReadError, match=r"does not support HTTP Range requests"):
            ds["gzip"].load()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
