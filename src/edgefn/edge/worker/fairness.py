"""Fair shares of a worker's CPU: functions that time out or burn CPU often run apart.

A function earns a strike each time one of its invocations times out or uses
more than `heavy_cpu_s` of CPU. While its last `strikes` strikes all fell within
`window_s`, its invocations run on `threads` threads of their own, behind a
queue, paced so that together they use at most `cpu_share` of one core per
worker: after a call that used c seconds of CPU, the next one starts
c * (1 / cpu_share - 1) seconds later. Beyond the queue they are refused at once
with 503. Every other function keeps the request threads and the rest of the CPU.

Pacing rather than a lower scheduling priority alone: the guest runs without
the GIL, but the Python around it holds it, and a low-priority thread preempted
while holding the GIL stalls every request of its worker (priority inversion;
measured with bench/neighbour.py on a busy machine, the light function kept 28%
of its throughput with nice-19 threads, 81% and more with pacing). `nice` stays
available, 0 by default.
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
    """Strikes per function, and the paced threads penalized calls run on; thread-safe."""

    def __init__(
        self,
        *,
        threads: int = 1,
        queue: int = 2,
        cpu_share: float = 0.1,
        nice: int = 0,
        strikes: int = 3,
        window_s: float = 30.0,
        heavy_cpu_s: float = 0.1,
    ) -> None:
        self.threads = threads
        self.cpu_share = cpu_share
        self.nice = nice
        self.strikes = strikes
        self.window_s = window_s
        self.heavy_cpu_s = heavy_cpu_s
        # function id -> times of its last `strikes` strikes
        self._strikes: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(threads + queue)
        self._executor: ThreadPoolExecutor | None = None
        self._next_start = 0.0  # monotonic; when the next penalized call may start

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

    def admit(self, function_id: str) -> bool:
        """Before anything else is done for a request: True when the function is
        penalized and got a place (run it with `run`, then `release`), False when
        it is not penalized; Overloaded when its threads and queue are full, so the
        refusal costs as little as possible."""
        if not self.penalized(function_id):
            return False
        if not self._slots.acquire(blocking=False):
            raise Overloaded(
                "this function often times out or uses much CPU, and its share of the "
                "node is in use; retry shortly"
            )
        return True

    def release(self) -> None:
        self._slots.release()

    def run(self, call: Callable[[], T]) -> T:
        """`call()` on the penalized threads, paced; the caller holds a place (`admit`)."""
        return self._pool().submit(self._paced, call).result()

    def _paced(self, call: Callable[[], T]) -> T:
        with self._lock:
            wait = self._next_start - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        c0 = time.thread_time()
        try:
            return call()
        finally:
            used = time.thread_time() - c0
            with self._lock:
                start = max(self._next_start, time.monotonic())
                self._next_start = start + used * (1 / self.cpu_share - 1)

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self.threads, thread_name_prefix="edgefn-penalized", initializer=self._lower
                )
            return self._executor

    def _lower(self) -> None:
        if not self.nice:
            return
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except (AttributeError, OSError) as exc:  # not Linux: one priority per process
            log.warning("cannot lower the priority of penalized threads: %s", exc)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
