"""Several control-plane replicas on one database: leases (SQLite and PostgreSQL),
wake-ups from one replica's commit to another's streams (PostgreSQL NOTIFY, Redis
pub/sub), and acks of one deployment taken by two replicas at once. Processes
killed mid-deploy are in tests/e2e/test_replicas.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading
import time
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy import select, update

from edgefn.controlplane import db
from edgefn.controlplane.deployments import service as deployments
from edgefn.controlplane.deployments.models import OutboxInstruction
from edgefn.controlplane.deployments.schemas import AckIn
from edgefn.controlplane.leases import service as leases
from edgefn.controlplane.leases.duties import Duties, Duty
from edgefn.controlplane.leases.models import Lease
from edgefn.controlplane.stream.bus import encode
from tests.controlplane.conftest import ADMIN, CP
from tests.controlplane.nodelink import NodeLink

REDIS_URL = os.environ.get("EDGEFN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ONLY = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def sessions_of(cp: CP) -> Any:
    return cp.client.app.state.cp.sessions  # type: ignore[attr-defined]


# ---- leases ----------------------------------------------------------------------


def test_lease_is_held_by_one_and_moves_when_it_lapses(cp: CP) -> None:
    factory = sessions_of(cp)

    def hold(holder: str, ttl: float = 30) -> bool:
        with db.session_scope(factory) as session:
            held = leases.hold(session, "job", holder, ttl)
            session.commit()
            return held

    assert hold("a")
    assert not hold("b")
    assert hold("a")  # renewed
    with db.session_scope(factory) as session:
        assert leases.holder_of(session, "job") == "a"
        # Lapsed: the holder stopped renewing (died) a while ago.
        session.execute(update(Lease).values(expires_at=db.utcnow() - dt.timedelta(seconds=1)))
        session.commit()
        assert leases.holder_of(session, "job") is None
    assert hold("b")
    assert not hold("a")
    with db.session_scope(factory) as session:
        leases.release(session, "job", "a")  # not a's: nothing changes
        session.commit()
        assert leases.holder_of(session, "job") == "b"
        leases.release(session, "job", "b")
        session.commit()
    assert hold("a")


@PG_ONLY
def test_work_under_a_lease_commits_only_while_it_is_held(cp: CP) -> None:
    """While a holder's transaction is open, the lease cannot be taken from it, even
    lapsed: its work commits with the renewal or not at all."""
    factory = sessions_of(cp)
    with db.session_scope(factory) as session:
        assert leases.hold(session, "job", "a", 0.001)
        session.commit()
    with db.session_scope(factory) as slow:
        assert leases.hold(slow, "job", "a", 0.001)
        time.sleep(0.01)  # lapsed, but `a` is still working under it
        with db.session_scope(factory) as other:
            assert not leases.hold(other, "job", "b", 30)
            other.commit()
        slow.commit()
    time.sleep(0.01)
    with db.session_scope(factory) as other:
        assert leases.hold(other, "job", "b", 30)
        other.commit()


def test_duties_run_on_one_replica_and_move_when_it_stops(cp: CP) -> None:
    factory = sessions_of(cp)
    runs: list[str] = []

    def replica(name: str) -> Duties:
        duty = Duty("count", 0, lambda _s: runs.append(name))
        return Duties(factory, [duty], holder=name, ttl_s=0.3, lease="counting")

    def failing(_s: Any) -> None:
        raise RuntimeError("a duty that fails")

    a, b = replica("a"), replica("b")
    a._duties.insert(0, Duty("fails", 0, failing))  # the others still run
    for _ in range(3):
        assert a.tick()
        assert not b.tick()
    assert runs == ["a"] * 3 and a.holding and not b.holding
    time.sleep(0.4)  # `a` died: it renews no more
    assert b.tick()
    assert runs[-1] == "b"
    assert not a.tick()
    assert not a.holding
    b.release()
    assert a.tick()


def test_the_app_runs_its_duties_under_the_lease(cp_factory: Any) -> None:
    # A TTL well over a tick, however slow the machine: the holder is asserted, not expiry.
    first: CP = cp_factory(replica_id="first", lease_ttl_s=60.0)
    deadline = time.monotonic() + 5
    duties = first.client.app.state.duties  # type: ignore[attr-defined]
    while not duties.holding and time.monotonic() < deadline:
        time.sleep(0.05)
    assert duties.holding
    with db.session_scope(sessions_of(first)) as session:
        assert leases.holder_of(session, "maintenance") == "first"


# ---- wake-ups between replicas -----------------------------------------------------


def _fn(cp: CP, wasm: SimpleNamespace) -> str:
    project = cp.project("alpha")
    fid = str(cp.function(ADMIN, "hello", owner_project_id=project)["id"])
    assert cp.upload(ADMIN, fid, "1.0.0", wasm.edge_v1).status_code == 201
    return fid


@PG_ONLY
@pytest.mark.parametrize("transport", ["postgres", "redis"])
def test_a_commit_on_one_replica_wakes_a_stream_on_another(
    cp_factory: Any, wasm: SimpleNamespace, transport: str
) -> None:
    """The re-check is a minute: a push within seconds proves the wake-up crossed."""
    extra: dict[str, Any] = {}
    if transport == "redis":
        try:
            redis.Redis.from_url(REDIS_URL).ping()
        except redis.RedisError:
            if os.environ.get("CI") == "true":
                pytest.fail(f"Redis at {REDIS_URL} is unreachable and CI=true")
            pytest.skip(f"Redis at {REDIS_URL} is unreachable")
        extra["wake_redis_url"] = REDIS_URL
    a: CP = cp_factory(grpc_port=0, stream_recheck_s=60, replica_id="a", **extra)
    b: CP = cp_factory(grpc_port=0, stream_recheck_s=60, replica_id="b", **extra)
    fid = _fn(a, wasm)
    node = a.node("tokyo", "tokyo-1")
    port = b.client.app.state.grpc.port  # type: ignore[attr-defined]
    notifier_b = b.client.app.state.cp.notifier  # type: ignore[attr-defined]

    async def scenario() -> float:
        link = await NodeLink(f"127.0.0.1:{port}", node).open()
        try:
            await link.ack(await link.recv_kind("config"))
            await asyncio.sleep(0.3)  # past the wake-up the listener sends at connect
            before = notifier_b.remote_wakeups
            start = time.monotonic()
            await asyncio.to_thread(
                a.ok, "POST", f"/functions/{fid}/deploy", ADMIN, 202, json={"version": "1.0.0"}
            )
            pushed = await link.recv_kind("deploy")
            took = time.monotonic() - start
            assert pushed.deploy.version == "1.0.0"
            assert notifier_b.remote_wakeups > before
            return took
        finally:
            await link.close()

    assert asyncio.run(scenario()) < 5


def test_a_long_list_of_nodes_becomes_every_node() -> None:
    assert encode("a", ["n1", "n2"]) == "a n1,n2"
    assert encode("a", [f"node-{i:05}" for i in range(1000)]) == "a *"


# ---- acks of one deployment on two replicas at once ---------------------------------


@PG_ONLY
def test_acks_completing_a_wave_together_send_the_next_wave_once(
    cp: CP, wasm: SimpleNamespace
) -> None:
    fid = _fn(cp, wasm)
    nodes = [cp.node("pop", f"n{i}") for i in range(5)]
    dep = cp.ok("POST", f"/functions/{fid}/deploy", ADMIN, 202,
                json={"version": "1.0.0", "strategy": "gradual"})["deployment_id"]
    factory = sessions_of(cp)

    def deploy_rows(node_id: str) -> list[OutboxInstruction]:
        with db.session_scope(factory) as session:
            return list(session.scalars(select(OutboxInstruction).where(
                OutboxInstruction.node_id == node_id,
                OutboxInstruction.deployment_id == dep)))

    def ack(session: Any, node_id: str) -> None:
        (row,) = deploy_rows(node_id)
        deployments.ack_instruction(session, node_id, AckIn(id=row.id, state="cached"))

    with db.session_scope(factory) as session:  # the canary
        ack(session, "n0")
        session.commit()
    # Waves: [n0], [n1, n2], [n3, n4]. n1's and n2's acks land together, on two
    # replicas: n2's waits for n1's to commit, then sees it and sends the last wave.
    first = factory()
    ack(first, "n1")
    done = threading.Event()

    def second() -> None:
        with db.session_scope(factory) as session:
            ack(session, "n2")
            session.commit()
        done.set()

    thread = threading.Thread(target=second)
    thread.start()
    assert not done.wait(0.5)  # blocked on the deployment's row
    first.commit()
    first.close()
    thread.join(10)
    assert done.is_set()
    assert [len(deploy_rows(n["id"])) for n in nodes] == [1, 1, 1, 1, 1]
    states = {n["node_id"]: n["state"] for n in cp.ok("GET", f"/deployments/{dep}", ADMIN)["nodes"]}
    assert states == {"n0": "cached", "n1": "cached", "n2": "cached",
                      "n3": "pending", "n4": "pending"}


def test_a_rollout_whose_canary_was_deleted_moves_on(cp: CP, wasm: SimpleNamespace) -> None:
    """No ack will ever come from a deleted node: the duty sends the next wave."""
    fid = _fn(cp, wasm)
    for i in range(2):
        cp.node("pop", f"n{i}")
    dep = cp.ok("POST", f"/functions/{fid}/deploy", ADMIN, 202,
                json={"version": "1.0.0", "strategy": "canary"})["deployment_id"]

    def states() -> dict[str, str]:
        nodes = cp.ok("GET", f"/deployments/{dep}", ADMIN)["nodes"]
        return {n["node_id"]: n["state"] for n in nodes}

    assert states() == {"n0": "pending", "n1": "waiting"}
    cp.ok("DELETE", "/nodes/n0", ADMIN, 204)
    with db.session_scope(sessions_of(cp)) as session:
        deployments.advance_stalled(session)
        session.commit()
    assert states() == {"n1": "pending"}


@PG_ONLY
def test_a_deploy_to_many_nodes_is_one_notification(cp: CP, wasm: SimpleNamespace) -> None:
    fid = _fn(cp, wasm)
    for i in range(3):
        cp.node("pop", f"n{i}")
    url = cp.client.app.state.cp.engine.url  # type: ignore[attr-defined]
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        channel = conn.execute("SELECT left('edgefn_outbox_' || current_schema(), 63)").fetchone()
        assert channel is not None
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel[0])))
        cp.ok("POST", f"/functions/{fid}/deploy", ADMIN, 202, json={"version": "1.0.0"})
        notes = [n.payload for n in conn.notifies(timeout=1)]
    replica = cp.client.app.state.cp.replica_id  # type: ignore[attr-defined]
    assert notes == [f"{replica} n0,n1,n2"]
