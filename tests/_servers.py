"""Real servers on loopback for the remote-storage tests, benchmarks and examples.

* :func:`start_s3_server`: an S3 API server (moto's server mode, as s3fs's own tests use),
  yielding an :class:`S3Server` (endpoint, s3fs ``storage_options``, uploads);
* :func:`start_http_server`: an HTTP server with ``Range`` support (werkzeug's
  ``send_from_directory``: 206 answers, Content-Length, HEAD) serving a folder;
* :class:`tests._proxy.FaultProxy`: a fault-injecting proxy in front of either.

Each binds 127.0.0.1 on a free port and stops when its ``with`` block (or fixture) ends.
The pytest fixtures at the end are registered in ``tests/conftest.py``: ``s3_server`` and
``http_server`` (one per session), ``s3_proxy`` and ``http_proxy`` (one per test, so
faults and counts never carry over).
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests._proxy import FaultProxy

#: Credentials the test servers accept. The secret is distinctive so that tests can
#: search error messages, reprs, logs and pickles for it.
KEY = "lazyh5-test-key"
SECRET = "lazyh5-secret-7f3c9a1e"
REGION = "us-east-1"
BUCKET = "lazyh5"


def s3_storage_options(endpoint: str) -> dict:
    """s3fs ``storage_options`` for the S3 API at ``endpoint`` (the server or a proxy)."""
    return {
        "key": KEY,
        "secret": SECRET,
        "endpoint_url": endpoint,
        "client_kwargs": {"region_name": REGION},
    }


class S3Server:
    """A running S3 API server: ``endpoint`` is its ``http://127.0.0.1:PORT`` URL."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._buckets: set[str] = set()
        self._lock = threading.Lock()

    def storage_options(self, endpoint: str | None = None) -> dict:
        """s3fs options for this server, or for ``endpoint`` (a proxy in front of it)."""
        return s3_storage_options(endpoint or self.endpoint)

    def client(self):
        """A boto3 S3 client talking to the server directly (never through a proxy)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name=REGION,
        )

    def bucket(self, name: str = BUCKET) -> str:
        """Create the bucket ``name`` if this helper has not yet; returns the name."""
        with self._lock:
            if name not in self._buckets:
                self.client().create_bucket(Bucket=name)
                self._buckets.add(name)
        return name

    def upload(self, path: Path | str, key: str | None = None, bucket: str = BUCKET) -> str:
        """Upload the local file ``path`` as ``key`` (default: a unique name ending in the
        file's name); returns its ``s3://bucket/key`` URL."""
        path = Path(path)
        key = key or f"{uuid.uuid4().hex[:12]}/{path.name}"
        self.client().upload_file(str(path), self.bucket(bucket), key)
        return f"s3://{bucket}/{key}"

    def unique_url(self, name: str = "x.h5", bucket: str = BUCKET) -> str:
        """A fresh ``s3://`` URL in an existing bucket, with nothing stored at it yet."""
        return f"s3://{self.bucket(bucket)}/{uuid.uuid4().hex[:12]}/{name}"

    def read(self, url: str) -> bytes | None:
        """The bytes stored at ``s3://bucket/key``, or None if there is no such object."""
        bucket, _, key = url.removeprefix("s3://").partition("/")
        client = self.client()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    def keys(self, prefix: str = "", bucket: str = BUCKET) -> list[str]:
        """Keys under ``prefix`` in ``bucket`` (to check that nothing else was left)."""
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket(bucket), Prefix=prefix)
        )
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def multipart_uploads(self, bucket: str = BUCKET) -> list[str]:
        """Keys of the multipart uploads begun and neither completed nor aborted."""
        answer = self.client().list_multipart_uploads(Bucket=self.bucket(bucket))
        return [u["Key"] for u in answer.get("Uploads", [])]


@contextmanager
def start_s3_server() -> Iterator[S3Server]:
    """An S3 API server (moto) on 127.0.0.1, on a free port, for the ``with`` block."""
    from moto.server import ThreadedMotoServer

    # werkzeug (under moto) logs every request at INFO level to stderr by default.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()
        server._server.server_close()  # stop() leaves the listening socket open


class HTTPServer:
    """A running HTTP server serving the folder ``root`` at ``base`` (``http://...:PORT``)."""

    def __init__(self, root: Path, base: str) -> None:
        self.root = root
        self.base = base

    def url(self, name: str) -> str:
        """The URL of ``root / name``."""
        return f"{self.base}/{name}"

    def add(self, path: Path | str, name: str | None = None) -> str:
        """Copy the local file ``path`` into the served folder (as ``name``, default a
        unique name ending in the file's name); returns its URL."""
        path = Path(path)
        name = name or f"{uuid.uuid4().hex[:12]}-{path.name}"
        shutil.copyfile(path, self.root / name)
        return self.url(name)


@contextmanager
def start_http_server(root: Path | str) -> Iterator[HTTPServer]:
    """An HTTP server with ``Range`` support on 127.0.0.1 serving ``root``.

    werkzeug (a dependency of moto's server mode) does the HTTP: its ``send_file``
    answers Range requests with 206 and Content-Range, HEAD with Content-Length.
    """
    from werkzeug.exceptions import NotFound
    from werkzeug.serving import WSGIRequestHandler, make_server
    from werkzeug.utils import send_from_directory

    root = Path(root)

    def app(environ, start_response):
        try:
            response = send_from_directory(root, environ["PATH_INFO"].lstrip("/"), environ)
        except NotFound as error:
            response = error
        return response(environ, start_response)

    class Quiet(WSGIRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive connections, as real servers

        def log_request(self, *args: object) -> None:
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HTTPServer(root, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- pytest fixtures (registered in tests/conftest.py) ---


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """An S3 API server on loopback for the whole session (tests use unique keys)."""
    pytest.importorskip("moto.server", reason="needs moto[server] (the `test` extra)")
    with start_s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def http_server(tmp_path_factory) -> Iterator[HTTPServer]:
    """An HTTP server with Range support serving a temporary folder, for the session."""
    with start_http_server(tmp_path_factory.mktemp("http-root")) as server:
        yield server


@pytest.fixture
def s3_proxy(s3_server) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of ``s3_server``, for one test; s3fs options
    through it: ``s3_server.storage_options(s3_proxy.url)``."""
    with FaultProxy(s3_server.endpoint) as proxy:
        yield proxy


@pytest.fixture
def http_proxy(http_server) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of ``http_server``, for one test (the URL of
    ``name`` through it: ``f"{http_proxy.url}/{name}"``)."""
    with FaultProxy(http_server.base) as proxy:
        yield proxy
