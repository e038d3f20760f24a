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

import contextvars
import select
import socket
import ssl
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from ipaddress import ip_address
from typing import Any

import httpcore

from edgefn.contract.egress_allowlist import Address
from edgefn.edge import green
from edgefn.edge.capabilities.egress_rules import EgressRules
from edgefn.edge.capabilities.errors import Denied

_SocketOptions = Iterable[Any]


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
        with _CONNECTING:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                text, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)[0]
            sock = green.CooperativeSocket(socket.socket(family, kind, proto))
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for option in socket_options or ():
                    sock.setsockopt(*option)
                sock.settimeout(self.bound(timeout, httpcore.ConnectTimeout))
                sock.connect(sockaddr)
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
            try:
                infos = green.result(future, self.bound(timeout, httpcore.ConnectTimeout))
            except TimeoutError as exc:
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


class _Failures:
    """`with`: a socket's timeout as `expired`, its other errors as `failed` (httpcore's).
    A class, not a generator: one is made per kind and used on every fetch's reads and
    writes, with no generator to start and close each time."""

    __slots__ = ("expired", "failed")

    def __init__(self, expired: type[Exception], failed: type[Exception]) -> None:
        self.expired = expired
        self.failed = failed

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if kind is None:
            return
        if issubclass(kind, TimeoutError):
            raise self.expired("timed out") from None
        if issubclass(kind, OSError):
            raise self.failed(str(exc)) from exc


_CONNECTING = _Failures(httpcore.ConnectTimeout, httpcore.ConnectError)
_READING = _Failures(httpcore.ReadTimeout, httpcore.ReadError)
_WRITING = _Failures(httpcore.WriteTimeout, httpcore.WriteError)


class SocketStream(httpcore.NetworkStream):
    """A connection of the fetch client on a `green.CooperativeSocket`: each read and
    write ends by the backend's deadline, waiting in `poll` on a thread and on the
    event loop in a green task."""

    __slots__ = ("_backend", "_sock")

    def __init__(self, sock: green.CooperativeSocket, backend: GuardedBackend) -> None:
        self._sock = sock
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._sock.settimeout(self._backend.bound(timeout, httpcore.ReadTimeout))
        with _READING:
            return self._sock.recv(max_bytes)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._sock.settimeout(self._backend.bound(timeout, httpcore.WriteTimeout))
        with _WRITING:
            self._sock.sendall(buffer)

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        with _CONNECTING:
            tls = green.CooperativeSocket(ssl_context.wrap_socket(
                self._sock.sock, server_hostname=server_hostname,
                do_handshake_on_connect=False))
            tls.settimeout(self._backend.bound(timeout, httpcore.ConnectTimeout))
            tls.do_handshake()  # a failed check is an ssl.SSLError, an OSError
        return SocketStream(tls, self._backend)

    def get_extra_info(self, info: str) -> Any:
        sock = self._sock.sock
        if info == "is_readable":
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        if info == "ssl_object":
            return getattr(sock, "_sslobj", None)
        if info == "socket":
            return sock
        if info == "server_addr":
            return sock.getpeername()
        if info == "client_addr":
            return sock.getsockname()
        return None
