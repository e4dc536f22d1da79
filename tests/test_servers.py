"""The loopback servers of the remote-storage tests (tests/_servers.py, tests/_proxy.py):
Range answers, S3 through s3fs, and the proxy's faults arriving as scheduled."""

from __future__ import annotations

import http.client
import socket
from urllib.parse import urlsplit

import fsspec
import pytest

from tests._proxy import FaultProxy

DATA = bytes(range(256)) * 64  # 16 KiB, every offset distinguishable in 256-byte steps


@pytest.fixture
def served(http_server, tmp_path):
    """The name of a 16 KiB file in the HTTP server's folder."""
    (tmp_path / "data.bin").write_bytes(DATA)
    return http_server.add(tmp_path / "data.bin").rsplit("/", 1)[1]


def get(base: str, name: str, range_: str | None = None, method: str = "GET", timeout=30):
    """One request with http.client; returns (status, headers, body)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, f"/{name}", headers={"Range": range_} if range_ else {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_http_server_answers_range_requests_with_206(http_server, served):
    status, headers, body = get(http_server.base, served, "bytes=1000-1999")
    assert status == 206
    assert body == DATA[1000:2000]
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(DATA)}"
    status, headers, body = get(http_server.base, served, method="HEAD")
    assert (status, int(headers["Content-Length"]), body) == (200, len(DATA), b"")
    assert get(http_server.base, "missing.bin")[0] == 404


def test_fsspec_reads_ranges_through_the_proxy(http_server, http_proxy, served):
    fs = fsspec.filesystem("http", skip_instance_cache=True)
    url = f"{http_proxy.url}/{served}"
    assert fs.size(url) == len(DATA)
    assert fs.cat_file(url, start=300, end=700) == DATA[300:700]
    with fs.open(url, block_size=1024) as f:
        f.seek(5000)
        assert f.read(100) == DATA[5000:5100]
    assert http_proxy.count(method="GET", ranged=True) >= 2
    assert http_proxy.bytes_sent >= 400 + 100


def test_s3_server_round_trip_through_s3fs_and_the_proxy(s3_server, s3_proxy, tmp_path):
    (tmp_path / "data.bin").write_bytes(DATA)
    url = s3_server.upload(tmp_path / "data.bin")
    fs = fsspec.filesystem("s3", **s3_server.storage_options(s3_proxy.url))
    assert fs.cat_file(url, start=256, end=512) == DATA[256:512]
    ranged = [r for r in s3_proxy.requests if r.range]
    assert ranged and ranged[-1].range == "bytes=256-511"
    # a request with a body (PUT) is forwarded whole
    target = s3_server.unique_url("put.bin")
    fs.pipe_file(target, DATA)
    assert s3_server.read(target) == DATA
    assert s3_proxy.count(method="PUT") == 1


def test_status_faults_hit_the_scheduled_requests_only(http_proxy, served):
    fault = http_proxy.inject("status", status=503, times=2, skip=1, ranged=True)
    assert get(http_proxy.url, served, method="HEAD")[0] == 200  # not ranged: untouched
    answers = [get(http_proxy.url, served, "bytes=0-9") for _ in range(4)]
    assert [a[0] for a in answers] == [206, 503, 503, 206]
    assert answers[3][2] == DATA[:10]
    assert fault.hits == 2
    assert [r.fault for r in http_proxy.requests] == [None, None, "status", "status", None]


def test_permanent_fault_hits_every_matching_request(http_proxy, served):
    http_proxy.inject("status", status=500, times=None, method="GET")
    assert [get(http_proxy.url, served, "bytes=0-9")[0] for _ in range(3)] == [500] * 3
    http_proxy.clear()
    assert get(http_proxy.url, served, "bytes=0-9")[0] == 206


@pytest.mark.parametrize("kind", ["reset", "truncate"])
def test_cut_bodies_arrive_short(http_proxy, served, kind):
    http_proxy.inject(kind)
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)) as caught:
        get(http_proxy.url, served, "bytes=0-1999")
    if isinstance(caught.value, http.client.IncompleteRead):
        assert caught.value.partial == DATA[: len(caught.value.partial)]
        assert len(caught.value.partial) < 2000
    assert http_proxy.requests[-1].fault == kind
    assert http_proxy.bytes_sent == 1000
    assert get(http_proxy.url, served, "bytes=0-1999")[2] == DATA[:2000]  # once only


def test_timeout_fault_holds_the_answer_until_the_client_gives_up(http_proxy, served):
    http_proxy.inject("timeout", hold=60)
    with pytest.raises((TimeoutError, socket.timeout)):
        get(http_proxy.url, served, "bytes=0-9", timeout=0.5)
    assert get(http_proxy.url, served, "bytes=0-9")[2] == DATA[:10]


def test_latency_fault_answers_correctly(http_proxy, served):
    http_proxy.inject("latency", delay=0.01, times=None)
    assert get(http_proxy.url, served, "bytes=20-29")[2] == DATA[20:30]
    assert http_proxy.requests[-1].fault == "latency"
    http_proxy.reset_counts()
    assert (http_proxy.requests, http_proxy.bytes_sent) == ([], 0)


def test_stopping_the_proxy_releases_held_requests(http_server, served):
    with FaultProxy(http_server.base) as proxy:
        proxy.inject("timeout", hold=600)
        parts = urlsplit(proxy.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        conn.request("GET", f"/{served}")
    # the proxy stopped (the with block ended) and closed the held connection
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        conn.getresponse()
    conn.close()


def test_unknown_fault_kind_is_refused(http_proxy):
    with pytest.raises(ValueError, match="unknown fault kind 'boom'"):
        http_proxy.inject("boom")
