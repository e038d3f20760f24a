"""Hot pools: no sharing, reuse, discard, warm-up, idle expiry, the memory budget."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgefn.edge.worker.pool import INSTANCE_OVERHEAD_BYTES, InstancePool, PoolManager
from edgefn.sandbox import Engine, GuestTrap
from tests.edge.conftest import EdgeHarness, fn


def test_fifty_parallel_checkouts_never_share_an_instance(engine: Engine) -> None:
    spec = fn("c", "counter", max_hot_instances=64, min_hot_instances=0)
    manager = PoolManager(memory_budget_bytes=1 << 30)
    module = engine.compile(Path(spec.artifact).read_bytes(), spec.limits, spec.wasi)
    pool = InstancePool(spec, module, manager)
    barrier = threading.Barrier(50)
    held: list[int] = []
    lock = threading.Lock()

    def hold() -> None:
        with pool.checkout() as inst:
            with lock:
                held.append(id(inst))
            barrier.wait(timeout=30)  # all 50 are checked out at the same moment

    with ThreadPoolExecutor(50) as ex:
        for f in [ex.submit(hold) for _ in range(50)]:
            f.result()
    assert len(set(held)) == 50
    assert pool.busy == 0 and pool.idle == 50
    manager.close()


def test_fifty_parallel_requests_each_get_their_own_answer(edge: EdgeHarness) -> None:
    edge.deploy(fn("echo", "echo", max_hot_instances=8))

    def call(i: int) -> bytes:
        return edge.request("POST", f"/echo/{i}", f"payload-{i}".encode() * 50).body

    with ThreadPoolExecutor(50) as ex:
        bodies = list(ex.map(call, range(200)))
    assert bodies == [f"payload-{i}".encode() * 50 for i in range(200)]
    assert edge.pool("echo").idle <= 8


def test_instance_is_reused_after_success(edge: EdgeHarness) -> None:
    edge.deploy(fn("c", "counter", min_hot_instances=1))
    assert [edge.request("GET", "/c/").body for _ in range(3)] == [b"1", b"2", b"3"]
    assert ("x-init", "1") in edge.request("GET", "/c/").headers
    assert edge.pool("c").created == 1


def test_per_request_isolation_gives_a_fresh_instance_each_time(edge: EdgeHarness) -> None:
    edge.deploy(fn("c", "counter", isolation="per-request"))
    assert [edge.request("GET", "/c/").body for _ in range(3)] == [b"1", b"1", b"1"]


def test_instance_is_discarded_after_a_trap(engine: Engine) -> None:
    spec = fn("c", "counter", min_hot_instances=1)
    manager = PoolManager(memory_budget_bytes=1 << 30)
    module = engine.compile(Path(spec.artifact).read_bytes(), spec.limits, spec.wasi)
    pool = InstancePool(spec, module, manager)
    pool.warm()
    with pool.checkout() as first:
        pass
    with pytest.raises(GuestTrap), pool.checkout() as again:
        assert again is first
        raise GuestTrap("boom")
    assert pool.destroyed == 1 and pool.idle == 0
    with pool.checkout() as fresh:
        assert fresh is not first
    manager.close()


def test_timeout_discards_the_instance(edge: EdgeHarness) -> None:
    edge.deploy(fn("loop", "loop", max_execution_ms=50, min_hot_instances=1))
    pool = edge.pool("loop")
    assert edge.request("GET", "/loop/").status == 504
    assert pool.destroyed == 1 and pool.idle == 0


def test_warm_up_on_load(edge: EdgeHarness) -> None:
    edge.deploy(fn("c", "counter", min_hot_instances=3))
    pool = edge.pool("c")
    assert pool.idle == 3 and pool.created == 3


def test_idle_instances_expire_down_to_the_minimum(edge: EdgeHarness) -> None:
    edge.deploy(fn("c", "counter", min_hot_instances=1, idle_timeout_s=0.05))
    pool = edge.pool("c")
    with pool.checkout(), pool.checkout(), pool.checkout():
        pass
    assert pool.idle == 3
    time.sleep(0.1)
    edge.runtime.pools.tick()
    assert pool.idle == 1


def test_lru_eviction_under_the_memory_budget(make_edge) -> None:  # type: ignore[no-untyped-def]
    # Each idle counter instance counts its linear memory plus the fixed overhead;
    # the budget holds about three of them plus the compiled code.
    per_instance = INSTANCE_OVERHEAD_BYTES + 2 * 65536
    edge = make_edge(memory_budget_bytes=per_instance * 3 + 6 * 200_000)
    specs = [fn(f"f{i}", "counter", min_hot_instances=0) for i in range(6)]
    edge.deploy(*specs)
    for i in range(6):
        assert edge.request("GET", f"/f{i}/").status == 200
        time.sleep(0.002)
    manager = edge.runtime.pools
    assert manager.used_bytes <= manager.memory_budget_bytes
    assert manager.evicted_instances >= 2
    idle = {p.spec.id: p.idle for p in manager.pools()}
    # The most recently used functions keep their instances; the oldest lost theirs.
    assert idle["f5"] == 1 and idle["f0"] == 0


def test_max_hot_instances_bounds_what_is_kept(edge: EdgeHarness) -> None:
    edge.deploy(fn("c", "counter", max_hot_instances=2, min_hot_instances=0))
    assert edge.request("GET", "/c/").status == 200  # loaded on first use
    pool = edge.pool("c")
    assert pool.idle == 1
    with pool.checkout(), pool.checkout(), pool.checkout(), pool.checkout():
        pass
    assert pool.idle == 2 and pool.destroyed == 2
    assert pool.created == 4
