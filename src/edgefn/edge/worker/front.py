"""The edge's HTTP/1.1 front: one asyncio protocol per connection, parsed by httptools.

A request is read entirely on the event loop (headers, then the body, each
within its deadline), so a client that trickles bytes holds a socket and a
buffer, never a request thread. Only a complete request goes to the runtime:
on the event loop itself when its function runs there (short guests that cannot
block, dispatch.py), in a green task on the loop when its guest is suspended while
it waits in a host call (edge/green.py), else on an elastic pool of request
threads (host functions are synchronous and may wait). While it runs, its
connection is not read.
Deadlines are checked by one sweep per worker instead of a timer per request:
the hot path only stores a float.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http
import logging
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from io import BytesIO
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote_to_bytes

import httptools

from edgefn import native
from edgefn.edge import green
from edgefn.edge.errors import (
    BadRequest,
    EdgeError,
    HeadersTooLarge,
    NodeOverloaded,
    RequestTimeout,
    RequestTooLarge,
)
from edgefn.edge.worker.exchange import HttpRequest, HttpResponse
from edgefn.edge.worker.runtime import Suspended, error_response

if TYPE_CHECKING:
    from edgefn.edge.settings import EdgeSettings
    from edgefn.edge.worker.limiter import ClientLimiter
    from edgefn.edge.worker.runtime import Routed, Runtime

log = logging.getLogger("edgefn.edge.worker.front")

_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in http.HTTPStatus}

# Connection phases; the deadline of each is `_Connection.deadline`.
_IDLE, _HEAD, _BODY, _RUNNING, _WRITING, _CLOSING = range(6)


@dataclass(frozen=True, slots=True)
class FrontLimits:
    """What a client may take of a worker: time per phase, header bytes, waiting requests."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_timeout_s: float = 5.0
    max_header_bytes: int = 64 * 1024
    # Complete requests waiting for or holding a request thread; past it, 503 at once.
    max_pending_requests: int = 1024

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> FrontLimits:
        return cls(
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            keepalive_timeout_s=settings.keepalive_timeout_s,
            max_pending_requests=settings.max_pending_requests,
        )


_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def _request_path(raw: bytes) -> str:
    """The path the runtime routes and the guest sees: percent-escapes normalised, as before."""
    if not raw:
        return "/"
    if b"%" not in raw and raw.isascii() and b" " not in raw:
        return raw.decode("ascii")
    return quote(unquote_to_bytes(raw), safe=_PATH_SAFE)


def _status_line(status: int) -> bytes:
    return _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Status\r\n".encode()


class _Date:
    """The `date` header, formatted once a second rather than once a response."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def header(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._value


_date = _Date()


def _refuse(exc: EdgeError) -> HttpResponse:
    """An answer the front gives itself, in the runtime's error shape with a fresh request id."""
    return error_response(exc, f"{random.getrandbits(128):032x}")


def _too_large(limit: int) -> HttpResponse:
    return _refuse(RequestTooLarge(f"request body over the limit of {limit} bytes"))


_HTTP1 = native.part("edgefn.edge.worker._http1")
_read_native = _HTTP1 and _HTTP1.parse_request
_ANSWER = native.part("edgefn.edge.worker._answer")
_serialize_native = _ANSWER and _ANSWER.serialize


def serialize(resp: HttpResponse, *, head_only: bool, keep_alive: bool) -> bytes:
    """The answer on the wire: `_answer.c`'s where it was built, else Python's."""
    if _serialize_native is not None:
        out = _serialize_native(_STATUS_LINES.get(resp.status) or _status_line(resp.status),
                                _date.header(), resp.headers, resp.body, head_only,
                                keep_alive)
        if out is not None:
            return out
    return serialize_py(resp, head_only=head_only, keep_alive=keep_alive)


def serialize_py(resp: HttpResponse, *, head_only: bool, keep_alive: bool) -> bytes:
    """The answer of record, which `_answer.c` must match byte for byte."""
    body = resp.body
    # The header lines encoded at once, not one `encode` a header.
    head = "".join([f"{name}: {value}\r\n" for name, value in resp.headers]).encode("latin-1")
    end = b"content-length: %d\r\n\r\n" if keep_alive else (
        b"content-length: %d\r\nconnection: close\r\n\r\n")
    return b"".join((_STATUS_LINES.get(resp.status) or _status_line(resp.status),
                     _date.header(), head, end % len(body), b"" if head_only else body))


class RequestPool:
    """Threads running `Runtime.handle`; each answer goes back to the event loop.

    Elastic: a thread is started when a request finds none idle, up to `threads`,
    and one idle for `idle_s` ends, down to `spare`. Functions that wait (in
    `http_fetch`, KV) hold a thread each while they wait, without the GIL, so
    a hundred waiting requests need a hundred threads; at rest a worker keeps
    `spare`.

    `blocking` runs, for requests in green tasks, the host calls that have no
    non-blocking form (KV, secrets; `green.run_blocking`).
    """

    def __init__(self, runtime: Runtime, loop: asyncio.AbstractEventLoop, threads: int, *,
                 spare: int = 2, idle_s: float = 30.0, blocking_threads: int = 16) -> None:
        self.runtime = runtime
        self.blocking = concurrent.futures.ThreadPoolExecutor(
            min(threads, blocking_threads), thread_name_prefix="edgefn-blocking")
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[HttpRequest, _Connection] | None] = (
            queue.SimpleQueue())
        self.max_threads = threads
        self._spare = min(spare, threads)
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._started = 0  # threads started and not ended
        self._idle = 0  # threads waiting for a request
        self._backlog = 0  # requests submitted and not yet taken
        self._threads: list[threading.Thread] = []
        for _ in range(self._spare):
            self._start()

    @property
    def threads(self) -> int:
        return self._started

    def _start(self) -> None:
        # Called with the lock held, or before any thread runs.
        self._started += 1
        t = threading.Thread(target=self._run, name=f"edgefn-req-{len(self._threads)}",
                             daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def submit(self, req: HttpRequest, conn: _Connection) -> None:
        with self._lock:
            self._backlog += 1
            if self._backlog > self._idle and self._started < self.max_threads:
                self._start()
        self._queue.put((req, conn))

    def _take(self) -> tuple[HttpRequest, _Connection] | None:
        """The next request; None when this thread should end."""
        while True:
            with self._lock:
                self._idle += 1
            try:
                item = self._queue.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._started > self._spare and not self._backlog:
                        self._started -= 1
                        return None
                continue
            with self._lock:
                self._idle -= 1
                if item is not None:
                    self._backlog -= 1
                else:
                    self._started -= 1
            return item

    def _run(self) -> None:
        handle = self.runtime.handle
        call_back = self._loop.call_soon_threadsafe
        while (item := self._take()) is not None:
            req, conn = item
            try:
                resp = handle(req)
            except Exception:
                log.exception("request to %s%s failed in the runtime", req.host, req.path)
                resp = _refuse(EdgeError("the node failed this request"))
            try:
                call_back(conn.respond, resp)
            except RuntimeError:  # the loop is closed: the worker is stopping
                return

    def close(self, timeout: float) -> None:
        self.blocking.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            threads = [t for t in self._threads if t.is_alive()]
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))


class Front:
    """What every connection of one worker shares: limits, the pool, the open connections."""

    def __init__(
        self,
        runtime: Runtime,
        pool: RequestPool,
        limits: FrontLimits,
        limiter: ClientLimiter | None,
        *,
        scheme: str,
        server_port: str,
        inline: bool = True,
    ) -> None:
        self.runtime = runtime
        # Run the requests of functions placed on the loop here (dispatch.py).
        self.inline = inline
        self.pool = pool
        self.limits = limits
        self.limiter = limiter
        self.scheme = scheme
        self.server_port = server_port
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.pending = 0
        self._sweeper: asyncio.Task[None] | None = None

    def protocol(self) -> _Connection:
        return _Connection(self)

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        # A deadline is enforced at most a quarter of the shortest timeout (and 1 s) late.
        lim = self.limits
        period = min(1.0, max(0.02, min(lim.header_timeout_s, lim.body_timeout_s,
                                        lim.keepalive_timeout_s) / 4))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in [c for c in self.connections if c.deadline <= now]:
                conn.expire()

    def close_idle(self) -> None:
        """Stop: close every connection not running a request."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            if not conn.in_flight:
                conn.close()


_NO_DEADLINE = float("inf")


class _Connection(asyncio.Protocol):
    """One client connection: parse, buffer, hand over, answer, repeat (keep-alive)."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.limits = front.limits
        self.loop = front.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.phase = _IDLE
        self.deadline = _NO_DEADLINE
        self.remote_addr = ""
        self._slot: int | None = None
        self._head_bytes = 0
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._body_limit = 0
        self._routed: Routed | None = None
        self._content_length: int | None = None
        self._refusal: HttpResponse | None = None
        self._ready: deque[tuple[HttpRequest, bool]] = deque()
        self._keep_alive = True
        self._head_only = False
        self._write_paused = False
        self._read_paused = False
        self.in_flight = False
        self._eof = False
        self._closed = False

    # -- asyncio callbacks ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote_addr = peer[0] if isinstance(peer, tuple) else ""
        limiter = self.front.limiter
        if limiter is not None:
            self._slot = limiter.acquire(self.remote_addr)
            if self._slot is None:
                # Over the per-client limit: the socket is closed before anything is read.
                self._closed = True
                transport.abort()  # type: ignore[attr-defined]
                return
        self.front.connections.add(self)
        # A new connection has the header timeout to send a request, not the longer keep-alive.
        self.deadline = self.loop.time() + self.limits.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.front.connections.discard(self)
        if self._slot is not None and self.front.limiter is not None:
            self.front.limiter.release(self._slot)
            self._slot = None

    def data_received(self, data: bytes) -> None:
        if self.phase == _IDLE and _read_native is not None:
            # Between requests (nothing of the next one fed to httptools yet): a whole
            # plain request in this read is read in one call (`_http1.c`).
            whole = _read_native(data, self.limits.max_header_bytes)
            if whole is not None:
                self._whole(*whole)
                return
        if self.phase <= _HEAD:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(_refuse(BadRequest("protocol upgrades are not supported")))
            return
        except httptools.HttpParserError:
            if self._refusal is None:
                self._fail(_refuse(BadRequest("malformed HTTP request")))
                return
        if self._refusal is not None:
            self._fail(self._refusal)
            return
        if self.phase == _HEAD and self._head_bytes > self.limits.max_header_bytes:
            self._fail(_refuse(HeadersTooLarge(
                f"request head over {self.limits.max_header_bytes} bytes")))
            return
        if self._ready and not self.in_flight and not self._write_paused:
            self._dispatch()

    def _whole(self, method: str, url: bytes, headers: list[tuple[bytes, bytes]], host: bytes,
               content_length: int | None, body: bytes, keep_alive: bool) -> None:
        """A request `_http1.parse_request` read whole: the callbacks' work in one."""
        self._url, self._headers, self._content_length = url, headers, content_length
        try:
            self._head(method, host, False)
        except _Refused:
            assert self._refusal is not None
            self._fail(self._refusal)
            return
        self._complete(body, keep_alive)
        if not self.in_flight and not self._write_paused:
            self._dispatch()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.phase == _WRITING and not self._closed:
            self._next()

    def eof_received(self) -> bool | None:
        # A client that half-closes after a complete request still gets its answer, then
        # the connection closes; a half-sent request will never be completed.
        if self.in_flight or self._ready:
            self._keep_alive = False
            self._eof = True
        else:
            self.close()
        return True

    # -- httptools callbacks -------------------------------------------------
    def on_message_begin(self) -> None:
        self.phase = _HEAD
        self.deadline = self.loop.time() + self.limits.header_timeout_s
        self._url = b""
        self._headers = []
        self._body = []
        self._body_bytes = 0
        self._content_length = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        host = b""
        expect = chunked = False
        for name, value in self._headers:
            if name == b"host":
                host = value
            elif name == b"content-length":
                with contextlib.suppress(ValueError):
                    self._content_length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
        self._head(self.parser.get_method().decode("latin-1"), host, chunked)
        self.phase = _BODY
        self.deadline = self.loop.time() + self.limits.body_timeout_s
        if expect and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _head(self, method: str, host: bytes, chunked: bool) -> None:
        """The head read (`_url`, `_headers`, `_content_length`): the target split, the
        route found for a request with a body and its limit checked (`_Refused`)."""
        url = self._url
        if url[:1] == b"/":
            path, _, query = url.partition(b"?")
        else:  # absolute form (`http://host/path`), which a server must accept too
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self._refusal = _refuse(BadRequest("malformed request target"))
                raise _Refused from None
            path, query = parsed.path or b"/", parsed.query or b""
        self._path = _request_path(path)
        self._raw_path = path.decode("latin-1") if path else "/"
        self._query = query.decode("latin-1")
        self._host = host.decode("latin-1")
        self._method = method
        if self._content_length or chunked:
            # Routing again in the runtime is cheap; a request without a body skips it here.
            self._routed = self.front.runtime.route(self._host, self._path, method)
            limit = self._body_limit = self._routed.body_limit
            if self._content_length is not None and self._content_length > limit:
                self._refusal = _too_large(limit)
                raise _Refused
        else:
            self._body_limit = 0
            self._routed = None

    def on_body(self, chunk: bytes) -> None:
        self._body_bytes += len(chunk)
        if self._body_bytes > self._body_limit:
            # A chunked body (no Content-Length) found too long while it arrives.
            self._refusal = _too_large(self._body_limit)
            raise _Refused
        self._body.append(chunk)

    def on_message_complete(self) -> None:
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        self._body = []
        self._complete(body, self.parser.should_keep_alive())

    def _complete(self, body: bytes, keep_alive: bool) -> None:
        """The request whole: queued for `_dispatch`."""
        req = HttpRequest(
            method=self._method,
            host=self._host,
            path=self._path,
            query=self._query,
            headers=self._headers,
            read_body=BytesIO(body).read,
            content_length=self._content_length if self._content_length is not None
            else len(body),
            scheme=self.front.scheme,
            server_port=self.front.server_port,
            remote_addr=self.remote_addr,
            routed=self._routed,
            raw_path=self._raw_path,
        )
        self._ready.append((req, keep_alive))
        self.phase = _RUNNING
        self._head_bytes = 0
        self.deadline = _NO_DEADLINE

    # -- requests and answers ------------------------------------------------
    def _dispatch(self) -> None:
        req, self._keep_alive = self._ready.popleft()
        self._head_only = req.method == "HEAD"
        front = self.front
        if front.inline:
            try:
                answer = front.runtime.handle_on_loop(req)
            except Exception:
                log.exception("request to %s%s failed in the runtime", req.host, req.path)
                answer = _refuse(EdgeError("the node failed this request"))
            if isinstance(answer, Suspended):
                if self._hold():
                    green.spawn(front.loop, lambda: self._run_green(req, answer.run),
                                front.pool.blocking)
                return
            if isinstance(answer, HttpResponse):
                self._write(answer)
                return
        if self._hold():
            front.pool.submit(req, self)

    def _hold(self) -> bool:
        """Count a request that is not answered at once (on the threads or in a green task),
        or refuse it with 503 when the worker holds too many."""
        front = self.front
        if front.pending >= self.limits.max_pending_requests:
            resp = _refuse(NodeOverloaded("the node is busy; retry shortly"))
            resp.headers.append(("retry-after", "1"))
            self._write(resp)
            return False
        front.pending += 1
        self.in_flight = True
        # Backpressure: nothing more is read from this client until it has its answer.
        # (A request answered on the loop is done before anything more can be read.)
        self._pause_reading()
        return True

    def _run_green(self, req: HttpRequest, run: Callable[[], HttpResponse]) -> None:
        """A green task: the rest of the request (`Suspended.run`), its guest's waits
        letting the loop run. The answer is written from the loop itself, not the task."""
        try:
            resp = run()
        except Exception:
            log.exception("request to %s%s failed in the runtime", req.host, req.path)
            resp = _refuse(EdgeError("the node failed this request"))
        self.front.loop.call_soon(self.respond, resp)

    def _pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def respond(self, resp: HttpResponse) -> None:
        """On the loop, from a request thread or a green task: the runtime's answer."""
        self.front.pending -= 1
        self.in_flight = False
        self._write(resp)

    def _write(self, resp: HttpResponse) -> None:
        if self._closed or self.transport is None:
            return
        if self._eof:
            self._keep_alive = False
        self.transport.write(serialize(resp, head_only=self._head_only,
                                       keep_alive=self._keep_alive))
        if not self._keep_alive:
            self.close()
            return
        if self._write_paused:
            # The client is not reading its answer: it has the body timeout to take it,
            # and nothing more is read from it meanwhile.
            self._pause_reading()
            self.phase = _WRITING
            self.deadline = self.loop.time() + self.limits.body_timeout_s
            return
        self._next()

    def _next(self) -> None:
        if self._ready:
            self._dispatch()
            return
        if self.phase in (_RUNNING, _WRITING):  # else a pipelined request is half read
            self.phase = _IDLE
            self.deadline = self.loop.time() + self.limits.keepalive_timeout_s
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    def _fail(self, resp: HttpResponse) -> None:
        """Answer a request the front refuses, then close: the rest of the stream is unread."""
        if self.in_flight:
            # An answer is owed first; a later request of the same stream is simply dropped.
            self.close()
            return
        self._keep_alive = False
        self._ready.clear()
        self.phase = _WRITING
        self._write(resp)

    def expire(self) -> None:
        """Called by the sweep when this connection's deadline has passed."""
        if self.in_flight:
            return
        if self.phase == _CLOSING and self.transport is not None:
            self.transport.abort()  # its last answer was never taken
        elif self.phase in (_IDLE, _WRITING):
            self.close()  # nothing was asked, or the answer is not being read
        elif self.phase in (_HEAD, _BODY):
            what = "headers" if self.phase == _HEAD else "body"
            self._head_only = False
            self._fail(_refuse(RequestTimeout(f"the request {what} did not arrive in time")))
        else:
            self.deadline = _NO_DEADLINE

    def close(self) -> None:
        self.deadline = _NO_DEADLINE
        if self._closed or self.transport is None:
            return
        self._closed = True
        if self.phase == _WRITING and self._write_paused:
            self.transport.abort()
            return
        self.transport.close()
        if self.transport.get_write_buffer_size():
            # The transport closes once its answer is flushed; a client that never reads it
            # has the body timeout, then the socket is aborted.
            self.phase = _CLOSING
            self.deadline = self.loop.time() + self.limits.body_timeout_s


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request the front refuses."""

