"""The HTTP/1.1 client under `http_fetch`: one exchange at a time per connection, keep-alive
connections cached per origin, responses parsed by llhttp (httptools).

Why not httpx's client stack: a waiting request's CPU is what decides how many
fetches a worker overlaps (`bench/waiting.py`), and most of it went to the
client. httpcore's pool scans every request and connection it holds on each
request and again on each close (thousands of checks per request with a
hundred fetches in flight), and h11 parses a response in Python. Here a request
takes the most recently used idle connection to its origin or opens one, its
head is written in one call, and the response is parsed in C.

What stays as it was: every connection is opened by `egress.GuardedBackend`,
which checks each address against the node's rules where the socket is opened
and keeps every read and write inside the fetch's deadline; TLS verifies the
URL's host name. Header names and values are checked before they are written
(a guest cannot split a request with CR or LF). There is no cap on connections
in use: each belongs to a fetch in progress, and a worker runs at most one
fetch per request thread (`--threads`); idle ones are capped at `max_idle`.
"""

from __future__ import annotations

import contextlib
import re
import ssl
import threading
import time
from dataclasses import dataclass, field

import httpcore
import httptools

from edgefn.edge.capabilities.errors import CallFailed, QuotaExceeded

# The origin as a connection serves it: scheme, host, port.
Origin = tuple[str, str, int]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
# Methods a request may be sent again for when a kept-alive connection turns out to have
# been closed by the peer before any byte of the answer (RFC 9110 section 9.2.2).
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_READ_SIZE = 64 * 1024


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(slots=True)
class _Parsed:
    """What the parser has seen of one response (its callbacks)."""

    parser: httptools.HttpResponseParser | None = None
    cap: int = 0
    head: bool = False  # the answer to a HEAD: its declared length has no body behind it
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    headers_done: bool = False
    done: bool = False
    keep_alive: bool = False
    extra: bool = False  # bytes after the response: the connection is not reused

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self.headers = []
            return
        self.headers_done = True
        if not self.head:
            for name, value in self.headers:
                if name.lower() == b"content-length" and value.strip().isdigit() \
                        and int(value) > self.cap:
                    raise QuotaExceeded(f"response of {int(value)} bytes is over {self.cap}")

    def on_body(self, chunk: bytes) -> None:
        self.body += chunk
        if len(self.body) > self.cap:
            raise QuotaExceeded(f"response is over {self.cap} bytes")

    def on_message_complete(self) -> None:
        if not self.headers_done:
            return  # the end of an interim answer
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()
        self.done = True


class _Connection:
    __slots__ = ("expires", "origin", "stream")

    def __init__(self, origin: Origin, stream: httpcore.NetworkStream) -> None:
        self.origin = origin
        self.stream = stream
        self.expires = 0.0

    def usable(self) -> bool:
        # A kept-alive connection the peer closed (or wrote to unasked) reads as readable.
        return time.monotonic() < self.expires and not self.stream.get_extra_info("is_readable")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.stream.close()


class Http1Client:
    """Thread-safe; one per function version (its connections are its own)."""

    def __init__(
        self,
        backend: httpcore.NetworkBackend,
        ssl_context: ssl.SSLContext,
        *,
        max_idle: int = 128,
        keepalive_s: float = 30.0,
    ) -> None:
        self._backend = backend
        self._ssl_context = ssl_context
        self.max_idle = max_idle
        self._keepalive_s = keepalive_s
        self._lock = threading.Lock()
        self._idle: dict[Origin, list[_Connection]] = {}
        self._idle_count = 0
        self._closed = False
        self._next_sweep = time.monotonic() + keepalive_s
        self.opened = 0  # connections opened, for tests and figures

    @property
    def idle_count(self) -> int:
        return self._idle_count

    def exchange(
        self,
        method: str,
        origin: Origin,
        target: bytes,
        host: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        max_body: int,
    ) -> Response:
        """One request and its whole response (its body at most `max_body` bytes, else
        `QuotaExceeded`). Reads and writes end by the caller's deadline
        (`GuardedBackend.deadline`); network errors are httpcore's exceptions."""
        head = _head(method, target, host, headers, body)
        while True:
            connection = self._take(origin)
            reused = connection is not None
            if connection is None:
                connection = self._open(origin)
            try:
                connection.stream.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    connection.stream.write(body)
                response, parsed = _read_response(connection.stream, method, max_body)
            except (httpcore.ReadError, httpcore.WriteError, _Unanswered) as exc:
                connection.close()
                unanswered = isinstance(exc, _Unanswered | httpcore.WriteError)
                if reused and unanswered and method in _IDEMPOTENT:
                    continue  # closed by the peer while idle: once more on a new connection
                if isinstance(exc, _Unanswered):
                    raise CallFailed("the server closed the connection without answering") from None
                raise
            except BaseException:
                connection.close()
                raise
            if parsed.keep_alive and not parsed.extra and method != "HEAD":
                self._give_back(connection)
            else:
                connection.close()
            return response

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [c for stack in self._idle.values() for c in stack]
            self._idle.clear()
            self._idle_count = 0
        for connection in idle:
            connection.close()

    def _open(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        stream = self._backend.connect_tcp(host, port)
        if scheme == "https":
            try:
                stream = stream.start_tls(self._ssl_context, server_hostname=host)
            except BaseException:
                stream.close()
                raise
        self.opened += 1
        return _Connection(origin, stream)

    def _take(self, origin: Origin) -> _Connection | None:
        while True:
            with self._lock:
                stack = self._idle.get(origin)
                if not stack:
                    return None
                connection = stack.pop()
                self._idle_count -= 1
            if connection.usable():  # a poll: outside the lock
                return connection
            connection.close()

    def _give_back(self, connection: _Connection) -> None:
        connection.expires = time.monotonic() + self._keepalive_s
        stale: list[_Connection] = []
        with self._lock:
            if not self._closed and self._idle_count < self.max_idle:
                self._idle.setdefault(connection.origin, []).append(connection)
                self._idle_count += 1
                connection = None  # type: ignore[assignment]
            if time.monotonic() >= self._next_sweep:
                stale = self._sweep()
        for old in stale:
            old.close()
        if connection is not None:
            connection.close()

    def _sweep(self) -> list[_Connection]:
        """Idle connections past their keep-alive, taken out (under the lock): an origin
        no longer fetched would otherwise hold its sockets until the function unloads."""
        now = time.monotonic()
        self._next_sweep = now + self._keepalive_s
        stale: list[_Connection] = []
        for origin in list(self._idle):
            kept = [c for c in self._idle[origin] if c.expires > now]
            stale += [c for c in self._idle[origin] if c.expires <= now]
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]
        self._idle_count -= len(stale)
        return stale


class _Unanswered(Exception):
    """The connection ended before any byte of a response."""


def _head(
    method: str, target: bytes, host: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (method.encode("ascii"), target, host)]
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise CallFailed(f"invalid header name {name[:64]!r}")
        if _BAD_VALUE.search(value):
            raise CallFailed(f"invalid value for header {name.decode('ascii')!r}")
        lines.append(b"%s: %s\r\n" % (name, value))
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"\r\n")
    return b"".join(lines)


def _read_response(
    stream: httpcore.NetworkStream, method: str, max_body: int
) -> tuple[Response, _Parsed]:
    parsed = _Parsed(cap=max_body, head=method == "HEAD")
    parser = httptools.HttpResponseParser(parsed)
    parsed.parser = parser
    received = False
    while True:
        data = stream.read(_READ_SIZE)
        if not data:
            if not received:
                raise _Unanswered
            if parsed.headers_done and not parsed.done and _delimited_by_close(parsed.headers):
                break  # a body that ends with the connection
            if parsed.headers_done and method == "HEAD":
                break
            raise CallFailed("the connection closed in the middle of the response")
        received = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, QuotaExceeded):
                raise cause from None
            raise CallFailed(f"malformed response: {exc}") from None
        except httptools.HttpParserUpgrade:
            raise CallFailed("the server switched protocols") from None
        except httptools.HttpParserError as exc:
            raise CallFailed(f"malformed response: {exc}") from None
        if parsed.done or (parsed.headers_done and method == "HEAD"):
            break
    status = parser.get_status_code()
    return Response(status, parsed.headers, bytes(parsed.body)), parsed


def _delimited_by_close(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, _ in headers:
        lower = name.lower()
        if lower in (b"content-length", b"transfer-encoding"):
            return False
    return True
