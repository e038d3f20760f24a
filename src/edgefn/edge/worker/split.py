"""Which version of a split function serves a request (docs/edge.md, Traffic splitting).

One CRC-32 of the client key (the cookie or header the deploy names, else the
client's address), salted with the function id and mixed, picks one of 100
buckets: the same client always lands in the same one, and raising the percentage
only moves clients from the previous version to the new one, never back.
"""

from __future__ import annotations

import zlib

from edgefn.edge.spec import FunctionSpec, SpecKey, SplitState
from edgefn.edge.worker.exchange import HttpRequest

_M32 = 0xFFFFFFFF


class VersionChoice:
    """A split function's versions, and what tells its clients apart."""

    __slots__ = ("_cookie", "_header", "_salt", "percent", "previous", "previous_key")

    def __init__(self, function_id: str, split: SplitState, previous_key: SpecKey) -> None:
        self.percent = split.percent
        self.previous = split.previous
        self.previous_key = previous_key
        kind, _, name = split.key.partition(":")
        self._header = name.encode("latin-1") if kind == "header" else b""
        self._cookie = name.encode("latin-1") + b"=" if kind == "cookie" else b""
        self._salt = zlib.crc32(function_id.encode())

    def choose(
        self, req: HttpRequest, spec: FunctionSpec, key: SpecKey
    ) -> tuple[FunctionSpec, SpecKey]:
        """`spec` (under `key`), the new version, for `percent` of the clients; the
        previous version for the others."""
        if bucket(self.client_key(req), self._salt) < self.percent:
            return spec, key
        return self.previous, self.previous_key

    def client_key(self, req: HttpRequest) -> bytes:
        """The value of the named header or cookie, else the client's address."""
        if self._header:
            for k, v in req.headers:
                if k == self._header:
                    return v
        elif self._cookie:
            for k, v in req.headers:
                if k == b"cookie":
                    value = _cookie(v, self._cookie)
                    if value is not None:
                        return value
        return req.remote_addr.encode("latin-1")


def bucket(client_key: bytes, salt: int) -> int:
    """0..99, uniform over keys: CRC-32 spreads poorly over keys that differ in a few
    characters alone, so it goes through murmur3's finalizer."""
    h = zlib.crc32(client_key, salt)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return (h * 100) >> 32


def _cookie(header: bytes, prefix: bytes) -> bytes | None:
    """The value of the cookie `prefix` (`name=`) names in a `cookie` header."""
    start = 0
    while True:
        at = header.find(prefix, start)
        if at == -1:
            return None
        if at == 0 or header[at - 1] in b" ;":
            end = header.find(b";", at)
            return header[at + len(prefix): end if end != -1 else len(header)].strip()
        start = at + 1
