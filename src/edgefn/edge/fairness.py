"""Fair shares of a worker's CPU: functions that time out or burn CPU often run apart.

A function earns a strike each time one of its invocations times out or uses
more than `heavy_cpu_s` of CPU. While its last `strikes` strikes all fell within
`window_s`, its invocations run on a few threads of their own at a low
scheduling priority (nice 19 on Linux: the kernel gives them the CPU that normal
threads leave), behind a short queue; beyond that they are
refused at once with 503. Every other function keeps the request threads and,
under contention, nearly all of the CPU. The guest runs without the GIL, so the
OS scheduler, not Python, is what divides the cores; only a thread's priority
reaches it. An unprivileged process may lower a thread's priority but never
raise it back, hence threads reserved for penalized calls instead of renicing
request threads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from edgefn.edge.errors import Overloaded

log = logging.getLogger("edgefn.edge")

T = TypeVar("T")


class PenaltyBox:
    """Strike scores per function and the low-priority threads; thread-safe."""

    def __init__(
        self,
        *,
        threads: int = 2,
        queue: int = 2,
        nice: int = 19,
        strikes: int = 3,
        window_s: float = 30.0,
        heavy_cpu_s: float = 0.1,
    ) -> None:
        self.threads = threads
        self.nice = nice
        self.strikes = strikes
        self.window_s = window_s
        self.heavy_cpu_s = heavy_cpu_s
        # function id -> times of its last `strikes` strikes
        self._strikes: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(threads + queue)
        self._executor: ThreadPoolExecutor | None = None

    def record(self, function_id: str, *, timed_out: bool, cpu_s: float) -> None:
        """After each invocation: a timeout or a heavy call is a strike."""
        if not timed_out and cpu_s <= self.heavy_cpu_s:
            return
        with self._lock:
            times = self._strikes.get(function_id)
            if times is None:
                times = self._strikes[function_id] = deque(maxlen=self.strikes)
            times.append(time.monotonic())

    def penalized(self, function_id: str) -> bool:
        times = self._strikes.get(function_id)
        if times is None:  # the common case: one dict lookup
            return False
        with self._lock:
            if len(times) < self.strikes:
                return False
            if time.monotonic() - times[0] <= self.window_s:
                return True
            if time.monotonic() - times[-1] > self.window_s:
                self._strikes.pop(function_id, None)  # forgotten
            return False

    def run(self, call: Callable[[], T]) -> T:
        """`call()` on a low-priority thread; Overloaded when they and the queue are full."""
        if not self._slots.acquire(blocking=False):
            raise Overloaded(
                "this function often times out or uses much CPU, and its share of the "
                "node is in use; retry shortly"
            )
        try:
            return self._pool().submit(call).result()
        finally:
            self._slots.release()

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.threads, thread_name_prefix="edgefn-penalized", initializer=self._lower
                )
            return self._executor

    def _lower(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except (AttributeError, OSError) as exc:  # not Linux: one priority per process
            log.warning("cannot lower the priority of penalized threads: %s", exc)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
