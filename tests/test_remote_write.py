"""Writing to object storage: ``to_hdf5(url, ...)`` writes a local temporary file and
uploads it whole (tests against the S3 API server on loopback, tests/_servers.py), so a
failed run never leaves a partial object; ``create`` and in-place writes refuse URLs."""

from __future__ import annotations

import logging
import tempfile
import traceback

import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5
from lazyh5.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    ReadOnlyError,
    RemoteWriteError,
)
from tests._servers import SECRET

pytestmark = pytest.mark.usefixtures("close_leftover_files")


def lazy(rows: int = 256, cols: int = 64) -> xr.Dataset:
    """A lazy Dataset: ``x[i, j] == i * cols + j`` (float32) in 4 dask blocks."""
    x = da.arange(rows * cols, dtype="f4", chunks=rows * cols // 4).reshape(rows, cols)
    return xr.Dataset({"x": (("sample", "feature"), x)}, attrs={"title": "lazy"})


def failing(rows: int = 256) -> xr.Dataset:
    """A lazy Dataset whose third block raises when computed."""

    def block(b, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("block 2 failed")
        return b

    x = da.ones((rows, 8), dtype="f4", chunks=(rows // 4, 8)).map_blocks(block, dtype="f4")
    return xr.Dataset({"x": (("sample", "feature"), x)})


@pytest.fixture
def tmpdir_watch(tmp_path, monkeypatch):
    """The temporary folder, made empty and private to the test, to see what is left."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def stored(s3_server, url, tmp_path) -> dict:
    """The object at ``url``, downloaded and read with h5py."""
    data = s3_server.read(url)
    assert data is not None, f"nothing at {url}"
    local = tmp_path / "downloaded.h5"
    local.write_bytes(data)
    with h5py.File(local, "r") as f:
        return {"x": f["x"][()], "title": f.attrs.get("title")}


def test_round_trip(s3_server, tmp_path, tmpdir_watch):
    url = s3_server.unique_url()
    lazyh5.to_hdf5(url, lazy(), storage_options=s3_server.storage_options(), progress=False)
    got = stored(s3_server, url, tmp_path)
    np.testing.assert_array_equal(got["x"], lazy()["x"].values)
    assert got["title"] == "lazy"
    assert list(tmpdir_watch.iterdir()) == []  # the local copy is removed
    with lazyh5.open_dataset(url, storage_options=s3_server.storage_options()) as ds:
        xr.testing.assert_equal(ds.load(), lazy().load())


def test_large_file_is_uploaded_in_parts(s3_server, s3_proxy, tmp_path):
    url = s3_server.unique_url()
    big = lazy(rows=2816, cols=1024)  # 11 MiB: three parts of at most 5 MiB
    lazyh5.to_hdf5(
        url,
        big,
        storage_options=s3_server.storage_options(s3_proxy.url),
        upload_options={"chunksize": 5 * 2**20},
        progress=False,
    )
    parts = [r for r in s3_proxy.requests if r.method == "PUT" and "partNumber=" in r.path]
    assert len(parts) == 3
    np.testing.assert_array_equal(stored(s3_server, url, tmp_path)["x"], big["x"].values)


def test_failed_part_leaves_no_object(s3_server, s3_proxy, tmpdir_watch):
    url = s3_server.unique_url()
    s3_proxy.inject("status", status=500, times=None, method="PUT", path="partNumber=2")
    with pytest.raises(RemoteWriteError) as caught:
        lazyh5.to_hdf5(
            url,
            lazy(rows=2816, cols=1024),
            storage_options=s3_server.storage_options(s3_proxy.url),
            upload_options={"chunksize": 5 * 2**20},
            progress=False,
        )
    assert url in str(caught.value)
    assert s3_proxy.count(method="PUT") >= 2  # the first part went up, the second failed
    assert s3_server.read(url) is None
    key = url.split("/", 3)[3]
    assert key not in s3_server.multipart_uploads()  # aborted, not left pending
    assert list(tmpdir_watch.iterdir()) == []


def test_failed_upload_keeps_the_old_object(s3_server, s3_proxy, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="lazyh5")
    url = s3_server.unique_url()
    options = s3_server.storage_options()
    lazyh5.to_hdf5(url, lazy(), storage_options=options, progress=False)
    before = s3_server.read(url)
    s3_proxy.inject("status", status=503, times=None, method="PUT")
    with pytest.raises(RemoteWriteError) as caught:
        lazyh5.to_hdf5(
            url,
            lazy() * 2,
            mode="w",
            storage_options=s3_server.storage_options(s3_proxy.url),
            progress=False,
        )
    assert s3_server.read(url) == before
    err = caught.value
    shown = str(err) + repr(err) + "".join(traceback.format_exception(err)) + caplog.text
    assert SECRET not in shown


def test_failed_computation_leaves_nothing(s3_server, tmpdir_watch):
    url = s3_server.unique_url()
    with pytest.raises(RuntimeError, match="block 2 failed"):
        lazyh5.to_hdf5(url, failing(), storage_options=s3_server.storage_options(), progress=False)
    assert s3_server.read(url) is None
    assert list(tmpdir_watch.iterdir()) == []


def test_existing_object_needs_mode_w(s3_server, tmp_path):
    url = s3_server.unique_url()
    options = s3_server.storage_options()
    lazyh5.to_hdf5(url, lazy(), storage_options=options, progress=False)
    for mode in ("w-", "x"):
        # refused before anything is computed: the failing blocks never run
        with pytest.raises(AlreadyExistsError, match="already exists; pass mode='w'") as caught:
            lazyh5.to_hdf5(url, failing(), mode=mode, storage_options=options)
        assert url in str(caught.value)
    lazyh5.to_hdf5(url, lazy() + 1, mode="w", storage_options=options, progress=False)
    np.testing.assert_array_equal(stored(s3_server, url, tmp_path)["x"], lazy()["x"] + 1)


def test_resume_is_refused_for_urls(s3_server):
    url = s3_server.unique_url()
    with pytest.raises(InvalidArgumentError, match="resume=True") as caught:
        lazyh5.to_hdf5(url, lazy(), resume=True, storage_options=s3_server.storage_options())
    assert url in str(caught.value)
    assert s3_server.read(url) is None


def test_create_refuses_urls_and_takes_file_urls(s3_server, tmp_path):
    url = s3_server.unique_url()
    with pytest.raises(InvalidArgumentError, match=r"lazyh5\.to_hdf5") as caught:
        lazyh5.create(url, {"x": ((10,), "f4")})
    assert url in str(caught.value)
    assert s3_server.read(url) is None
    ds = lazyh5.create(f"file://{tmp_path / 'new.h5'}", {"x": ((10,), "f4")})
    assert ds["x"].shape == (10,)
    ds.close()
    lazyh5.to_hdf5(f"file://{tmp_path / 'out.h5'}", lazy(), progress=False)
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["x"][()], lazy()["x"].values)


def test_in_place_write_to_a_remote_file_is_refused(s3_server, tmp_path):
    url = s3_server.unique_url()
    options = s3_server.storage_options()
    lazyh5.to_hdf5(url, lazy(), storage_options=options, progress=False)
    ds = lazyh5.open_dataset(url, storage_options=options)
    with pytest.raises(ReadOnlyError) as caught:
        ds["x"].h5[:2] = 0
    assert url in str(caught.value)
    ds.close()
    with pytest.raises(ReadOnlyError):
        lazyh5.open_dataset(url, storage_options=options, mode="r+")
    np.testing.assert_array_equal(stored(s3_server, url, tmp_path)["x"], lazy()["x"].values)
