"""Requests that wait without a thread: green tasks on a worker's event loop.

A request for a function that waits in a host call (`http_fetch`, KV, secrets)
used to hold a request thread for as long as it waited, and a hundred such
requests meant a hundred threads handing the GIL to each other as their
answers arrived. Where the engine can suspend a guest in a host call (wasmtime's
async calls: the guest runs on a stack of its own, `Module.suspends`), the
request runs instead in a **green task** (a greenlet) on the event loop:

- the runtime's code for the request is the same as on a thread;
- the guest runs until it calls a host function that waits; the engine's call
  returns *pending* with the guest suspended on its own stack, and the task runs
  the host call's work;
- that work waits through `wait`, which switches back to the loop until an
  asyncio future is done (a socket readable, a thread pool's answer), so the
  loop serves other requests meanwhile, and then resumes the task;
- the task resumes the guest with the host call's answer.

A switch happens only in `wait`, never with a guest's frames on the task's
stack (the guest is suspended on its own), and never with a lock held: callers
wait outside their locks. Outside a green task, `wait` is not used: the same
code blocks its thread (`run_blocking` calls the function, the HTTP client
uses blocking sockets).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")


class Green(greenlet.greenlet):
    """One request's task; `away_cpu` is the CPU time its thread spent on other work
    while it waited (the loop serving other requests), which is not its own."""

    def __init__(self, run: Callable[[], Any], loop: asyncio.AbstractEventLoop,
                 executor: concurrent.futures.Executor | None) -> None:
        super().__init__(run)
        self.loop = loop
        self.executor = executor
        self.away_cpu = 0.0

    def _wake(self, _fut: Any = None) -> None:
        if not self.dead:
            self.switch()


def current() -> Green | None:
    """The green task running now, or None on a thread or on the loop itself."""
    g = greenlet.getcurrent()
    return g if isinstance(g, Green) else None


def away_cpu() -> float:
    """CPU time this thread spent elsewhere while the current green task waited (0 off one)."""
    g = greenlet.getcurrent()
    return g.away_cpu if isinstance(g, Green) else 0.0


def spawn(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any],
          executor: concurrent.futures.Executor | None = None) -> Green:
    """Start `fn` as a green task now, on the loop's thread: it runs until its first
    wait (or to its end) before this returns. `fn` must not raise: what it does with
    its own failures is its business, as on a thread."""
    task = Green(fn, loop, executor)
    task.parent = greenlet.getcurrent()
    task.switch()
    return task


def wait(fut: asyncio.Future[T], timeout: float | None = None) -> T:
    """In a green task: the result of `fut`, letting the loop run until it is done.

    Raises `TimeoutError` (and cancels `fut`) after `timeout` seconds, and whatever
    `fut` raises. The loop resumes the task from `fut`'s done callback.
    """
    task = greenlet.getcurrent()
    if not isinstance(task, Green):
        raise RuntimeError("wait() outside a green task")
    if not fut.done():
        timer = None
        if timeout is not None:
            timer = task.loop.call_later(max(0.0, timeout), fut.cancel)
        fut.add_done_callback(task._wake)
        c0 = time.thread_time()
        try:
            assert task.parent is not None
            task.parent.switch()
        finally:
            task.away_cpu += time.thread_time() - c0
            if timer is not None:
                timer.cancel()
            fut.remove_done_callback(task._wake)
        if not fut.done():  # woken by something else: the loop is going away
            fut.cancel()
            raise TimeoutError("the worker is stopping")
    if fut.cancelled():
        raise TimeoutError(f"no answer within {timeout} s")
    return fut.result()


def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`: on a thread of the task's executor from a green task (the loop runs
    meanwhile), else right here. For work that has no non-blocking form (a Redis
    client's call, the secrets broker's), bounded by its own timeouts."""
    task = current()
    if task is None or task.executor is None:
        return fn(*args)
    return wait(asyncio.wrap_future(task.executor.submit(fn, *args), loop=task.loop))


__all__ = ["Green", "away_cpu", "current", "run_blocking", "spawn", "wait"]
