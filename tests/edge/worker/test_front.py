"""Hostile clients against a real `edgefn edge serve` on loopback, with raw sockets.

Idle and slow-body connections, a client over its connection limit, idle
keep-alive, oversize chunked bodies and heads, a full request queue: each gets
the contract's answer (408, 413, 431, 503, or the connection closed) while a
normal client keeps being served. Timeouts are short so the tests stay quick.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.edge.node.test_server import Node, functions, start_node, stop, write_function

__all__ = ["functions"]  # the fixture, shared with test_server

TIMEOUTS = ("--header-timeout", "1", "--body-timeout", "1.5", "--keepalive-timeout", "1")


def address(node: Node) -> tuple[str, int]:
    host, port = node.url.removeprefix("http://").split(":")
    return host, int(port)


def connect(node: Node, source: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection(address(node), timeout=10, source_address=(source, 0))
    return s


def read_until_closed(s: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout` passes)."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def still_open(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


def echo_ok(node: Node, body: bytes = b"still here") -> None:
    with httpx.Client(base_url=node.url, timeout=5) as c:
        r = c.post("/echo/ok", content=body)
    assert r.status_code == 200 and r.content == body


@pytest.fixture
def hostile_node(tmp_path: Path, functions: Path) -> Iterator[Node]:
    n = start_node(tmp_path, functions, *TIMEOUTS, "--max-connections-per-client", "200",
                   env={"EDGEFN_MAX_REQUEST_BODY_BYTES": "1000"})
    yield n
    stop(n)


@pytest.fixture
def patient_node(tmp_path: Path, functions: Path) -> Iterator[Node]:
    # Timeouts long enough that a busy test machine serves the normal requests before them.
    n = start_node(tmp_path, functions, "--header-timeout", "4", "--body-timeout", "4",
                   "--max-connections-per-client", "200")
    yield n
    stop(n)


def test_idle_and_slow_body_clients_do_not_delay_others(patient_node: Node) -> None:
    node = patient_node
    idle = [connect(node) for _ in range(64)]
    slow = []
    for _ in range(16):
        s = connect(node)
        s.sendall(b"POST /echo/x HTTP/1.1\r\nHost: a\r\nContent-Length: 900\r\n\r\nx")
        slow.append(s)
    try:
        # Far more connections than request threads (2 workers x 8) are held, yet:
        for _ in range(10):
            echo_ok(node)
        assert all(still_open(s) for s in idle + slow), "served while the attackers were held"
        # Then the deadlines: the idle ones are closed silently, the slow bodies get 408.
        for s in idle:
            assert read_until_closed(s, 8) == b""
        for s in slow:
            answer = read_until_closed(s, 8)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            assert b"x-request-id: " in answer and b"connection: close" in answer
        echo_ok(node)
    finally:
        for s in idle + slow:
            s.close()


def test_a_head_sent_too_slowly_gets_408(hostile_node: Node) -> None:
    with connect(hostile_node) as s:
        s.sendall(b"GET /echo/x HTTP/1.1\r\nHost: a\r\n")
        t0 = time.monotonic()
        answer = read_until_closed(s, 5)
        took = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer
    assert took < 4  # the 1 s header timeout, not the 10 s default


def test_trickling_bytes_does_not_extend_the_header_deadline(hostile_node: Node) -> None:
    with connect(hostile_node) as s:
        s.sendall(b"GET /echo/x HTTP/1.1\r\n")
        answer = b""
        for _ in range(30):  # one header byte every 0.1 s for up to 3 s
            try:
                s.sendall(b"X")
            except OSError:
                break
            time.sleep(0.1)
            if not still_open(s):
                break
        answer = read_until_closed(s, 5)
    assert answer.startswith(b"HTTP/1.1 408")


def test_an_idle_keep_alive_connection_is_closed(hostile_node: Node) -> None:
    request = b"POST /echo/k HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
    with connect(hostile_node) as s:
        for _ in range(3):  # kept alive between requests sent in time
            s.sendall(request)
            s.settimeout(5)
            head = s.recv(65536)
            assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"hi")
            time.sleep(0.3)
        t0 = time.monotonic()
        assert read_until_closed(s, 5) == b""
        assert time.monotonic() - t0 < 4


def test_a_client_over_its_connection_limit_is_refused_and_others_are_not(
    tmp_path: Path, functions: Path
) -> None:
    node = start_node(tmp_path, functions, *TIMEOUTS, "--max-connections-per-client", "4")
    held: list[socket.socket] = []
    try:
        for _ in range(10):
            s = connect(node)
            time.sleep(0.05)  # let the worker accept it before the next one
            held.append(s)
        time.sleep(0.3)
        open_ones = [s for s in held if still_open(s)]
        # The limit is per node, not per worker process (2 workers here).
        assert len(open_ones) == 4
        with pytest.raises(httpx.TransportError):
            httpx.post(node.url + "/echo/x", content=b"x", timeout=5)
        # Another address is its own client.
        other = httpx.Client(base_url=node.url, timeout=5,
                             transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        with other:
            assert other.post("/echo/x", content=b"other").content == b"other"
        for s in held:
            s.close()
        time.sleep(0.3)
        echo_ok(node)
    finally:
        for s in held:
            s.close()
        stop(node)


def chunked(*chunks: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def test_chunked_bodies_are_read_up_to_the_limit(hostile_node: Node) -> None:
    head = b"POST /echo/c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    with connect(hostile_node) as s:
        s.sendall(head + chunked(b"a" * 400, b"b" * 400))
        s.settimeout(5)
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"a" * 400 + b"b" * 400)
    with connect(hostile_node) as s:
        s.sendall(head + chunked(b"a" * 600, b"b" * 600))
        answer = read_until_closed(s, 5)
    assert answer.startswith(b"HTTP/1.1 413") and b"x-request-id: " in answer
    assert b"over the limit of 1000 bytes" in answer


def test_oversize_heads_and_garbage_are_refused(hostile_node: Node) -> None:
    with connect(hostile_node) as s:
        s.sendall(b"GET /echo/x HTTP/1.1\r\nHost: a\r\n" + b"x-big: " + b"y" * 70_000 + b"\r\n")
        assert read_until_closed(s, 5).startswith(b"HTTP/1.1 431")
    with connect(hostile_node) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert read_until_closed(s, 5).startswith(b"HTTP/1.1 400")
    echo_ok(hostile_node)


def test_an_absolute_form_target_is_routed_by_its_path(hostile_node: Node) -> None:
    with connect(hostile_node) as s:
        s.sendall(b"POST http://a.test/echo/abs?q=1 HTTP/1.1\r\nHost: a.test\r\n"
                  b"Content-Length: 3\r\nConnection: close\r\n\r\nabs")
        answer = read_until_closed(s, 5)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"abs")
    assert b"x-path: /echo/abs?q=1" in answer.lower()


def test_a_client_that_half_closes_after_its_request_gets_the_answer(hostile_node: Node) -> None:
    with connect(hostile_node) as s:
        s.sendall(b"POST /echo/eof HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\neof")
        s.shutdown(socket.SHUT_WR)
        answer = read_until_closed(s, 5)
    # The answer, then the close (read_until_closed returned before its timeout).
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"eof")


def test_head_has_the_length_and_no_body(hostile_node: Node) -> None:
    with connect(hostile_node) as s:
        s.sendall(b"HEAD /echo/h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        answer = read_until_closed(s, 5)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b""
    assert b"x-request-id: " in head and b"content-length: " in head


def test_a_full_request_queue_answers_503(tmp_path: Path, functions: Path) -> None:
    write_function(functions, "slower", "loop", [{"host": "*", "path": "/slower"}],
                   max_execution_ms=2000)
    node = start_node(tmp_path, functions, "--workers", "1", "--threads", "1",
                      "--max-pending-requests", "1")
    try:
        with connect(node) as busy:
            # Holds the worker's one request slot for 2 s.
            busy.sendall(b"GET /slower HTTP/1.1\r\nHost: a\r\n\r\n")
            time.sleep(0.5)
            r = httpx.post(node.url + "/echo/q", content=b"q", timeout=10)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "node_overloaded"
            busy.settimeout(10)
            assert busy.recv(65536).startswith(b"HTTP/1.1 504")
        echo_ok(node)
    finally:
        stop(node)


def test_a_client_that_does_not_read_its_answers_is_dropped(
    tmp_path: Path, functions: Path
) -> None:
    node = start_node(tmp_path, functions, "--body-timeout", "1",
                      env={"EDGEFN_MAX_REQUEST_BODY_BYTES": "100000"})
    try:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(address(node))
        body = b"z" * 30_000
        request = b"POST /echo/big HTTP/1.1\r\nHost: a\r\nContent-Length: 30000\r\n\r\n" + body
        sent = 0
        s.settimeout(3)
        try:
            for _ in range(600):  # 18 MB of answers asked for, none read
                s.sendall(request)
                sent += 1
        except (TimeoutError, OSError):
            pass  # the node stopped reading: its answers are not being taken
        time.sleep(3)  # past the body timeout
        received = read_until_closed(s, 10)
        s.close()
        assert received.count(b"HTTP/1.1 200") < sent
        echo_ok(node)
    finally:
        stop(node)
