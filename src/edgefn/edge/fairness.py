"""Fair shares of a worker's CPU: functions that time out or burn CPU often run apart.

A function earns a strike each time one of its invocations times out or uses
more than `heavy_cpu_s` of CPU; strikes decay with a half-life of `half_life_s`.
While its score is at least `strikes`, its invocations run on a few threads of
their own at a low scheduling priority (nice 19 on Linux: the kernel gives them
the CPU that normal threads leave), behind a short queue; beyond that they are
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
        strikes: float = 3.0,
        half_life_s: float = 30.0,
        heavy_cpu_s: float = 0.1,
    ) -> None:
        self.threads = threads
        self.nice = nice
        self.strikes = strikes
        self.half_life_s = half_life_s
        self.heavy_cpu_s = heavy_cpu_s
        self._scores: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(threads + queue)
        self._executor: ThreadPoolExecutor | None = None

    def _decayed(self, function_id: str, now: float) -> float:
        found = self._scores.get(function_id)
        if found is None:
            return 0.0
        score, at = found
        return score * 0.5 ** ((now - at) / self.half_life_s)

    def record(self, function_id: str, *, timed_out: bool, cpu_s: float) -> None:
        """After each invocation: a timeout or a heavy call is a strike."""
        if not timed_out and cpu_s <= self.heavy_cpu_s:
            return
        now = time.monotonic()
        with self._lock:
            self._scores[function_id] = (self._decayed(function_id, now) + 1.0, now)

    def penalized(self, function_id: str) -> bool:
        if function_id not in self._scores:  # the common case: one dict lookup
            return False
        now = time.monotonic()
        with self._lock:
            score = self._decayed(function_id, now)
            if score < 0.05:
                del self._scores[function_id]
        return score >= self.strikes

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
