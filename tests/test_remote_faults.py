"""The fault matrix of remote reads: faults injected by a proxy on loopback
(tests/_proxy.py) in front of real S3 API and HTTP servers (tests/_servers.py).

Each row is a fault kind, where it hits (the metadata read at open, a chunk read during
a compute, a read for a loader batch) and whether it is transient (it hits a few
requests, fewer than the retries) or permanent (every matching request). Transient
faults are retried and the values equal h5py's on the local copy; permanent ones raise
:class:`lazyh5.errors.RemoteReadError` naming the URL and the byte range, in bounded
time. A truncated object is a :class:`lazyh5.errors.CorruptFileError`, and the
credentials never appear in errors, reprs, logs or pickles.
"""

from __future__ import annotations

import logging
import pickle
import re
import threading
import traceback
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5.errors import CorruptFileError, RemoteReadError
from tests._servers import SECRET

pytestmark = pytest.mark.usefixtures("close_leftover_files")

N = 1024
KINDS = ("status", "timeout", "reset", "truncate")
WHERE = ("open", "compute", "loader")
# A transient fault hits this many requests (fewer than RETRIES); a permanent one all.
TRANSIENT = 2
RETRIES = 3
# Generous: a hang guard, not a speed limit (every request times out after TIMEOUT s).
TIMEOUT = 2.0
BOUND = 120
# botocore would retry a 5xx itself (3 attempts, with its own backoff): off, so that
# the retries seen are lazyh5's and a permanent fault fails in (RETRIES + 1) requests
NO_CLIENT_RETRY = {"config_kwargs": {"retries": {"max_attempts": 1}}}


def _rows() -> list[tuple[str, str, str, bool]]:
    rows = [("s3", k, w, p) for k in KINDS for w in WHERE for p in (False, True)]
    # fsspec's HTTP client retries nothing itself (s3fs retries broken transfers):
    # there, every recovery is lazyh5's own
    rows += [("http", k, w, p) for k in KINDS for w in WHERE[:2] for p in (False, True)]
    return rows


def write_rows(path) -> dict[str, np.ndarray]:
    """A file with 64 KiB chunks of random floats, a gzip-compressed variable and
    ``label[i] == i`` (so a shuffled batch says which rows it holds); returns the values."""
    rng = np.random.default_rng(0)
    values = {
        "image": rng.random((N, 32, 32), dtype=np.float32),
        "label": np.arange(N),
        "packed": rng.random((N, 64), dtype=np.float32),
    }
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=values["image"], chunks=(16, 32, 32))
        f.create_dataset("label", data=values["label"], chunks=(256,))
        f.create_dataset(
            "packed", data=values["packed"], chunks=(128, 64), compression="gzip", shuffle=True
        )
    return values


@pytest.fixture(scope="module")
def source(tmp_path_factory, s3_server, http_server):
    """The file once, locally (its values as h5py reads them), on S3 and over HTTP."""
    path = tmp_path_factory.mktemp("faults") / "rows.h5"
    write_rows(path)
    with h5py.File(path, "r") as f:
        values = {name: f[name][()] for name in f}
    return {
        "path": path,
        "values": values,
        "s3": s3_server.upload(path),
        "http": http_server.add(path).rsplit("/", 1)[1],
    }


@pytest.fixture
def retries():
    with lazyh5.set_options(remote_retries=RETRIES, remote_backoff=0.01, remote_timeout=TIMEOUT):
        yield


def _target(backend, source, s3_server, s3_proxy, http_proxy):
    """(url, storage_options, proxy) of the file through a fresh proxy."""
    if backend == "s3":
        return (
            source["s3"],
            {**s3_server.storage_options(s3_proxy.url), **NO_CLIENT_RETRY},
            s3_proxy,
        )
    return f"{http_proxy.url}/{source['http']}", {}, http_proxy


def bounded(fn: Callable[[], Any], limit: float = BOUND) -> Any:
    """``fn()``, failing the test if it has not returned after ``limit`` seconds (a
    hang guard: retries and timeouts must end)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as err:
            out["error"] = err

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        pytest.fail(f"still running after {limit} s: a fault was retried without end")
    if "error" in out:
        raise out["error"]
    return out["value"]


def epoch(ds) -> tuple[np.ndarray, np.ndarray]:
    """One shuffled epoch of ``image``/``label`` batches, concatenated."""
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=64, seed=0)
    xs, ys = zip(*[(x, y) for x, y in loader], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def run_case(where: str, url: str, options: dict, proxy, fault_args: dict):
    """Open ``url`` and read it all, with the fault scheduled just before ``where``;
    returns the loaded dataset, or the rows of an epoch for ``"loader"``."""
    open_ = lambda: lazyh5.open_dataset(url, storage_options=options)  # noqa: E731
    if where == "open":
        fault = proxy.inject(**fault_args)
        ds = bounded(open_)
    else:
        ds = open_()
        fault = proxy.inject(**fault_args)
    try:
        if where == "loader":
            return fault, bounded(lambda: epoch(ds))
        return fault, bounded(lambda: ds.load())
    finally:
        ds.close()


@pytest.mark.parametrize(("backend", "kind", "where", "permanent"), _rows())
def test_fault_matrix(
    backend, kind, where, permanent, source, s3_server, s3_proxy, http_proxy, retries
):
    url, options, proxy = _target(backend, source, s3_server, s3_proxy, http_proxy)
    # skip: the first chunk reads of a compute pass; the open is hit from its first read
    fault_args = dict(
        kind=kind,
        method="GET",
        ranged=True,
        times=None if permanent else TRANSIENT,
        skip=0 if where == "open" else 1,
        hold=10 * BOUND,  # a timeout is never answered (until the proxy stops)
    )
    expected = source["values"]
    if permanent:
        with pytest.raises(RemoteReadError) as caught:
            run_case(where, url, options, proxy, fault_args)
        message = str(caught.value)
        assert url in message, message
        assert re.search(r"bytes=\d+-\d+", message), message
        assert proxy.requests[-1].fault == kind
        return
    fault, got = run_case(where, url, options, proxy, fault_args)
    assert fault.hits == TRANSIENT, "the fault hit no request: the row tests nothing"
    if where == "loader":
        x, y = got
        assert sorted(y.tolist()) == list(range(N))
        np.testing.assert_array_equal(x, expected["image"][y])
    else:
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name].values, value, err_msg=name)


@pytest.mark.parametrize("backend", ["s3", "http"])
def test_truncated_object_is_a_corrupt_file(
    backend, source, s3_server, http_server, tmp_path, retries
):
    cut = tmp_path / "cut.h5"
    data = source["path"].read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    if backend == "s3":
        url, options = s3_server.upload(cut), s3_server.storage_options()
    else:
        url, options = http_server.add(cut), {}

    def read() -> None:
        with lazyh5.open_dataset(url, storage_options=options) as ds:
            ds.load()

    with pytest.raises(CorruptFileError) as caught:
        bounded(read)
    assert url in str(caught.value)


def _leaks(err: BaseException | None, *objects: Any) -> list[str]:
    """Where the secret shows: the error's message, repr and traceback (with its
    causes), the objects' reprs and pickles."""
    found = []
    if err is not None:
        texts = {"str": str(err), "repr": repr(err), "traceback": traceback.format_exception(err)}
        found += [where for where, text in texts.items() if SECRET in "".join(text)]
    for i, obj in enumerate(objects):
        if SECRET in repr(obj):
            found.append(f"repr of object {i}")
        if SECRET.encode() in pickle.dumps(obj):
            found.append(f"pickle of object {i}")
    return found


def test_s3_credentials_never_show(source, s3_server, s3_proxy, retries, caplog):
    caplog.set_level(logging.DEBUG, logger="lazyh5")
    options = s3_server.storage_options(s3_proxy.url)
    ds = lazyh5.open_dataset(source["s3"], storage_options=options)
    assert SECRET in repr(options)  # the test would see it
    s3_proxy.inject("status", status=500, times=None, method="GET", ranged=True)
    with pytest.raises(RemoteReadError) as caught:
        bounded(lambda: ds["image"].values)
    assert _leaks(caught.value, ds, ds["image"], ds["image"].data, ds.encoding) == []
    assert SECRET not in caplog.text
    ds.close()


def test_password_in_an_http_url_never_shows(source, http_proxy, retries, caplog):
    caplog.set_level(logging.DEBUG, logger="lazyh5")
    url = f"http://reader:{SECRET}@{http_proxy.url.removeprefix('http://')}/{source['http']}"
    ds = lazyh5.open_dataset(url)
    np.testing.assert_array_equal(ds["label"].values, source["values"]["label"])
    http_proxy.inject("reset", times=None, method="GET", ranged=True)
    with pytest.raises(RemoteReadError) as caught:
        bounded(lambda: ds["image"].values)
    assert source["http"] in str(caught.value)
    assert _leaks(caught.value, ds, ds["image"].data) == []
    assert SECRET not in caplog.text
    ds.close()
