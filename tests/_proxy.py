"""A fault-injecting HTTP reverse proxy on loopback, in front of the test servers.

Clients (s3fs, fsspec's HTTP file system) talk to :attr:`FaultProxy.url` as if it were
the server; the proxy forwards each request to the upstream server and, following the
faults scheduled with :meth:`FaultProxy.inject`, delays it, answers with an error
status, holds it unanswered, resets the connection mid-body or cuts the body short. It
counts the requests and the body bytes it sends, so tests and benchmarks can read them.

Written here rather than taken from a proxy package: the faults are made at the socket
level (an RST in the middle of a body, a body shorter than its Content-Length), which
general-purpose proxies exist to prevent.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: The kinds of fault :meth:`FaultProxy.inject` schedules.
FAULT_KINDS = ("latency", "status", "timeout", "reset", "truncate")

# Headers that describe one connection, not the message: not forwarded either way.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


@dataclass(frozen=True)
class Request:
    """One request the proxy received: ``range`` is its Range header (or None) and
    ``fault`` the kind of fault it got (or None)."""

    method: str
    path: str
    range: str | None
    fault: str | None


@dataclass
class Fault:
    """A scheduled fault; :meth:`FaultProxy.inject` makes them (see there)."""

    kind: str
    times: int | None = 1
    skip: int = 0
    status: int = 503
    delay: float = 0.02
    hold: float = 30.0
    match: Callable[[Request], bool] | None = None
    #: how many requests this fault has hit so far
    hits: int = 0
    _seen: int = field(default=0, repr=False)

    def _take(self, request: Request) -> bool:
        """Whether this fault hits ``request`` (called under the proxy's lock)."""
        if self.match is not None and not self.match(request):
            return False
        self._seen += 1
        if self._seen <= self.skip or (self.times is not None and self.hits >= self.times):
            return False
        self.hits += 1
        return True


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of ``upstream`` (``http://host:port``).

    Use it as a context manager (it stops, and drops its connections, on exit).
    ``latency`` (seconds) is added to every request, before it is forwarded.

    Examples
    --------
    >>> with FaultProxy("http://127.0.0.1:9") as proxy:  # doctest: +SKIP
    ...     proxy.inject("status", times=2, method="GET", ranged=True)
    """

    def __init__(self, upstream: str, *, latency: float = 0.0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.latency = latency
        self._faults: list[Fault] = []
        self._log: list[Request] = []
        self._bytes = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        # a short poll interval: stop() (at each test's end) returns within 50 ms
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving, release held requests and close every open connection."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)

    def inject(
        self,
        kind: str,
        *,
        times: int | None = 1,
        skip: int = 0,
        method: str | None = None,
        ranged: bool | None = None,
        path: str | None = None,
        status: int = 503,
        delay: float = 0.02,
        hold: float = 30.0,
    ) -> Fault:
        """Schedule a fault; returns it (its ``hits`` counts the requests it hit).

        ``kind`` is one of :data:`FAULT_KINDS`: ``latency`` delays the request by
        ``delay`` seconds, ``status`` answers ``status`` without asking upstream,
        ``timeout`` holds the request unanswered for ``hold`` seconds (or until the
        proxy stops) then closes the connection, ``reset`` sends the headers and half
        the body then resets the connection (RST), ``truncate`` sends the headers and
        half the body then closes the connection cleanly. It hits the matching requests
        (``method``, ``ranged``: whether a Range header is present, ``path``: a
        substring of the path; None matches any) after letting ``skip`` of them
        through, ``times`` of them (None: every one after that, a permanent fault).
        Faults are tried in the order they were scheduled; the first that hits wins.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}, expected one of {FAULT_KINDS}")

        def match(request: Request) -> bool:
            return (
                (method is None or request.method == method)
                and (ranged is None or (request.range is not None) == ranged)
                and (path is None or path in request.path)
            )

        fault = Fault(kind, times, skip, status, delay, hold, match)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Drop every scheduled fault (counts are kept)."""
        with self._lock:
            self._faults.clear()

    def reset_counts(self) -> None:
        """Forget the requests and bytes counted so far."""
        with self._lock:
            self._log.clear()
            self._bytes = 0

    @property
    def requests(self) -> list[Request]:
        """The requests received since the last :meth:`reset_counts`, in order."""
        with self._lock:
            return list(self._log)

    def count(self, method: str | None = None, ranged: bool | None = None) -> int:
        """How many requests (of ``method``; with a Range header if ``ranged``) arrived."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method)
            and (ranged is None or (r.range is not None) == ranged)
        )

    @property
    def bytes_sent(self) -> int:
        """Body bytes sent to clients since the last :meth:`reset_counts`."""
        with self._lock:
            return self._bytes

    def _arrive(self, method: str, path: str, range_: str | None) -> Fault | None:
        with self._lock:
            probe = Request(method, path, range_, None)
            fault = next((f for f in self._faults if f._take(probe)), None)
            self._log.append(Request(method, path, range_, fault and fault.kind))
            return fault

    def _sent(self, n: int) -> None:
        with self._lock:
            self._bytes += n


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_ProxyHandler):
        owner = proxy

    return Handler


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as clients use real stores
    timeout = 60  # an idle client connection ends after this
    owner: FaultProxy
    _upstream: http.client.HTTPConnection | None = None

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._sockets.add(self.connection)

    def finish(self) -> None:
        with self.owner._lock:
            self.owner._sockets.discard(self.connection)
        if self._upstream is not None:
            self._upstream.close()
        with contextlib.suppress(OSError):  # the connection was reset on purpose
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: tests read the counts instead

    def do_GET(self) -> None:
        self._serve()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        body = self._read_body()
        fault = self.owner._arrive(self.command, self.path, self.headers.get("Range"))
        delay = self.owner.latency + (fault.delay if fault and fault.kind == "latency" else 0)
        if delay and self.owner._stopping.wait(delay):
            self.close_connection = True
            return
        kind = fault.kind if fault else None
        if kind == "status":
            return self._answer(fault.status, [("Content-Type", "text/plain")], b"injected\n")
        if kind == "timeout":
            self.owner._stopping.wait(fault.hold)
            self.close_connection = True
            return
        status, reason, headers, data = self._forward(body)
        if kind in ("reset", "truncate") and len(data) > 1:
            return self._cut(status, reason, headers, data, reset=kind == "reset")
        self._answer(status, headers, data, reason)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        try:
            self._upstream.request(self.command, self.path, body=body or None, headers=headers)
            resp = self._upstream.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self._upstream.close()  # a stale keep-alive connection: one fresh try
            self._upstream.request(self.command, self.path, body=body or None, headers=headers)
            resp = self._upstream.getresponse()
            data = resp.read()
        kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
        if self.command == "HEAD":  # no body, but the length of the one a GET would get
            kept.append(("Content-Length", resp.getheader("Content-Length", "0")))
        return resp.status, resp.reason, kept, data

    def _answer(
        self, status: int, headers: list[tuple[str, str]], data: bytes, reason: str | None = None
    ) -> None:
        self.send_response_only(status, reason)
        for key, value in headers:
            self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
            self.owner._sent(len(data))

    def _cut(
        self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes, reset: bool
    ) -> None:
        self.send_response_only(status, reason)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        half = data[: len(data) // 2]
        self.wfile.write(half)
        self.wfile.flush()
        self.owner._sent(len(half))
        self.close_connection = True
        if reset:  # SO_LINGER with a zero timeout: close() sends RST, not FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        else:
            self.connection.shutdown(socket.SHUT_WR)
