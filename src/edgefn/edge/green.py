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
import errno
import gc
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import greenlet

T = TypeVar("T")


class Green(greenlet.greenlet):
    """A green task: it runs one request's function, then waits idle for the next
    (`spawn`); `away_cpu` is the CPU time its thread spent on other work while the
    current function waited (the loop serving other requests), which is not its own.

    Kept rather than made anew: a new greenlet maps a fresh block for its Python
    frames on its first call and unmaps it when it ends, about 10 µs a task."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 executor: concurrent.futures.Executor | None) -> None:
        super().__init__(self._serve)
        self.loop = loop
        self.executor = executor
        self.away_cpu = 0.0
        # The longest stretch of its own CPU between two waits since `call_started`
        # (it held the loop that long at once), and its own CPU where the current began.
        self.longest = 0.0
        self.stretch_from = 0.0

    def _serve(self, fn: Callable[[], Any]) -> None:
        while True:
            fn()  # what it raises ends this task and goes to the loop, as `spawn` says
            self.away_cpu = 0.0
            idle = _idle()
            if len(idle) >= MAX_IDLE:
                return
            idle.append(self)
            got: Any = None
            while not callable(got):  # a stray wake of an idle task changes nothing
                assert self.parent is not None
                got = self.parent.switch()
            fn = got

    def _wake(self, _fut: Any = None) -> None:
        if not self.dead:
            self.switch()


# Idle tasks kept per thread (a greenlet runs only on the thread that made it).
MAX_IDLE = 256
_local = threading.local()


def _idle() -> list[Green]:
    try:
        return _local.idle
    except AttributeError:
        _local.idle = []
        return _local.idle


def current() -> Green | None:
    """The green task running now, or None on a thread or on the loop itself."""
    g = greenlet.getcurrent()
    return g if isinstance(g, Green) else None


def away_cpu() -> float:
    """CPU time this thread spent elsewhere while the current green task waited (0 off one)."""
    g = greenlet.getcurrent()
    return g.away_cpu if isinstance(g, Green) else 0.0


def call_started() -> float:
    """This thread's own CPU time at the start of a call: its CPU time less the
    collections of the heap (`collector_cpu`) and, in a green task, less what the loop
    did for others while it waited (`away_cpu`); from here a green task's stretches are
    measured. One reading at each end of a call: this is every request's path."""
    g = greenlet.getcurrent()
    own = time.thread_time() - _gc.total
    if isinstance(g, Green):
        own -= g.away_cpu
        g.longest, g.stretch_from = 0.0, own
    return own


def call_ended(own0: float) -> tuple[float, float]:
    """For the call begun at `own0` (`call_started`): the CPU it used itself, and the
    longest it held the thread at once: in a green task its longest stretch of CPU
    between two waits, else all of it."""
    g = greenlet.getcurrent()
    own = time.thread_time() - _gc.total
    if isinstance(g, Green):
        own -= g.away_cpu
        return own - own0, max(g.longest, own - g.stretch_from)
    return own - own0, own - own0


# -- the collector's CPU -------------------------------------------------------------
# A collection of the older generations scans what every request on the worker holds
# (2 to 20 ms with 100 requests in flight); it stops whichever call happened to
# allocate last, and is not that call's work: a guest charged for it would be sent
# off the loop, and its project's CPU quota charged, for its neighbours' objects.
# The youngest generation's collections are short and left in.
class _Collections(threading.local):
    total = 0.0  # CPU seconds in collections on this thread
    start: float | None = None  # `thread_time` when the one under way began


_gc = _Collections()


def collector_cpu() -> float:
    """CPU time this thread spent in collections of generations 1 and 2 (with
    `track_collections` installed; else 0)."""
    return _gc.total


def _on_collection(phase: str, info: dict[str, int]) -> None:
    if info["generation"] == 0:
        return
    if phase == "start":
        _gc.start = time.thread_time()
    elif (start := _gc.start) is not None:
        _gc.total += time.thread_time() - start
        _gc.start = None


def track_collections() -> None:
    """Count the collector's CPU per thread (`collector_cpu`), from now on."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)


def spawn(loop: asyncio.AbstractEventLoop, fn: Callable[[], Any],
          executor: concurrent.futures.Executor | None = None) -> Green:
    """Start `fn` as a green task on the loop's thread. Called from the loop itself, it
    runs until its first wait (or to its end) before this returns; called from another
    task, it starts at the loop's next turn. `fn` must not raise: what it does with its
    own failures is its business, as on a thread."""
    caller = greenlet.getcurrent()
    root = caller
    while isinstance(root, Green):  # a task's waits always go back to the loop itself
        root = root.parent
    idle = _idle()
    if idle:
        task = idle.pop()
        task.loop, task.executor = loop, executor
    else:
        task = Green(loop, executor)
    task.parent = root
    if caller is root:
        task.switch(fn)
    else:
        loop.call_soon(task.switch, fn)
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
        c0, g0 = time.thread_time(), _gc.total
        # Its own CPU now (`call_started`); the same when it resumes (the wait is all away).
        own = c0 - task.away_cpu - g0
        task.longest = max(task.longest, own - task.stretch_from)
        task.stretch_from = own
        try:
            assert task.parent is not None
            task.parent.switch()
        finally:
            # The collections meanwhile are subtracted on their own (`call_ended`).
            task.away_cpu += time.thread_time() - c0 - (_gc.total - g0)
            if timer is not None:
                timer.cancel()
            fut.remove_done_callback(task._wake)
        if not fut.done():  # woken by something else: the loop is going away
            fut.cancel()
            raise TimeoutError("the worker is stopping")
    if fut.cancelled():
        raise TimeoutError(f"no answer within {timeout} s")
    return fut.result()


def result(fut: concurrent.futures.Future[T], timeout: float | None = None) -> T:
    """The result of work running on another thread: in a green task the loop runs
    meanwhile, on a thread the thread waits. `TimeoutError` after `timeout` seconds."""
    task = current()
    if task is None:
        return fut.result(timeout)
    return wait(asyncio.wrap_future(fut, loop=task.loop), timeout)


def run_blocking(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)`: on a thread of the task's executor from a green task (the loop runs
    meanwhile), else right here. For work that has no non-blocking form (a Redis
    client's call, the secrets broker's), bounded by its own timeouts."""
    task = current()
    if task is None or task.executor is None:
        return fn(*args)
    return result(task.executor.submit(fn, *args))


READ, WRITE = select.POLLIN, select.POLLOUT


def ready(sock: socket.socket, events: int, timeout: float | None) -> None:
    """Until `sock` is ready for `events` (`READ` or `WRITE`), at most `timeout` seconds
    (None: no limit), else `TimeoutError`: in a green task the loop runs meanwhile; on a
    thread, the thread waits in `poll`."""
    task = current()
    if task is None:
        poller = select.poll()
        poller.register(sock, events)
        if not poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)):
            raise TimeoutError("timed out")
        return
    loop = task.loop
    fut = loop.create_future()
    fd = sock.fileno()
    add, remove = ((loop.add_reader, loop.remove_reader) if events == READ
                   else (loop.add_writer, loop.remove_writer))
    add(fd, _settle, fut)
    try:
        wait(fut, timeout)
    finally:
        remove(fd)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class CooperativeSocket:
    """A socket (TLS or not) with the blocking interface (`settimeout`, `recv_into`,
    `sendall`, `connect`, `do_handshake`) whose waits go through `ready`: for clients
    written for blocking sockets (redis-py, the fetch client) that must not block a
    green task's loop. As on a blocking socket, the timeout bounds each operation as
    a whole, `TimeoutError` (which is `socket.timeout`) past it; 0 is non-blocking."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._timeout: float | None = None

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _wait(self, events: int, exc: OSError, deadline: float | None) -> None:
        if self._timeout == 0:  # non-blocking, as the caller asked
            raise exc
        ready(self.sock, events, None if deadline is None else deadline - time.monotonic())

    def _io(self, want: int, op: Callable[..., T], *args: Any,
            deadline: float | None = None) -> T:
        """`op(*args)` once the socket is ready for it; `want` is what a plain socket's
        would-block means (TLS says itself whether it needs to read or write)."""
        if deadline is None:
            deadline = self._deadline()
        while True:
            try:
                return op(*args)
            except ssl.SSLWantReadError as exc:
                self._wait(READ, exc, deadline)
            except ssl.SSLWantWriteError as exc:
                self._wait(WRITE, exc, deadline)
            except BlockingIOError as exc:
                self._wait(want, exc, deadline)

    def connect(self, address: Any) -> None:
        err = self.sock.connect_ex(address)
        if err == errno.EINPROGRESS:
            self._wait(WRITE, BlockingIOError(err, os.strerror(err)), self._deadline())
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))

    def do_handshake(self) -> None:
        """The TLS handshake of a socket wrapped with `do_handshake_on_connect=False`."""
        assert isinstance(self.sock, ssl.SSLSocket)
        self._io(READ, self.sock.do_handshake)

    def recv(self, size: int, flags: int = 0) -> bytes:
        return self._io(READ, self.sock.recv, size, flags)

    def recv_into(self, buffer: Any, size: int = 0, flags: int = 0) -> int:
        return self._io(READ, self.sock.recv_into, buffer, size, flags)

    def sendall(self, data: Any) -> None:
        deadline = self._deadline()
        view = memoryview(data)
        while view:
            view = view[self._io(WRITE, self.sock.send, view, deadline=deadline):]

    def __getattr__(self, name: str) -> Any:  # fileno, setsockopt, shutdown, close, ...
        return getattr(self.sock, name)


__all__ = ["READ", "WRITE", "CooperativeSocket", "Green", "away_cpu", "call_ended", "call_started",
           "collector_cpu", "current", "ready", "result", "run_blocking", "spawn",
           "track_collections", "wait"]
