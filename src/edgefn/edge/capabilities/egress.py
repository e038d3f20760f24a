"""The connection layer under `http_fetch`: resolve a host, check every address against
the node's egress rules (`egress_rules.EgressRules`), connect to a checked one, and keep
every socket operation inside the caller's deadline.

It is an httpcore network backend, so the check happens where the socket is
opened: the address connected to is the address checked (no DNS-rebinding gap
between a check and a second lookup), while the URL, and so the Host header,
TLS SNI and certificate check, keep the name. Pooled connections were checked
when opened.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from ipaddress import ip_address
from ssl import SSLContext
from typing import Any

import httpcore

from edgefn.contract.egress_allowlist import Address
from edgefn.edge.capabilities.egress_rules import EgressRules
from edgefn.edge.capabilities.errors import Denied

_SocketOptions = Iterable[Any]


class _Deadline(threading.local):
    at: float | None = None


class GuardedBackend(httpcore.NetworkBackend):
    """Thread-safe: the deadline is per thread, as the sync client does a request's I/O in the
    thread that sent it."""

    def __init__(
        self, rules: EgressRules, *, allow_private: bool, resolver_threads: int = 4
    ) -> None:
        self.rules = rules
        self.allow_private = allow_private
        self._sync = httpcore.SyncBackend()
        self._deadline = _Deadline()
        # getaddrinfo has no timeout of its own; it runs here so a caller can stop waiting.
        self._resolver = ThreadPoolExecutor(resolver_threads, thread_name_prefix="edgefn-dns")

    @contextmanager
    def deadline(self, at: float) -> Iterator[None]:
        """Every connect, read and write in this thread ends by `at` (time.monotonic)."""
        previous, self._deadline.at = self._deadline.at, at
        try:
            yield
        finally:
            self._deadline.at = previous

    def bound(self, timeout: float | None, expired: type[Exception]) -> float | None:
        """`timeout` shortened to what is left before the deadline; `expired` when none is."""
        at = self._deadline.at
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
                stream = self._sync.connect_tcp(
                    text,
                    port,
                    timeout=self.bound(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                last = exc  # try the next address, as a browser would
                continue
            return _DeadlineStream(stream, self)
        raise last

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
                infos = future.result(self.bound(timeout, httpcore.ConnectTimeout))
            except FutureTimeout as exc:
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


class _DeadlineStream(httpcore.NetworkStream):
    __slots__ = ("_backend", "_inner")

    def __init__(self, inner: httpcore.NetworkStream, backend: GuardedBackend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._backend.bound(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.bound(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._backend.bound(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner, self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
