"""Hot pools of instances under a memory budget.

An instance serves one request at a time. After a success it goes back to its
pool (up to `max_hot_instances`), after a trap or a timeout it is destroyed. Idle
instances expire after `idle_timeout_s`, down to `min_hot_instances`. When the
process is over its memory budget, idle instances go first, least recently used
across all functions, then the compiled modules of pools nobody is using.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from types import TracebackType

from edgefn.edge.spec import FunctionSpec, SpecKey
from edgefn.sandbox.engine import Instance, Module
from edgefn.sandbox.errors import InvocationError

# Host-side bookkeeping of one instance beyond its linear memory (store, tables,
# stacks), measured with bench/instance_memory.py.
INSTANCE_OVERHEAD_BYTES = 256 * 1024


def _footprint(inst: Instance) -> int:
    return inst.memory_bytes + INSTANCE_OVERHEAD_BYTES


class _Idle:
    __slots__ = ("instance", "last_used", "size")

    def __init__(self, instance: Instance, size: int) -> None:
        self.instance = instance
        self.size = size
        self.last_used = time.monotonic()


class InstancePool:
    """The instances of one function version in this process."""

    def __init__(self, spec: FunctionSpec, module: Module, manager: PoolManager) -> None:
        self.spec = spec
        self.key = spec.key  # computed once: it serializes the spec
        self.module = module
        self._manager = manager
        self._lock = threading.Lock()
        self._idle: deque[_Idle] = deque()  # right end: most recently used
        self.busy = 0
        self.created = 0
        self.destroyed = 0
        self.retired = False
        self.last_used = time.monotonic()
        self.reuse = module.reusable and spec.isolation == "reuse"

    # -- checkout -------------------------------------------------------------
    def checkout(self) -> _Checkout:
        """`with pool.checkout() as instance:`; a spent instance is destroyed on exit."""
        return _Checkout(self)

    def acquire(self) -> Instance:
        with self._lock:
            self.busy += 1
            self.last_used = time.monotonic()
            if self._idle:
                slot = self._idle.pop()
                self._manager.adjust(-slot.size)
                return slot.instance
        try:
            inst = self.module.instantiate()
        except BaseException:
            with self._lock:
                self.busy -= 1
            raise
        self.created += 1
        return inst

    def release(self, inst: Instance, *, spent: bool) -> None:
        # Measure outside the lock (an engine call); decide and append inside it, so
        # concurrent releases cannot all see room for one more.
        size = 0 if spent or not self.reuse else _footprint(inst)
        with self._lock:
            self.busy -= 1
            keep = (
                not spent
                and self.reuse
                and not self.retired
                and len(self._idle) < self.spec.max_hot_instances
            )
            if keep:
                self._idle.append(_Idle(inst, size))
        if keep:
            self._manager.adjust(size)
            self._manager.enforce_budget()
        else:
            self._destroy(inst)

    def _destroy(self, inst: Instance) -> None:
        inst.close()
        self.destroyed += 1

    # -- maintenance ----------------------------------------------------------
    def warm(self, target: int | None = None) -> int:
        """Create idle instances up to `min_hot_instances` (or `target`); return how many."""
        want = self.spec.min_hot_instances if target is None else target
        made = 0
        while True:
            with self._lock:
                have = len(self._idle) + self.busy
                if have >= want or self.retired or len(self._idle) >= max(
                    self.spec.max_hot_instances, self.spec.min_hot_instances
                ):
                    return made
            inst = self.module.instantiate()
            self.created += 1
            size = _footprint(inst)
            with self._lock:
                self._idle.append(_Idle(inst, size))
            self._manager.adjust(size)
            made += 1

    def expire(self, now: float) -> int:
        """Destroy instances idle longer than the timeout, keeping the minimum."""
        expired: list[_Idle] = []
        with self._lock:
            floor = 0 if self.retired else self.spec.min_hot_instances
            while (
                self._idle
                and len(self._idle) + self.busy > floor
                and now - self._idle[0].last_used > self.spec.idle_timeout_s
            ):
                expired.append(self._idle.popleft())
        for slot in expired:
            self._manager.adjust(-slot.size)
            self._destroy(slot.instance)
        return len(expired)

    def evict_oldest_idle(self) -> int:
        """Destroy the least recently used idle instance; return the bytes freed."""
        with self._lock:
            if not self._idle:
                return 0
            slot = self._idle.popleft()
        self._manager.adjust(-slot.size)
        self._destroy(slot.instance)
        return slot.size

    def oldest_idle(self) -> float | None:
        with self._lock:
            return self._idle[0].last_used if self._idle else None

    @property
    def idle(self) -> int:
        return len(self._idle)

    def retire(self) -> None:
        """No new checkouts; idle instances go now, busy ones when released."""
        with self._lock:
            self.retired = True
            idle, self._idle = list(self._idle), deque()
        for slot in idle:
            self._manager.adjust(-slot.size)
            self._destroy(slot.instance)

    def close(self) -> None:
        self.retire()
        if self.busy == 0:
            self.module.close()


class _Checkout:
    __slots__ = ("_inst", "_pool")

    def __init__(self, pool: InstancePool) -> None:
        self._pool = pool
        self._inst: Instance | None = None

    def __enter__(self) -> Instance:
        self._inst = self._pool.acquire()
        return self._inst

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._inst is not None
        self._pool.release(self._inst, spent=exc is not None and spent_by(exc))
        self._inst = None


def spent_by(exc: BaseException) -> bool:
    """Whether an instance whose call raised `exc` must be destroyed, not reused."""
    return not isinstance(exc, InvocationError) or exc.discard


class PoolManager:
    """All pools of this process, the memory budget, and the maintenance thread."""

    def __init__(self, *, memory_budget_bytes: int, maintenance_interval_s: float = 1.0) -> None:
        self.memory_budget_bytes = memory_budget_bytes
        self._pools: OrderedDict[SpecKey, InstancePool] = OrderedDict()
        self._lock = threading.Lock()
        self._idle_bytes = 0
        self._code_bytes = 0
        self.evicted_instances = 0
        self.evicted_modules = 0
        self._interval = maintenance_interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_tick: list[Callable[[], object]] = []

    # -- accounting -----------------------------------------------------------
    def adjust(self, delta: int) -> None:
        with self._lock:
            self._idle_bytes += delta

    @property
    def used_bytes(self) -> int:
        """Bytes held by idle instances and compiled modules (busy ones are in use)."""
        return self._idle_bytes + self._code_bytes

    # -- pools ----------------------------------------------------------------
    def get(self, key: SpecKey) -> InstancePool | None:
        pool = self._pools.get(key)
        if pool is not None and not pool.retired:
            return pool
        return None

    def add(self, pool: InstancePool) -> None:
        with self._lock:
            self._pools[pool.key] = pool
            self._code_bytes += pool.module.code_bytes
        self.enforce_budget()

    def pools(self) -> list[InstancePool]:
        with self._lock:
            return list(self._pools.values())

    def remove(self, key: SpecKey) -> None:
        with self._lock:
            pool = self._pools.pop(key, None)
            if pool is not None:
                self._code_bytes -= pool.module.code_bytes
        if pool is not None:
            pool.close()

    # -- budget ---------------------------------------------------------------
    def enforce_budget(self) -> None:
        if self.used_bytes <= self.memory_budget_bytes:
            return
        while self.used_bytes > self.memory_budget_bytes:
            victim: InstancePool | None = None
            oldest = float("inf")
            for pool in self.pools():
                t = pool.oldest_idle()
                if t is not None and t < oldest:
                    victim, oldest = pool, t
            if victim is None or not victim.evict_oldest_idle():
                break
            self.evicted_instances += 1
        # Still over: unload the compiled modules nobody is using, oldest first.
        if self.used_bytes > self.memory_budget_bytes:
            for pool in sorted(self.pools(), key=lambda p: p.last_used):
                if self.used_bytes <= self.memory_budget_bytes:
                    break
                if pool.busy == 0 and pool.idle == 0:
                    self.remove(pool.key)
                    self.evicted_modules += 1

    # -- maintenance ----------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        for pool in self.pools():
            pool.expire(now)
            if pool.retired and pool.busy == 0:
                self.remove(pool.key)
            elif not pool.retired:
                pool.warm()
        for fn in self.on_tick:
            fn()
        self.enforce_budget()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edgefn-pools", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception:  # keep maintaining whatever one pool did
                import logging

                logging.getLogger("edgefn.edge").exception("pool maintenance failed")

    def close(self) -> None:
        self._stop.set()
        for pool in self.pools():
            self.remove(pool.key)
