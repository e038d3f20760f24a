"""The connection layer under `http_fetch`: resolve a host, check every address against
the node's egress rules (`egress_rules.EgressRules`), connect to a checked one, and keep
every socket operation inside the caller's deadline.

It is an httpcore network backend, so the check happens where the socket is
opened: the address connected to is the address checked (no DNS-rebinding gap
between a check and a second lookup), while the URL, and so the Host header,
TLS SNI and certificate check, keep the name. Pooled connections were checked
when opened.

Its sockets are non-blocking and wait for readiness where they are used: on a
request thread in `poll` (the thread blocks, as before), in a green task on the
worker's event loop (`edge.green`), so a guest suspended in `http_fetch` holds
no thread while its answer travels. A connection may be opened in one and used
in the other.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import select
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from ipaddress import ip_address
from typing import Any

import httpcore

from edgefn.contract.egress_allowlist import Address
from edgefn.edge import green
from edgefn.edge.capabilities.egress_rules import EgressRules
from edgefn.edge.capabilities.errors import Denied

_SocketOptions = Iterable[Any]
_READ, _WRITE = green.READ, green.WRITE


class GuardedBackend(httpcore.NetworkBackend):
    """Thread-safe: the deadline is per thread and per green task (a context variable), as
    the client does a request's I/O where it was sent."""

    def __init__(
        self, rules: EgressRules, *, allow_private: bool, resolver_threads: int = 4
    ) -> None:
        self.rules = rules
        self.allow_private = allow_private
        self._deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
            "fetch_deadline", default=None)
        # getaddrinfo has no timeout of its own; it runs here so a caller can stop waiting.
        self._resolver = ThreadPoolExecutor(resolver_threads, thread_name_prefix="edgefn-dns")

    @contextmanager
    def deadline(self, at: float) -> Iterator[None]:
        """Every connect, read and write in this thread ends by `at` (time.monotonic)."""
        token = self._deadline.set(at)
        try:
            yield
        finally:
            self._deadline.reset(token)

    def bound(self, timeout: float | None, expired: type[Exception]) -> float | None:
        """`timeout` shortened to what is left before the deadline; `expired` when none is."""
        at = self._deadline.get()
        if at is None:
            return timeout
        left = at - time.monotonic()
        if left <= 0:
            raise expired("the fetch deadline has passed")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: _SocketOptions | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception = httpcore.ConnectError(f"{host} has no address")
        for text, _ in self._resolve(host, port, timeout):
            try:
                return self._connect(text, port, timeout, socket_options)
            except httpcore.ConnectError as exc:
                last = exc  # try the next address, as a browser would
        raise last

    def _connect(self, text: str, port: int, timeout: float | None,
                 socket_options: _SocketOptions | None) -> SocketStream:
        """A connection to the checked address `text` (no name lookup: it is numeric)."""
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                text, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)[0]
        except OSError as exc:
            raise httpcore.ConnectError(f"{text}: {exc}") from exc
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
            code = sock.connect_ex(sockaddr)
            if code == errno.EINPROGRESS:
                _ready(sock, _WRITE, self.bound(timeout, httpcore.ConnectTimeout),
                       httpcore.ConnectTimeout)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise httpcore.ConnectError(f"{text}:{port}: {errno.errorcode.get(code, code)}")
        except BaseException:
            sock.close()
            raise
        return SocketStream(sock, self)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: _SocketOptions | None = None,
    ) -> httpcore.NetworkStream:
        raise Denied("unix sockets are not reachable from a guest")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        self._resolver.shutdown(wait=False, cancel_futures=True)

    def _resolve(self, host: str, port: int, timeout: float | None) -> list[tuple[str, Address]]:
        """Every address of `host`, in the resolver's order; `Denied` if the rules refuse
        any of them."""
        try:
            addresses = [(host, ip_address(host))]
        except ValueError:
            future = self._resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
            left = self.bound(timeout, httpcore.ConnectTimeout)
            task = green.current()
            try:
                if task is None:
                    infos = future.result(left)
                else:
                    infos = green.wait(asyncio.wrap_future(future, loop=task.loop), left)
            except (FutureTimeout, TimeoutError) as exc:
                future.cancel()
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
            except OSError as exc:
                raise httpcore.ConnectError(f"resolving {host}: {exc}") from exc
            addresses = []
            for info in infos:
                text = str(info[4][0])
                addr = ip_address(text.split("%", 1)[0])
                if (text, addr) not in addresses:
                    addresses.append((text, addr))
        # All or nothing: a name with one refused address among allowed ones is refused,
        # or a rebinding server could steer the fallback order towards it.
        for _, addr in addresses:
            try:
                self.rules.check(addr, port, allow_private=self.allow_private)
            except Denied as exc:
                raise Denied(f"{host}: {exc}") from None
        return addresses


def _ready(sock: socket.socket, events: int, timeout: float | None,
           expired: type[Exception]) -> None:
    try:
        green.ready(sock, events, timeout)
    except TimeoutError:
        raise expired("timed out") from None


class SocketStream(httpcore.NetworkStream):
    """A non-blocking socket (TLS or not) whose reads and writes wait for readiness
    within the backend's deadline (`_ready`)."""

    __slots__ = ("_backend", "_sock")

    def __init__(self, sock: socket.socket, backend: GuardedBackend) -> None:
        self._sock = sock
        self._backend = backend

    def _wait(self, events: int, timeout: float | None, expired: type[Exception]) -> None:
        _ready(self._sock, events, self._backend.bound(timeout, expired), expired)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        while True:
            try:
                return self._sock.recv(max_bytes)
            except (BlockingIOError, ssl.SSLWantReadError):
                self._wait(_READ, timeout, httpcore.ReadTimeout)
            except ssl.SSLWantWriteError:
                self._wait(_WRITE, timeout, httpcore.ReadTimeout)
            except OSError as exc:
                raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        while view:
            try:
                view = view[self._sock.send(view):]
            except (BlockingIOError, ssl.SSLWantWriteError):
                self._wait(_WRITE, timeout, httpcore.WriteTimeout)
            except ssl.SSLWantReadError:
                self._wait(_READ, timeout, httpcore.WriteTimeout)
            except OSError as exc:
                raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        try:
            tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname,
                                          do_handshake_on_connect=False)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        while True:
            try:
                tls.do_handshake()
                return SocketStream(tls, self._backend)
            except ssl.SSLWantReadError:
                self._wait_on(tls, _READ, timeout)
            except ssl.SSLWantWriteError:
                self._wait_on(tls, _WRITE, timeout)
            except OSError as exc:  # ssl.SSLError (a failed check) is one
                raise httpcore.ConnectError(str(exc)) from exc

    def _wait_on(self, sock: socket.socket, events: int, timeout: float | None) -> None:
        _ready(sock, events, self._backend.bound(timeout, httpcore.ConnectTimeout),
               httpcore.ConnectTimeout)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(0))
        if info == "ssl_object":
            return getattr(self._sock, "_sslobj", None)
        if info == "socket":
            return self._sock
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "client_addr":
            return self._sock.getsockname()
        return None
