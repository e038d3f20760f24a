"""Requests that wait, against a real `edgefn edge serve`: green tasks, not threads.

A worker with a single request thread serves many requests waiting in
`http_fetch` at once, once the function has earned the event loop (their guests
suspended, the loop running), answers
others meanwhile, and still bounds what it holds (`--max-pending-requests`).
With `--no-suspend-waiting` the same worker runs them one at a time on its
thread, which is what shows the difference.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from edgefn.edge.worker.dispatch import InlinePolicy
from tests.edge.node.test_server import start_node, stop, write_function


class Upstream:
    """A local HTTP server that holds every request until `release` (or 10 s), counting
    how many it holds at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held = 0
        self.most = 0
        self.seen = 0
        self.released = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with upstream.lock:
                    upstream.held += 1
                    upstream.seen += 1
                    upstream.most = max(upstream.most, upstream.held)
                upstream.released.wait(10)
                with upstream.lock:
                    upstream.held -= 1
                body = b"upstream answer"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_held(self, n: int, timeout: float = 20) -> bool:
        """True once `n` requests are held at once."""
        pause = threading.Event()
        for _ in range(int(timeout / 0.05)):
            with self.lock:
                if self.held >= n:
                    return True
            pause.wait(0.05)
        return False

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.close()


def _functions(root: Path) -> Path:
    write_function(root, "echo", "echo", [{"host": "*", "path": "/echo/*",
                                           "methods": ["GET", "POST"]}])
    write_function(root, "fetcher", "hostcalls", [{"host": "*", "path": "/fetch"}],
                   max_execution_ms=20000,
                   http_fetch={"allow_hosts": ["127.0.0.1"], "allow_private": True})
    return root


def _fetch(url: str, port: int) -> httpx.Response:
    body = f"GET http://127.0.0.1:{port}/data\n\n".encode()
    return httpx.post(url + "/fetch", content=body, timeout=30)


def _load(url: str, upstream: Upstream, *, green: bool = True) -> None:
    """Calls answered at once: the first loads the function, and the function earns the
    event loop (`InlinePolicy.probation`: 32 short calls in a row on the request thread),
    after which its calls run as green tasks. With `green`, until two requests are
    seen waiting at the upstream at once (one slow call, a collection on a busy
    machine, restarts the probation)."""
    for _ in range(5):
        upstream.released.set()
        for _ in range(InlinePolicy().probation + 1):
            assert _fetch(url, upstream.port).status_code == 200
        upstream.released.clear()
        if not green:
            return
        with ThreadPoolExecutor(2) as pool:
            probes = [pool.submit(_fetch, url, upstream.port) for _ in range(2)]
            on_loop = upstream.wait_held(2, timeout=2.0)
            upstream.released.set()
            assert [p.result().status_code for p in probes] == [200, 200]
        upstream.released.clear()
        if on_loop:
            return
    raise AssertionError("the function never reached the event loop")


def _node(tmp_path: Path, *extra: str):  # type: ignore[no-untyped-def]
    # One request thread; one function may hold up to 16 requests (it defaults to the
    # thread count, whatever the requests wait in).
    return start_node(tmp_path, _functions(tmp_path / "functions"), "--workers", "1",
                      "--threads", "1", "--max-inflight-per-function", "16",
                      "--allow-private-egress", "127.0.0.0/8",
                      "--max-connections-per-client", "0", *extra)


def test_one_thread_serves_many_waiting_requests(tmp_path: Path, upstream: Upstream) -> None:
    node = _node(tmp_path)
    try:
        _load(node.url, upstream)
        with ThreadPoolExecutor(12) as pool:
            answers = [pool.submit(_fetch, node.url, upstream.port) for _ in range(12)]
            assert upstream.wait_held(12), f"only {upstream.most} at once"
            # The worker's loop is free while they wait.
            echo = httpx.post(node.url + "/echo/x", content=b"meanwhile", timeout=10)
            assert echo.status_code == 200 and echo.content == b"meanwhile"
            upstream.released.set()
            results = [a.result() for a in answers]
        assert [r.status_code for r in results] == [200] * 12
        assert all(b"upstream answer" in r.content for r in results)
    finally:
        stop(node)


def test_without_suspension_the_thread_serves_one_at_a_time(
    tmp_path: Path, upstream: Upstream,
) -> None:
    node = _node(tmp_path, "--no-suspend-waiting")
    try:
        _load(node.url, upstream, green=False)
        with ThreadPoolExecutor(3) as pool:
            answers = [pool.submit(_fetch, node.url, upstream.port) for _ in range(3)]
            assert upstream.wait_held(1)
            assert not upstream.wait_held(2, timeout=1.0)
            upstream.released.set()
            assert [a.result().status_code for a in answers] == [200] * 3
        assert upstream.most == 1
    finally:
        stop(node)


def _flood(url: str, upstream: Upstream, sent: int, let_through: int, refused: str) -> None:
    """`sent` requests at once to a loaded function: `let_through` of them wait at the
    upstream together, the others get 503 with the error code `refused` at once and
    never reach it."""
    _load(url, upstream)
    before = upstream.seen
    with ThreadPoolExecutor(sent) as pool:
        answers = [pool.submit(_fetch, url, upstream.port) for _ in range(sent)]
        assert upstream.wait_held(let_through), f"only {upstream.most} at once"
        assert not upstream.wait_held(let_through + 1, timeout=1.0)
        upstream.released.set()
        results = [a.result() for a in answers]
    codes = sorted(r.status_code for r in results)
    assert codes == [200] * let_through + [503] * (sent - let_through)
    assert all(r.json()["error"]["code"] == refused for r in results if r.status_code == 503)
    assert upstream.seen - before == let_through


def test_green_tasks_count_against_the_pending_limit(tmp_path: Path, upstream: Upstream) -> None:
    node = _node(tmp_path, "--max-pending-requests", "4")
    try:
        _flood(node.url, upstream, 8, 4, "node_overloaded")
    finally:
        stop(node)


def test_one_function_holds_no_more_green_tasks_than_its_limit(
    tmp_path: Path, upstream: Upstream,
) -> None:
    """A function made to wait (here on an upstream that does not answer) holds at most
    `--max-inflight-per-function` requests of a worker, green tasks or not: the rest
    are refused at once, and never reach the upstream."""
    node = _node(tmp_path, "--max-inflight-per-function", "3")
    try:
        _flood(node.url, upstream, 6, 3, "function_overloaded")
    finally:
        stop(node)
