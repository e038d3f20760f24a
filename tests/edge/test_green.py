"""Green tasks (edge/green.py): requests that wait without a thread, on a real uvloop.

Each test runs its green tasks on a real event loop and checks what matters: the
loop keeps running other work while a task waits (a socket, Redis, a suspended
guest), a task gets its answer or its timeout, and the CPU the loop spent on
others is not charged to the task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import uvloop

from edgefn.edge import green
from edgefn.edge.kv.redis import RedisKvStore
from edgefn.sandbox import Limits, WasiOptions, create_engine
from edgefn.sandbox.errors import GuestTimeout
from tests.conftest import wasm_path
from tests.sandbox.test_engine_conformance import FakeHost, request


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


def run_tasks(loop: asyncio.AbstractEventLoop, *fns: Callable[[], Any],
              executor: concurrent.futures.Executor | None = None,
              timeout: float = 10.0) -> list[Any]:
    """Run each `fn` as a green task on `loop` until all are done; their results."""
    results: list[Any] = [None] * len(fns)
    left = [len(fns)]
    done = loop.create_future()

    def task(i: int, fn: Callable[[], Any]) -> None:
        try:
            results[i] = fn()
        except BaseException as exc:  # handed to the test
            results[i] = exc
        left[0] -= 1
        if not left[0]:
            loop.call_soon(done.set_result, None)

    def start() -> None:
        for i, fn in enumerate(fns):
            green.spawn(loop, lambda i=i, fn=fn: task(i, fn), executor)

    loop.call_soon(start)
    loop.run_until_complete(asyncio.wait_for(done, timeout))
    return results


def ticker(loop: asyncio.AbstractEventLoop, every: float = 0.01) -> list[float]:
    """Times at which the loop ran a callback, every `every` s: proof it was not blocked."""
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(time.monotonic())
        loop.call_later(every, tick)

    loop.call_soon(tick)
    return ticks


def test_a_task_waits_while_the_loop_runs_others(loop: asyncio.AbstractEventLoop) -> None:
    ticks = ticker(loop)
    events: list[str] = []

    def sleeper(name: str, seconds: float) -> Callable[[], float]:
        def run() -> float:
            events.append(f"start {name}")
            fut = loop.create_future()
            loop.call_later(seconds, fut.set_result, seconds)
            result = green.wait(fut)
            events.append(f"end {name}")
            return result
        return run

    started = time.monotonic()
    assert run_tasks(loop, sleeper("a", 0.2), sleeper("b", 0.2), sleeper("c", 0.1)) == [
        0.2, 0.2, 0.1]
    # The three waited side by side, the shortest ending first, the loop ticking meanwhile.
    assert events[:3] == ["start a", "start b", "start c"]
    assert events[3] == "end c"
    assert len([t for t in ticks if started < t < started + 0.09]) >= 4


def test_wait_times_out_and_cancels(loop: asyncio.AbstractEventLoop) -> None:
    futures: list[asyncio.Future[None]] = []

    def never() -> None:
        fut: asyncio.Future[None] = loop.create_future()
        futures.append(fut)
        green.wait(fut, timeout=0.05)

    [result] = run_tasks(loop, never)
    assert isinstance(result, TimeoutError)
    assert futures[0].cancelled()


def test_wait_outside_a_task_is_refused(loop: asyncio.AbstractEventLoop) -> None:
    with pytest.raises(RuntimeError, match="outside a green task"):
        green.wait(loop.create_future())


def test_run_blocking_uses_the_pool_in_a_task_and_the_caller_elsewhere(
    loop: asyncio.AbstractEventLoop,
) -> None:
    def where() -> str:
        return threading.current_thread().name

    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="blocking") as pool:
        [name] = run_tasks(loop, lambda: green.run_blocking(where), executor=pool)
    assert name.startswith("blocking")
    assert green.run_blocking(where) == threading.current_thread().name


def test_cpu_the_loop_spends_on_others_is_not_the_tasks(loop: asyncio.AbstractEventLoop) -> None:
    def burn() -> None:
        end = time.thread_time() + 0.1
        while time.thread_time() < end:
            pass

    def waiter() -> tuple[float, float]:
        c0 = time.thread_time() + green.away_cpu()
        fut = loop.create_future()
        loop.call_soon(burn)  # the loop's other work, while this task waits
        loop.call_later(0.15, fut.set_result, None)
        green.wait(fut)
        return time.thread_time() - green.away_cpu() - c0, green.away_cpu()

    [(own, away)] = run_tasks(loop, waiter)
    assert away >= 0.09
    assert own < 0.05


@pytest.fixture
def collections() -> Iterator[list[object]]:
    """The collector's CPU counted (as a worker does), and a heap that takes it a while
    to scan: a list of objects the test fills."""
    green.track_collections()
    heap: list[object] = [[i] for i in range(300_000)]
    try:
        yield heap
    finally:
        gc.callbacks.remove(green._on_collection)
        heap.clear()


def test_a_collection_is_not_charged_to_the_call_it_interrupts(
    collections: list[object],
) -> None:
    c0, own0 = time.thread_time(), green.call_started()
    gc.collect()
    spent, own = time.thread_time() - c0, green.call_ended(own0)[0]
    assert spent > 0.005  # the full collection scanned the heap
    assert own < spent / 4


def test_a_collection_while_a_task_waits_is_subtracted_once(
    loop: asyncio.AbstractEventLoop, collections: list[object],
) -> None:
    def waiter() -> tuple[float, float, float]:
        c0, own0, gc0 = time.thread_time(), green.call_started(), green.collector_cpu()
        fut = loop.create_future()
        loop.call_soon(gc.collect)  # on the loop, while this task waits
        loop.call_later(0.05, fut.set_result, None)
        green.wait(fut)
        return (time.thread_time() - c0, green.call_ended(own0)[0],
                green.collector_cpu() - gc0)

    [(spent, own, collected)] = run_tasks(loop, waiter)
    assert collected > 0.005 and spent >= collected
    # Neither charged to the task nor subtracted twice (once as away, once as collected).
    assert -0.001 < own < 0.005


def test_a_task_holds_the_loop_only_for_its_longest_stretch_between_waits(
    loop: asyncio.AbstractEventLoop,
) -> None:
    def burn(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def pause() -> None:
        fut = loop.create_future()
        loop.call_soon(burn, 0.05)  # the loop's work for others: in neither figure
        loop.call_later(0.06, fut.set_result, None)
        green.wait(fut)

    def task() -> tuple[float, float]:
        c0 = green.call_started()
        burn(0.02)
        pause()
        burn(0.04)
        pause()
        burn(0.01)
        return green.call_ended(c0)

    [(total, longest)] = run_tasks(loop, task)
    assert 0.07 <= total < 0.1
    assert 0.04 <= longest < 0.055
    # Off a task, a call is one stretch.
    c0 = green.call_started()
    burn(0.02)
    total, longest = green.call_ended(c0)
    assert total == longest and 0.02 <= total < 0.05


def test_a_task_started_from_a_task_returns_to_the_loop(loop: asyncio.AbstractEventLoop) -> None:
    order: list[str] = []

    def inner() -> None:
        fut = loop.create_future()
        loop.call_later(0.05, fut.set_result, None)
        green.wait(fut)
        order.append("inner")

    def outer() -> None:
        green.spawn(loop, inner)
        order.append("outer")

    run_tasks(loop, outer)
    loop.run_until_complete(asyncio.sleep(0.2))
    assert order == ["outer", "inner"]


def test_a_finished_task_serves_the_next_and_ignores_stray_wakes(
    loop: asyncio.AbstractEventLoop,
) -> None:
    def waits() -> Any:
        fut = loop.create_future()
        loop.call_soon(fut.set_result, None)
        loop.call_soon(time.sleep, 0.02)  # CPU-free, but charged as away
        green.wait(fut)
        return green.current()

    # Two at once are two tasks; once done, both are kept and serve the next ones.
    first = run_tasks(loop, waits, waits)
    assert first[0] is not first[1]
    second = run_tasks(loop, waits, waits)
    assert {id(t) for t in second} == {id(t) for t in first}
    assert all(t.away_cpu == 0.0 and not t.dead for t in first)
    # A wake of an idle task (a callback left behind) runs nothing and keeps it idle.
    ran: list[int] = []
    first[0]._wake()
    assert not first[0].dead and not ran
    assert run_tasks(loop, lambda: ran.append(1) or green.current()) == [first[0]]
    assert ran == [1]


def test_a_task_whose_function_raises_is_not_kept(loop: asyncio.AbstractEventLoop) -> None:
    [kept] = run_tasks(loop, green.current)
    errors: list[BaseException] = []

    def fails() -> None:
        raise RuntimeError("boom")

    def start() -> None:
        try:
            green.spawn(loop, fails)
        except RuntimeError as exc:  # raised into the loop, where the task was started
            errors.append(exc)

    loop.call_soon(start)
    loop.run_until_complete(asyncio.sleep(0.05))
    assert [str(e) for e in errors] == ["boom"]
    assert kept.dead
    [fresh] = run_tasks(loop, green.current)
    assert fresh is not kept and not fresh.dead


def test_a_cooperative_socket_waits_on_the_loop_and_times_out(
    loop: asyncio.AbstractEventLoop,
) -> None:
    ticks = ticker(loop)
    a, b = socket.socketpair()
    sock = green.CooperativeSocket(a)
    sock.settimeout(2.0)

    def reader() -> bytes:
        buf = bytearray(16)
        n = sock.recv_into(buf)
        return bytes(buf[:n])

    loop.call_later(0.15, b.sendall, b"late")
    started = time.monotonic()
    assert run_tasks(loop, reader) == [b"late"]
    assert len([t for t in ticks if started < t < started + 0.14]) >= 5

    sock.settimeout(0.05)
    [timed_out] = run_tasks(loop, lambda: sock.recv(4))
    assert isinstance(timed_out, TimeoutError)
    # On a thread the same socket blocks, within its timeout.
    with pytest.raises(TimeoutError):
        sock.recv(4)
    b.sendall(b"x")
    assert sock.recv(4) == b"x"
    # Non-blocking, as redis-py sets it to peek: the socket's own error, errno and all.
    sock.settimeout(0)
    with pytest.raises(BlockingIOError) as info:
        sock.recv(4)
    assert info.value.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
    a.close()
    b.close()


def test_redis_kv_calls_in_tasks_let_the_loop_run(loop: asyncio.AbstractEventLoop) -> None:
    url = os.environ.get("EDGEFN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    store = RedisKvStore(url, timeout_s=2.0)
    assert store.cooperative
    namespace = f"green-{os.getpid()}"
    store.put(namespace, b"k", b"v", None)
    admin = redis.Redis.from_url(url)
    try:
        ticks = ticker(loop)
        # Redis holds every client's commands for 300 ms: the reads wait on the loop.
        admin.execute_command("CLIENT", "PAUSE", "300", "ALL")
        started = time.monotonic()
        got = run_tasks(loop, *[lambda: store.get(namespace, b"k")] * 5)
        elapsed = time.monotonic() - started
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
        admin.close()
    assert got == [b"v"] * 5
    assert elapsed >= 0.2  # they did wait for the pause
    assert len([t for t in ticks if started < t < started + 0.25]) >= 5
    store.close()


def test_a_suspended_guest_waits_on_the_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Two guests suspended in `http_fetch` at once, on one thread, the loop running."""
    engine = create_engine("wasmtime")
    module = engine.compile(wasm_path("hostcalls").read_bytes(), Limits(), WasiOptions())
    assert module.suspends

    class LoopHost(FakeHost):
        def http_fetch(self, req: bytes) -> bytes | int:
            fut = loop.create_future()
            loop.call_later(0.1, fut.set_result, b"200\n\n" + req.split(b" ")[1])
            return green.wait(fut)

    ticks = ticker(loop)
    instances = [module.instantiate() for _ in range(2)]

    def call(i: int) -> bytes:
        body = f"GET http://upstream.test/{i}\n\n".encode()
        return instances[i].invoke(request("POST", "/fetch", body), LoopHost())

    started = time.monotonic()
    answers = run_tasks(loop, lambda: call(0), lambda: call(1))
    # hostcalls.wasm answers with what the fetch returned: each guest got its own.
    assert b"200\n\nhttp://upstream.test/0" in answers[0]
    assert b"200\n\nhttp://upstream.test/1" in answers[1]
    assert len([t for t in ticks if started < t < started + 0.09]) >= 4
    # Past its deadline while suspended: a timeout, and the instance is closed.
    slow = FakeHost(seconds=0.05)
    slow.http_fetch = LoopHost.http_fetch.__get__(slow)  # type: ignore[method-assign]
    [late] = run_tasks(loop, lambda: instances[0].invoke(
        request("POST", "/fetch", b"GET http://upstream.test/x\n\n"), slow))
    assert isinstance(late, GuestTimeout)
    for inst in instances:
        inst.close()
    module.close()
    engine.close()


def test_blocking_engines_do_not_suspend() -> None:
    from edgefn.sandbox import WasmtimeOptions

    blocking = create_engine("wasmtime", options=WasmtimeOptions(suspend_waiting=False))
    default = create_engine("wasmtime")
    try:
        for name, expected in (("hostcalls", True), ("echo", False), ("wagi_hello", False)):
            wasm = wasm_path(name).read_bytes()
            assert default.compile(wasm, Limits(), WasiOptions()).suspends is expected, name
            assert not blocking.compile(wasm, Limits(), WasiOptions()).suspends, name
    finally:
        blocking.close()
        default.close()
