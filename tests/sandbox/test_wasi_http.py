"""`wasi_experimental_http`'s error codes, call by call, on a plain memory: what the
crate answers for each bad argument, and what it hands `http_fetch`. The calls on
real engines are in test_engine_conformance.py."""

from __future__ import annotations

import struct

import pytest

from edgefn.sandbox import wasi_http
from tests.sandbox.test_engine_conformance import UpstreamHost


class Memory:
    """A guest's linear memory: one 64 KiB page, bounds-checked as the engines do."""

    def __init__(self) -> None:
        self.data = bytearray(65536)
        self.top = 1024

    def read(self, ptr: int, length: int) -> bytes:
        if ptr + length > len(self.data):
            raise IndexError("out of bounds")
        return bytes(self.data[ptr : ptr + length])

    def write(self, ptr: int, data: bytes) -> None:
        if ptr + len(data) > len(self.data):
            raise IndexError("out of bounds")
        self.data[ptr : ptr + len(data)] = data

    def put(self, data: bytes) -> tuple[int, int]:
        ptr = self.top
        self.write(ptr, data)
        self.top += len(data) + 8
        return ptr, len(data)

    def u32(self, ptr: int) -> int:
        return int(struct.unpack_from("<I", self.data, ptr)[0])


STATUS, HANDLE, WRITTEN = 0, 8, 16


def call(name: str, mem: Memory, host: UpstreamHost, *args: int) -> int:
    adapter = wasi_http.FUNCTIONS[name][2]
    return int(adapter(mem, host, list(args)) or 0)


def req(mem: Memory, host: UpstreamHost, url: bytes = b"http://up.test/x",
        method: bytes = b"GET", headers: bytes = b"", body: bytes = b"") -> int:
    parts = [mem.put(p) for p in (url, method, headers, body)]
    return call("req", mem, host, *(n for part in parts for n in part), STATUS, HANDLE)


@pytest.fixture
def host() -> UpstreamHost:
    return UpstreamHost(fetch_allowed=True)


def test_a_request_and_its_response(host: UpstreamHost) -> None:
    mem = Memory()
    with wasi_http.session(host, 4):
        assert req(mem, host, method=b"PUT", headers=b"A:1\nb: two\n", body=b"x") == 0
        assert struct.unpack_from("<H", mem.data, STATUS)[0] == 200
        handle = mem.u32(HANDLE)
        buf, cap = mem.put(b"\0" * 64)
        assert call("headers_get_all", mem, host, handle, buf, cap, WRITTEN) == 0
        assert mem.read(buf, mem.u32(WRITTEN)) == b"x-upstream:seen\ncontent-type:text/plain\n"
        name = mem.put(b"Content-Type")
        assert call("header_get", mem, host, handle, *name, buf, 9, WRITTEN) == 4
        assert call("header_get", mem, host, handle, *name, buf, 64, WRITTEN) == 0
        assert mem.read(buf, mem.u32(WRITTEN)) == b"text/plain"
        assert call("body_read", mem, host, handle, buf, 64, WRITTEN) == 0
        assert mem.read(buf, mem.u32(WRITTEN)) == b"POST wagi ping"
        assert call("body_read", mem, host, handle, buf, 64, WRITTEN) == 0
        assert mem.u32(WRITTEN) == 0
        assert call("close", mem, host, handle) == 0
        assert call("body_read", mem, host, handle, buf, 64, WRITTEN) == 1
    assert host.fetches == [b"PUT http://up.test/x\na: 1\nb: two\n\nx"]


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"method": b"BREW"}, 8),
    ({"method": b"get"}, 8),
    ({"url": b"ftp://up.test/x"}, 10),
    ({"url": b"/relative"}, 10),
    ({"url": b"http://up.test/a b"}, 10),
    ({"url": b"http://\xff/"}, 6),
    ({"headers": b"no colon\n"}, 9),
    ({"headers": b"bad name:1\n"}, 9),
])
def test_refused_before_anything_is_sent(host: UpstreamHost, kwargs: dict[str, bytes],
                                         code: int) -> None:
    mem = Memory()
    with wasi_http.session(host, 4):
        assert req(mem, host, **kwargs) == code
    assert host.fetches == []


def test_denied_and_failed_fetches(host: UpstreamHost) -> None:
    mem = Memory()
    denied = UpstreamHost()
    with wasi_http.session(denied, 4):
        assert req(mem, denied) == 7
    host.http_fetch = lambda request: -4  # type: ignore[method-assign]
    with wasi_http.session(host, 4):
        assert req(mem, host) == 11


def test_bad_pointers_are_codes_not_traps(host: UpstreamHost) -> None:
    mem = Memory()
    with wasi_http.session(host, 4):
        # The URL runs past the end of memory: the crate's BufferTooSmall.
        assert call("req", mem, host, 65530, 100, *mem.put(b"GET"), 0, 0, 0, 0,
                    STATUS, HANDLE) == 4
        url, method = mem.put(b"http://up.test/"), mem.put(b"GET")
        # Where the handle goes is outside memory: MemoryAccessError, nothing kept open.
        assert call("req", mem, host, *url, *method, 0, 0, 0, 0, STATUS, 70000) == 3
        assert req(mem, host) == 0
        assert mem.u32(HANDLE) == 0


def test_open_responses_are_bounded(host: UpstreamHost) -> None:
    mem = Memory()
    with wasi_http.session(host, 2):
        assert [req(mem, host) for _ in range(3)] == [0, 0, 13]
        assert call("close", mem, host, 0) == 0
        assert req(mem, host) == 0
        assert mem.u32(HANDLE) == 2  # the next free handle after the last, as the crate does
    assert len(host.fetches) == 3


def test_outside_an_invocation_is_a_runtime_error(host: UpstreamHost) -> None:
    assert req(Memory(), host) == 12
