"""How a loaded function runs: chosen once (codec, may it block), then on or off the loop.

A function that cannot block earns its place on the event loop after a run of
short calls on the threads and loses it with one slow call; a function that may
wait in a host call never gets there; the elastic pool of request threads grows
with what waits and shrinks back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from io import BytesIO
from typing import Any

from edgefn.edge.worker.dispatch import (
    OVER_LIMIT,
    OVER_WINDOW,
    EdgeV1Codec,
    InlinePolicy,
    Placement,
    WagiCodec,
)
from edgefn.edge.worker.front import RequestPool
from edgefn.edge.worker.runtime import HttpRequest, HttpResponse
from tests.edge.conftest import EdgeHarness, fn


def _request(target: str, body: bytes = b"") -> HttpRequest:
    path, _, query = target.partition("?")
    return HttpRequest(method="POST", host="edge.test", path=path, query=query,
                       headers=[(b"host", b"edge.test")], read_body=BytesIO(body).read,
                       content_length=len(body))


def _call(p: Placement, cpu_s: float, *, timed_out: bool = False) -> None:
    """A call that ran where its function was placed when it began."""
    p.record(cpu_s=cpu_s, timed_out=timed_out, on_loop=p.on_loop)


def _loaded(edge: EdgeHarness, fid: str) -> Any:
    return next(lf for lf in edge.runtime._loaded.values() if lf.spec.id == fid)


def test_a_placement_earns_the_loop_and_loses_it_with_one_slow_call() -> None:
    p = Placement(InlinePolicy(budget_s=0.002, probation=3, hold_s=0.2), may_block=False)
    for _ in range(2):
        _call(p, 0.0001)
    assert not p.on_loop
    _call(p, 0.0001)
    assert p.on_loop
    _call(p, 0.01)  # far over the budget
    assert not p.on_loop
    for _ in range(5):  # held off the loop for hold_s, however well it behaves
        _call(p, 0.0001)
    assert not p.on_loop
    time.sleep(0.25)
    for _ in range(3):
        _call(p, 0.0001)
    assert p.on_loop
    _call(p, 0.0, timed_out=True)
    assert not p.on_loop


def test_calls_a_little_over_the_budget_now_and_then_are_forgiven_half_of_16_are_not() -> None:
    p = Placement(InlinePolicy(budget_s=0.002, probation=2, hold_s=30), may_block=False)
    for _ in range(2):
        _call(p, 0.0001)
    assert p.on_loop
    # A cluster of the machine's noise: a few calls in a row a little over.
    for _ in range(OVER_LIMIT - 1):
        _call(p, 0.003)
    assert p.on_loop
    # They leave the window as good calls come in: the same cluster later is forgiven too.
    for _ in range(OVER_WINDOW):
        _call(p, 0.0001)
    for _ in range(OVER_LIMIT - 1):
        _call(p, 0.003)
    assert p.on_loop
    _call(p, 0.003)  # the limit within the last 16 calls
    assert not p.on_loop


def test_a_guest_over_the_budget_every_other_call_leaves_the_loop() -> None:
    p = Placement(InlinePolicy(budget_s=0.002, probation=1, hold_s=30), may_block=False)
    _call(p, 0.0001)
    assert p.on_loop
    calls = 0
    while p.on_loop:
        _call(p, 0.003 if calls % 2 else 0.0001)
        calls += 1
        assert calls <= OVER_WINDOW
    assert calls == OVER_WINDOW  # its 8th slow call, within 16


def test_a_slow_call_restarts_the_probation() -> None:
    p = Placement(InlinePolicy(probation=3, hold_s=0.0), may_block=False)
    _call(p, 0.0001)
    _call(p, 0.0001)
    _call(p, 0.0, timed_out=True)
    _call(p, 0.0001)
    _call(p, 0.0001)
    assert not p.on_loop


def test_on_the_threads_only_a_call_far_over_the_budget_restarts_the_probation() -> None:
    # On the threads a call's CPU time includes its share of the contention there: a
    # call up to 4 times the budget still counts; the loop then applies the budget.
    p = Placement(InlinePolicy(budget_s=0.002, probation=3, hold_s=30), may_block=False)
    _call(p, 0.0001)
    _call(p, 0.009)  # far over: the probation starts again
    _call(p, 0.0001)
    _call(p, 0.0075)
    assert not p.on_loop
    _call(p, 0.003)
    assert p.on_loop
    _call(p, 0.003)  # on the loop, over the budget: forgiven a while
    assert p.on_loop
    _call(p, 0.009)  # far over
    assert not p.on_loop


def test_a_call_judged_by_where_it_ran_not_where_its_function_is_now() -> None:
    p = Placement(InlinePolicy(budget_s=0.002, probation=2, hold_s=30), may_block=False)
    _call(p, 0.0001)
    _call(p, 0.0001)
    assert p.on_loop
    # Calls begun on the threads before the move end after it: their CPU, inflated
    # by the threads' contention, is not the loop's budget's business...
    for _ in range(3):
        p.record(cpu_s=0.007, timed_out=False, on_loop=False)
    assert p.on_loop
    # ...but a timeout anywhere sends the function back.
    p.record(cpu_s=0.0, timed_out=True, on_loop=False)
    assert not p.on_loop


def test_functions_that_may_block_or_inline_off_never_reach_the_loop() -> None:
    blocking = Placement(InlinePolicy(probation=1), may_block=True)
    off = Placement(InlinePolicy(enabled=False, probation=1), may_block=False)
    suspending_off = Placement(InlinePolicy(enabled=False, probation=1), may_block=True,
                               suspends=True)
    for p in (blocking, off, suspending_off):
        for _ in range(5):
            _call(p, 0.0)
        assert not p.on_loop


def test_a_function_whose_guests_are_suspended_earns_the_loop_like_any_other() -> None:
    p = Placement(InlinePolicy(budget_s=0.002, probation=3, hold_s=30), may_block=True,
                  suspends=True)
    assert p.suspends
    for _ in range(3):
        _call(p, 0.0001)
    assert p.on_loop  # its calls now run as green tasks
    _call(p, 0.0, timed_out=True)
    assert not p.on_loop
    # A function that cannot block is never a green task, whatever its module does.
    assert not Placement(InlinePolicy(), may_block=False, suspends=True).suspends


def test_may_block_is_decided_from_imports_and_capabilities(edge: EdgeHarness) -> None:
    class _Kv:
        def get(self, key: bytes) -> bytes | int:
            return -1

        def put(self, key: bytes, value: bytes, ttl_seconds: int) -> int:
            return 0

    edge.runtime._kv_factory = lambda spec: _Kv() if spec.kv.enabled else None
    edge.deploy(
        fn("echo", "echo"),
        fn("denied", "hostcalls"),  # imports kv and http_fetch, but may use neither
        fn("kv", "hostcalls", kv={"enabled": True}),
        fn("wagi", "wagi_hello"),
    )
    for fid in ("echo", "denied", "kv", "wagi"):
        edge.request("GET", f"/{fid}/")
    assert not _loaded(edge, "echo").placement.may_block
    assert not _loaded(edge, "denied").placement.may_block
    assert _loaded(edge, "kv").placement.may_block
    assert isinstance(_loaded(edge, "echo").codec, EdgeV1Codec)
    assert isinstance(_loaded(edge, "wagi").codec, WagiCodec)


def test_the_loop_serves_a_function_only_once_it_has_shown_it_is_short(
    edge: EdgeHarness,
) -> None:
    edge.runtime.inline = InlinePolicy(probation=3)
    edge.deploy(fn("echo", "echo"), fn("loop", "loop", max_execution_ms=50))
    runtime = edge.runtime
    # Not loaded yet: loading may read or download an artifact, never on the loop.
    assert runtime.handle_on_loop(_request("/echo/x", b"hi")) is None
    for _ in range(3):
        assert runtime.handle(_request("/echo/x", b"hi")).status == 200
    resp = runtime.handle_on_loop(_request("/echo/x", b"hi"))
    assert resp is not None and resp.status == 200 and resp.body == b"hi"
    # A looping function times out on the threads and never reaches the loop.
    for _ in range(4):
        assert runtime.handle(_request("/loop/")).status == 504
        assert runtime.handle_on_loop(_request("/loop/")) is None
    # Answers given before any function runs are given on the loop too.
    missing = runtime.handle_on_loop(_request("/nowhere"))
    assert missing is not None and missing.status == 404


def test_a_penalized_function_leaves_the_loop(make_edge: Any) -> None:
    from edgefn.edge.worker.fairness import PenaltyBox

    edge = make_edge(penalty=PenaltyBox(strikes=1, heavy_cpu_s=10.0))
    edge.runtime.inline = InlinePolicy(probation=1)
    edge.deploy(fn("echo", "echo"))
    edge.request("POST", "/echo/", b"x")
    assert edge.runtime.handle_on_loop(_request("/echo/", b"x")) is not None
    assert edge.runtime.penalty is not None
    edge.runtime.penalty.record("echo", timed_out=True, cpu_s=0.0)
    assert edge.runtime.handle_on_loop(_request("/echo/", b"x")) is None


class _Waiting:
    """A runtime whose requests wait until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.lock = threading.Lock()

    def handle(self, req: HttpRequest) -> HttpResponse:
        with self.lock:
            self.running += 1
        self.release.wait(10)
        return HttpResponse(200, [], b"")


class _Conn:
    def respond(self, resp: HttpResponse) -> None:
        pass


def test_the_request_pool_grows_with_what_waits_and_shrinks_back() -> None:
    runtime = _Waiting()
    loop = asyncio.new_event_loop()
    try:
        pool = RequestPool(runtime, loop, 20, spare=2, idle_s=0.2)  # type: ignore[arg-type]
        assert pool.threads == 2
        for _ in range(30):
            pool.submit(_request("/"), _Conn())  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while runtime.running < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runtime.running == 20 and pool.threads == 20  # bounded by its maximum
        runtime.release.set()
        deadline = time.monotonic() + 10
        while (runtime.running < 30 or pool.threads > 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runtime.running == 30  # the queued ten ran too
        assert pool.threads == 2  # idle threads ended, down to the spare ones
        pool.close(timeout=2)
    finally:
        loop.close()


def test_leaving_the_loop_says_which_function_and_why(caplog: Any) -> None:
    p = Placement(InlinePolicy(budget_s=0.002, probation=1, hold_s=30), may_block=False,
                  name="resize")
    _call(p, 0.0001)
    with caplog.at_level("INFO", logger="edgefn.edge.worker.dispatch"):
        _call(p, 0.0095)
    assert not p.on_loop
    assert "function resize leaves the event loop for 30 s: a call of 9.5 ms" in caplog.text
    caplog.clear()
    q = Placement(InlinePolicy(budget_s=0.002, probation=1, hold_s=30), may_block=False,
                  name="thumb")
    _call(q, 0.0001)
    with caplog.at_level("INFO", logger="edgefn.edge.worker.dispatch"):
        for _ in range(OVER_LIMIT):
            _call(q, 0.003)
    assert f"function thumb leaves the event loop for 30 s: {OVER_LIMIT} of its last " \
           f"{OVER_WINDOW} calls over the budget" in caplog.text
