"""`wasi_experimental_http`: the outbound HTTP host module WAGI programs import,
with its ABI (five functions returning the crate's error codes), for every engine.

A request goes out through the invocation's `Host.http_fetch`, so it meets the
same allowlist, address rules, size cap and deadline as the `edge.http_fetch` of
an edge-v1 function; only the encoding differs. The responses a program holds
open are kept per invocation (`session`), at most `Limits.max_http_responses`
of them (WAGI's `http_max_concurrency`), and dropped when the invocation ends.
"""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from edgefn.contract import HTTP_METHODS
from edgefn.sandbox.abi import parse_response
from edgefn.sandbox.engine import Host
from edgefn.sandbox.errors import GuestError
from edgefn.sandbox.hostcalls import I32, Adapter, Args, GuestMemory, read
from edgefn.sandbox.hostcodes import DENIED
from edgefn.sandbox.wasminfo import WASI_HTTP_MODULE

MODULE = WASI_HTTP_MODULE

# The crate's `http_error` (witx/wasi_experimental_http.witx), as u32 results.
SUCCESS = 0
INVALID_HANDLE = 1
MEMORY_NOT_FOUND = 2
MEMORY_ACCESS_ERROR = 3
BUFFER_TOO_SMALL = 4
HEADER_NOT_FOUND = 5
UTF8_ERROR = 6
DESTINATION_NOT_ALLOWED = 7
INVALID_METHOD = 8
INVALID_ENCODING = 9
INVALID_URL = 10
REQUEST_ERROR = 11
RUNTIME_ERROR = 12
TOO_MANY_SESSIONS = 13

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_URL = re.compile(r"(?i)https?://[^\s/?#]+[^\s]*")


@dataclass(slots=True)
class _Response:
    headers: list[tuple[bytes, bytes]]
    body: bytes
    pos: int = 0


class Session:
    """The responses one invocation holds open, by handle."""

    __slots__ = ("_next", "max_open", "responses")

    def __init__(self, max_open: int) -> None:
        self.max_open = max_open
        self.responses: dict[int, _Response] = {}
        self._next = 0

    def add(self, response: _Response) -> int:
        while self._next in self.responses:
            self._next = (self._next + 1) & 0xFFFFFFFF
        handle = self._next
        self.responses[handle] = response
        return handle


# The open sessions, by the id of the invocation's host: a host call is handed the
# host, and the host outlives its entry (removed when the invocation ends).
_SESSIONS: dict[int, Session] = {}


@contextlib.contextmanager
def session(host: Host, max_open: int) -> Iterator[None]:
    """Open responses for the invocation served by `host`, dropped when it ends."""
    _SESSIONS[id(host)] = Session(max_open)
    try:
        yield
    finally:
        _SESSIONS.pop(id(host), None)


class _Failed(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _session(host: Host) -> Session:
    found = _SESSIONS.get(id(host))
    if found is None:
        raise _Failed(RUNTIME_ERROR)
    return found


def _bytes(mem: GuestMemory, ptr: int | float, length: int | float) -> bytes:
    try:
        return read(mem, ptr, length)
    except IndexError:
        raise _Failed(BUFFER_TOO_SMALL) from None


def _text(mem: GuestMemory, ptr: int | float, length: int | float) -> str:
    try:
        return _bytes(mem, ptr, length).decode("utf-8")
    except UnicodeDecodeError:
        raise _Failed(UTF8_ERROR) from None


def _store(mem: GuestMemory, ptr: int | float, data: bytes) -> None:
    try:
        if int(ptr) < 0:
            raise IndexError("negative pointer")
        mem.write(int(ptr), data)
    except IndexError:
        raise _Failed(MEMORY_ACCESS_ERROR) from None


def _response(host: Host, handle: int | float) -> _Response:
    found = _session(host).responses.get(int(handle) & 0xFFFFFFFF)
    if found is None:
        raise _Failed(INVALID_HANDLE)
    return found


def _headers(text: str) -> bytes:
    """The crate's `name:value` lines as `http_fetch` header lines."""
    out = []
    for line in text.splitlines():
        if not line:
            continue
        name, sep, value = line.partition(":")
        value = value.strip()
        if not sep or not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise _Failed(INVALID_ENCODING)
        out.append(f"{name.lower()}: {value}\n")
    try:
        return "".join(out).encode("latin-1")
    except UnicodeEncodeError:
        raise _Failed(INVALID_ENCODING) from None


def fetch_request(url: str, method: str, headers: str, body: bytes) -> bytes:
    """What `req` asks for, in the `http_fetch` request encoding; `_Failed` with the
    crate's code for what it would refuse before sending."""
    if method not in HTTP_METHODS:
        raise _Failed(INVALID_METHOD)
    if not _URL.fullmatch(url) or not url.isascii() or len(url) > 8192:
        raise _Failed(INVALID_URL)
    return f"{method} {url}\n".encode() + _headers(headers) + b"\n" + body


def _req(mem: GuestMemory, host: Host, a: Args) -> int:
    state = _session(host)
    if len(state.responses) >= state.max_open:
        return TOO_MANY_SESSIONS
    url = _text(mem, a[0], a[1])
    method = _text(mem, a[2], a[3])
    headers = _text(mem, a[4], a[5])
    body = _bytes(mem, a[6], a[7])
    answer = host.http_fetch(fetch_request(url, method, headers, body))
    if isinstance(answer, int):
        return DESTINATION_NOT_ALLOWED if answer == DENIED else REQUEST_ERROR
    try:
        parsed = parse_response(answer)
    except GuestError:
        return REQUEST_ERROR
    _store(mem, a[8], _U16.pack(parsed.status))
    response = _Response(parsed.headers, parsed.body)
    handle = state.add(response)
    try:
        _store(mem, a[9], _U32.pack(handle))
    except _Failed:
        del state.responses[handle]
        raise
    return SUCCESS


def _close(mem: GuestMemory, host: Host, a: Args) -> int:
    _session(host).responses.pop(int(a[0]) & 0xFFFFFFFF, None)
    return SUCCESS


def _header_get(mem: GuestMemory, host: Host, a: Args) -> int:
    response = _response(host, a[0])
    name = _text(mem, a[1], a[2]).lower().encode()
    value = next((v for k, v in response.headers if k == name), None)
    if value is None:
        return HEADER_NOT_FOUND
    return _give(mem, value, a[3], a[4], a[5])


def _headers_get_all(mem: GuestMemory, host: Host, a: Args) -> int:
    response = _response(host, a[0])
    block = b"".join(k + b":" + v + b"\n" for k, v in response.headers)
    return _give(mem, block, a[1], a[2], a[3])


def _give(mem: GuestMemory, data: bytes, ptr: float, capacity: float, written_ptr: float) -> int:
    """`data` into the guest's buffer and its length beside it, when it fits whole."""
    if len(data) > int(capacity):
        return BUFFER_TOO_SMALL
    _store(mem, ptr, data)
    _store(mem, written_ptr, _U32.pack(len(data)))
    return SUCCESS


def _body_read(mem: GuestMemory, host: Host, a: Args) -> int:
    response = _response(host, a[0])
    n = max(0, min(int(a[2]), len(response.body) - response.pos))
    _store(mem, a[1], response.body[response.pos : response.pos + n])
    response.pos += n
    _store(mem, a[3], _U32.pack(n))
    return SUCCESS


def _coded(adapter: Adapter) -> Adapter:
    """The crate's convention: every failure is an error code, never a trap."""

    def call(mem: GuestMemory, host: Host, a: Args) -> int:
        try:
            return int(adapter(mem, host, a) or 0)
        except _Failed as exc:
            return exc.code

    return call


# name -> (parameter types, result types, adapter), as `hostcalls.EDGE_FUNCTIONS`.
FUNCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...], Adapter]] = {
    "req": ((I32,) * 10, (I32,), _coded(_req)),
    "close": ((I32,), (I32,), _coded(_close)),
    "header_get": ((I32,) * 6, (I32,), _coded(_header_get)),
    "headers_get_all": ((I32,) * 4, (I32,), _coded(_headers_get_all)),
    "body_read": ((I32,) * 4, (I32,), _coded(_body_read)),
}
