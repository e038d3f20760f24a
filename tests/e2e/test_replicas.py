"""Two control-plane processes on one PostgreSQL, one node CA, nodes on mutual TLS:
a node registered on one replica and streaming from the other gets a deploy made
through the first at once, and when the replica the other nodes stream from is
SIGKILLed mid-rollout, every node still ends on the new version through the
survivor, each sent it once, and the maintenance lease moves."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from edgefn.cluster import Cluster, ClusterError, Edge, grpc_targets, wait_until
from tests.controlplane.conftest import create_pg_schema, drop_pg_schema, require_postgres
from tests.e2e.conftest import module

pytestmark = pytest.mark.e2e

HELLO = b"Hello from edgefn!"
# Long enough that only a wake-up explains a push within seconds.
RECHECK_S = 30
# Renewed every third of it: a replica stalled for more than two thirds of it (a
# busy CI machine) loses the lease to the other, and the test could not see it move.
LEASE_TTL_S = 5


def serves(edge: Edge, needle: bytes) -> bool:
    resp = edge.get("/hello")
    return resp.status_code == 200 and needle in resp.content


@pytest.fixture
def pg_url() -> Iterator[str]:
    require_postgres()
    schema, url = create_pg_schema()
    yield url
    drop_pg_schema(schema)


@pytest.fixture
def replicated(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, token="e2e-admin-token", project="e2e", database_url=pg_url)
    c.cp_env.update({"EDGEFN_STREAM_RECHECK_S": str(RECHECK_S),
                     "EDGEFN_LEASE_TTL_S": str(LEASE_TTL_S)})
    try:
        c.start_cp()
        c.add_replica("b")
        yield c
    finally:
        c.close()


def cp_logs(cluster: Cluster) -> str:
    logs = [cluster.root / "cp.log", *(cluster.root / f"{r}.log" for r in cluster.replicas)]
    return "".join(p.read_text(errors="replace") for p in logs)


def stream_failures(cluster: Cluster, edge: Edge) -> list[str]:
    log = (cluster.root / f"{edge.node_id}.log").read_text(errors="replace")
    return [line for line in log.splitlines() if "Hostname Verification" in line]


def lease_holder(engine: sa.Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT holder FROM leases WHERE name = 'maintenance' AND expires_at > now()"
        )).scalar()


def test_two_replicas_one_killed_mid_deploy(replicated: Cluster, pg_url: str) -> None:
    cluster = replicated
    a, b = cluster.first_replica, cluster.replicas["b"]
    on_b = cluster.add_edge("via-b", "pop-0")
    on_b.grpc_url = b.grpc_target
    cluster.stop_edge(on_b)
    cluster.start_edge(on_b)
    # The others stream from `a` first, `b` when `a` is gone; n3 is registered
    # through b's API, so its certificate is b's issue and a must accept it.
    others = []
    for i in range(1, 4):
        cluster.use(b if i == 3 else a)
        token = cluster.register_node(f"n{i}", f"pop-{i}", {})
        edge = Edge(f"n{i}", f"pop-{i}", {}, token, cluster.root / f"n{i}",
                    grpc_url=grpc_targets([a, b]))
        cluster.edges[edge.node_id] = edge
        cluster.start_edge(edge)
        others.append(edge)
    cluster.use(a)
    edges = [on_b, *others]
    fid = cluster.function("api")
    cluster.upload(fid, "1.0.0", module("hello-c"))
    cluster.upload(fid, "2.0.0", module("counter"))
    cluster.upload(fid, "3.0.0", module("headers"))
    cluster.route(fid, "/hello")
    cluster.deploy(fid, "1.0.0")
    for edge in edges:
        wait_until(f"v1 on {edge.node_id}", lambda e=edge: serves(e, HELLO), 60)
    # Over the stream, not the heartbeats' fallback: a node given both replicas'
    # addresses checks their certificates against the control plane's public host.
    for edge in others:
        wait_until(f"{edge.node_id}'s stream", lambda e=edge: not stream_failures(cluster, e)
                   and f"node {e.node_id} connected its control stream" in cp_logs(cluster))

    # A deploy through a's API reaches the node on b's stream by b's wake-up.
    start = time.monotonic()
    cluster.deploy(fid, "2.0.0")
    wait_until("v2 via b", lambda: on_b.get("/hello").headers.get("x-init") == "1", RECHECK_S)
    assert time.monotonic() - start < RECHECK_S / 3

    engine = sa.create_engine(pg_url)
    try:
        try:
            wait_until("a holding the lease", lambda: lease_holder(engine) == "cp")
        except ClusterError as exc:
            moves = [ln for ln in cp_logs(cluster).splitlines() if "lease" in ln]
            raise AssertionError(f"{exc}; holder {lease_holder(engine)!r}; {moves}") from exc
        for edge in others:
            wait_until(f"v2 on {edge.node_id}",
                       lambda e=edge: e.get("/hello").headers.get("x-init") == "1", 60)
        # A rollout in four waves, each sent when the one before acked, and `a`,
        # which holds the lease and the streams of three nodes, dies right after.
        dep = cluster.deploy(fid, "3.0.0", strategy="gradual")
        assert a.proc is not None
        os.killpg(a.proc.pid, signal.SIGKILL)
        cluster.use(b)
        for edge in edges:
            wait_until(f"v3 on {edge.node_id}", lambda e=edge: serves(e, b"x-request-id: "), 60)
        wait_until("the rollout done", lambda: cluster.deployment(dep)["state"] == "succeeded",
                   30)
        assert set(cluster.node_states(dep).values()) == {"cached"}
        wait_until("b holding the lease", lambda: lease_holder(engine) == "b",
                   LEASE_TTL_S * 3)
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT node_id, state, ack_state FROM outbox WHERE deployment_id = :d"
            ), {"d": dep}).all()
            pending = conn.execute(sa.text(
                "SELECT count(*) FROM outbox WHERE state = 'pending'")).scalar()
            certified = conn.execute(sa.text(
                "SELECT DISTINCT node_id FROM node_certificates WHERE revoked_at IS NULL"
            )).scalars().all()
    finally:
        engine.dispose()
    # One instruction per node (no wave sent twice), each acked; none left behind.
    assert sorted(r.node_id for r in rows) == sorted(e.node_id for e in edges)
    assert {(r.state, r.ack_state) for r in rows} == {("acked", "cached")}
    assert pending == 0
    # Every node connected with a certificate of the one CA both replicas share.
    assert sorted(certified) == sorted(e.node_id for e in edges)
    assert all(e.tls.cert_file is not None and e.tls.cert_file.exists() for e in edges)
