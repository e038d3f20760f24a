"""The control streams of a real CP (SQLite and PostgreSQL) on loopback: the
distribution tests (pushes on commit, acks, redelivery, re-check, shutdown, the agent)
on both transports through the node's own transports (`streamlink`); gRPC's auth,
protobuf encoding, stream heartbeats and unary fallback against a grpc.aio client
(`nodelink`); the WebSocket endpoint's refusals and close codes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from edgefn.cluster import free_port
from edgefn.contract import FunctionPolicy, Instruction
from edgefn.controlplane import db
from edgefn.controlplane.app import create_app
from edgefn.controlplane.deployments.models import OutboxInstruction
from edgefn.controlplane.logs.hub import LogLine
from edgefn.controlplane.stream.messages import instruction_to_proto
from edgefn.edge.cache import ArtifactCache
from edgefn.edge.node.agent import Agent
from edgefn.edge.node.controller import NodeController
from edgefn.edge.node.grpc_transport import instruction_from_proto
from edgefn.edge.spec import read_state
from edgefn.proto import edge_control_pb2 as pb
from edgefn.proto import edge_control_pb2_grpc as pb_grpc
from edgefn.sandbox import Engine
from tests.controlplane.conftest import ADMIN, CP, make_settings
from tests.controlplane.nodelink import NodeLink, metadata
from tests.controlplane.streamlink import TRANSPORTS, Streams
from tests.controlplane.streamlink import NodeLink as StreamLink


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def target(cp: CP) -> str:
    return f"127.0.0.1:{cp.client.app.state.grpc.port}"  # type: ignore[attr-defined]


@pytest.fixture
def gcp(cp_factory: Any) -> CP:
    """A CP with its gRPC server. The re-check is slow so that a push arriving
    proves the commit woke the stream, not the periodic look."""
    built: CP = cp_factory(grpc_port=0, stream_recheck_s=60)
    return built


@pytest.fixture
def fn(gcp: CP, wasm: SimpleNamespace) -> dict[str, Any]:
    project = gcp.project("alpha")
    body: dict[str, Any] = gcp.function(ADMIN, "hello", owner_project_id=project, env={"K": "v"})
    for version, data in (("1.0.0", wasm.edge_v1), ("1.1.0", wasm.edge_v1_b)):
        assert gcp.upload(ADMIN, body["id"], version, data).status_code == 201
    return body


def deploy(cp: CP, fn: dict[str, Any], version: str = "1.0.0", **body: Any) -> Any:
    return cp.ok(
        "POST", f"/functions/{fn['id']}/deploy", ADMIN, 202, json={"version": version, **body}
    )


async def connected(cp: CP, node: dict[str, Any]) -> NodeLink:
    """A node's stream, past the route table every new node is sent first (acked)."""
    link = await NodeLink(target(cp), node).open()
    await link.ack(await link.recv_kind("config"))
    return link


@pytest.fixture(params=TRANSPORTS)
def streams(request: pytest.FixtureRequest, gcp: CP) -> Iterator[Streams]:
    """Where the distribution tests open node streams: each runs on both transports."""
    built = Streams(gcp, request.param)
    yield built
    built.close()


async def joined(streams: Streams, node: dict[str, Any]) -> StreamLink:
    """A node's stream on either transport, past the route table (acked)."""
    link = await streams.link(node).open()
    await link.ack(await link.recv_kind("config"))
    return link


def node_row(cp: CP, node_id: str) -> dict[str, Any]:
    rows = [n for n in cp.ok("GET", "/nodes", ADMIN) if n["id"] == node_id]
    assert rows
    return rows[0]


def test_auth(gcp: CP) -> None:
    tokyo, osaka = gcp.node("tokyo", "tokyo-1"), gcp.node("osaka", "osaka-1")
    refused = {
        "no token": (metadata(None, "tokyo-1"), grpc.StatusCode.UNAUTHENTICATED),
        "unknown token": (metadata("efn_nope", "tokyo-1"), grpc.StatusCode.UNAUTHENTICATED),
        "bad scheme": (
            [("authorization", tokyo["token"]), ("x-edgefn-node-id", "tokyo-1")],
            grpc.StatusCode.UNAUTHENTICATED,
        ),
        "another node's": (metadata(osaka["token"], "tokyo-1"), grpc.StatusCode.PERMISSION_DENIED),
        "admin token": (metadata("test-admin-token", "tokyo-1"), grpc.StatusCode.PERMISSION_DENIED),
        "no node id": (metadata(tokyo["token"], None), grpc.StatusCode.INVALID_ARGUMENT),
    }

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(target(gcp)) as channel:
            stub = pb_grpc.EdgeControlStub(channel)
            for case, (md, code) in refused.items():
                with pytest.raises(grpc.aio.AioRpcError) as unary:
                    await stub.Heartbeat(pb.HeartbeatRequest(node_id="tokyo-1"), metadata=md)
                assert unary.value.code() == code, case
                # The CP refuses a stream before reading it, so no Hello is needed
                # (and writing one could race the refusal).
                call = stub.StreamControl(metadata=md)
                assert await call.code() == code, case
            # A stream must start with Hello.
            call = stub.StreamControl(metadata=metadata(tokyo["token"], "tokyo-1"))
            await call.write(pb.EdgeMessage(heartbeat=pb.HeartbeatRequest()))
            with pytest.raises(grpc.aio.AioRpcError) as no_hello:
                await call.read()
            assert no_hello.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "Hello" in (no_hello.value.details() or "")

    run(scenario)
    assert node_row(gcp, "tokyo-1")["status"] == "registered"


def test_deploy_is_pushed_and_acked(gcp: CP, streams: Streams, fn: dict[str, Any]) -> None:
    node = gcp.node("tokyo", "tokyo-1", region="tokyo")

    async def scenario() -> None:
        link = await joined(streams, node)
        assert node_row(gcp, "tokyo-1")["status"] == "online"  # the Hello marked it
        dep = deploy(gcp, fn)
        d = await link.recv_kind("deploy")
        assert d.id > 0
        assert (d.function_id, d.version, d.deployment_id) == (fn["id"], "1.0.0", dep["id"])
        assert d.abi == "edge-v1" and len(d.sha256) == 64 and d.artifact_url.startswith("http")
        assert (d.memory_pages, d.max_execution_ms, d.max_response_bytes) == (16, 500, 65536)
        assert dict(d.env) == {"K": "v"}
        assert gcp.ok("GET", f"/deployments/{dep['id']}", ADMIN)["nodes"] == [
            {"node_id": "tokyo-1", "state": "pending", "message": None}
        ]
        await link.ack(d, "cached")
        await link.heartbeat()  # the ack is processed before the heartbeat's answer
        out = gcp.ok("GET", f"/deployments/{dep['id']}", ADMIN)
        assert out["state"] == "succeeded" and out["nodes"][0]["state"] == "cached"
        # A failing node's message reaches the deployment.
        failed = deploy(gcp, fn, "1.1.0")
        await link.ack(await link.recv_kind("deploy"), "error", "sha256 mismatch")
        await link.heartbeat()
        out = gcp.ok("GET", f"/deployments/{failed['id']}", ADMIN)
        assert out["state"] == "failed"
        assert out["nodes"][0] == {
            "node_id": "tokyo-1",
            "state": "error",
            "message": "sha256 mismatch",
        }
        await link.close()

    run(scenario)


def test_unacked_is_redelivered_on_reconnect(
    gcp: CP, streams: Streams, fn: dict[str, Any]
) -> None:
    node = gcp.node("tokyo", "tokyo-1")

    async def scenario() -> None:
        link = await streams.link(node).open()
        config = await link.recv_kind("config")  # not acked
        deploy(gcp, fn)
        first = await link.recv_kind("deploy")
        await link.ack(first)
        await link.heartbeat()
        await link.close()

        again = await streams.link(node).open()
        assert (await again.recv_kind("config")).id == config.id
        # Had the acked deploy come back it would precede the heartbeat's answer.
        await again.heartbeat()
        await again.ack(config)
        await again.close()
        third = await streams.link(node).open()
        await third.heartbeat()  # nothing pending: the answer is the first message
        await third.close()

    run(scenario)


def test_stream_heartbeat_updates_the_node(gcp: CP) -> None:
    node = gcp.node("tokyo", "tokyo-1")

    async def scenario() -> None:
        link = await NodeLink(target(gcp), node).open()
        config = await link.recv_kind("config")
        answer = await link.heartbeat(
            status="degraded",
            cpu_percent=42.5,
            mem_bytes=1 << 24,
            functions=[
                pb.FunctionStatus(
                    function_id="f1", version="1.0.0", state="cached", invocation_count=7
                )
            ],
            acks=[pb.DeploymentStatus(ack_id=config.ack_id, state="cached")],
        )
        assert answer.ack_id == 0
        assert answer.heartbeat_ack.heartbeat_interval_s == gcp.settings.heartbeat_interval_s
        row = node_row(gcp, "tokyo-1")
        assert (row["status"], row["cpu"], row["mem_bytes"]) == ("degraded", 42.5, 1 << 24)
        assert row["functions"][0]["id"] == "f1" and row["functions"][0]["invocation_count"] == 7
        assert row["last_heartbeat"]
        await link.send(metrics=pb.MetricsReport(cpu_percent=3.0, mem_bytes=5))
        await link.heartbeat(status="degraded")  # metrics are applied before this answer
        # The ack in the heartbeat counted: nothing is pending any more.
        assert gcp.heartbeat(node) == []
        await link.close()

    run(scenario)


def test_unary_heartbeat_answers_pending(gcp: CP, fn: dict[str, Any]) -> None:
    node = gcp.node("tokyo", "tokyo-1")
    dep = deploy(gcp, fn)

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(target(gcp)) as channel:
            stub = pb_grpc.EdgeControlStub(channel)
            md = metadata(node["token"], "tokyo-1")
            beat = pb.HeartbeatRequest(node_id="tokyo-1", status="online", cpu_percent=1.0)
            first = await stub.Heartbeat(beat, metadata=md)
            kinds = [i.WhichOneof("payload") for i in first.instructions]
            assert kinds == ["config", "deploy"]
            assert first.instructions[1].deploy.deployment_id == dep["id"]
            assert first.heartbeat_interval_s == gcp.settings.heartbeat_interval_s
            # Still pending until acked; acks ride on the next heartbeat.
            again = await stub.Heartbeat(beat, metadata=md)
            assert [i.ack_id for i in again.instructions] == [i.ack_id for i in first.instructions]
            acks = [
                pb.DeploymentStatus(ack_id=i.ack_id, state="cached") for i in first.instructions
            ]
            beat.acks.extend(acks)
            assert list((await stub.Heartbeat(beat, metadata=md)).instructions) == []
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.Heartbeat(pb.HeartbeatRequest(node_id="osaka-9"), metadata=md)
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    run(scenario)
    assert gcp.ok("GET", f"/deployments/{dep['id']}", ADMIN)["state"] == "succeeded"
    assert node_row(gcp, "tokyo-1")["status"] == "online"


def test_deploy_carries_the_policy(gcp: CP, wasm: SimpleNamespace) -> None:
    fn = gcp.function(
        ADMIN,
        "store",
        owner_project_id=gcp.project("alpha"),
        kv={"enabled": True, "max_keys": 5},
        http_fetch={"allow_hosts": ["api.example.com", "10.0.0.7"], "max_redirects": 0},
        isolation="per-request",
        min_hot_instances=0,
        max_request_bytes=0,
    )
    assert gcp.upload(ADMIN, fn["id"], "1.0.0", wasm.edge_v1).status_code == 201
    node = gcp.node("tokyo", "tokyo-1")

    async def scenario() -> None:
        link = await connected(gcp, node)
        deploy(gcp, fn)
        pushed = await link.recv_kind("deploy")
        p = pushed.deploy.policy
        assert p.kv.enabled and (p.kv.max_keys, p.kv.max_key_bytes) == (5, 512)
        assert list(p.http_fetch.allow_hosts) == ["api.example.com", "10.0.0.7"]
        assert not p.http_fetch.allow_private
        assert (p.isolation, p.max_hot_instances, p.idle_timeout_s) == ("per-request", 10, 300)
        # Zeros are values, not absences: these fields have presence.
        for msg, name in ((p.http_fetch, "max_redirects"), (p, "min_hot_instances"),
                          (p, "max_request_bytes")):
            assert msg.HasField(name) and getattr(msg, name) == 0, name
        # The node reads the same policy from the stream as from an HTTP heartbeat.
        (as_json,) = [i for i in gcp.heartbeat(node) if i["type"] == "deploy"]
        assert as_json["kv"]["enabled"] is True and as_json["min_hot_instances"] == 0
        from_json = Instruction.from_json(as_json).policy
        assert FunctionPolicy.model_validate(
            instruction_from_proto(pushed).policy
        ) == FunctionPolicy.model_validate(from_json)
        assert from_json is not None
        assert from_json.http_fetch.allow_hosts == ("api.example.com", "10.0.0.7")
        await link.ack(pushed)
        await link.close()

    run(scenario)


def test_an_instruction_without_a_policy_means_the_defaults() -> None:
    """One queued by a control plane older than policies: no policy on the wire,
    and none on the node, which then keeps every default."""
    old = {
        "id": 7, "type": "deploy", "function_id": "f", "version": "1.0.0",
        "artifact_url": "http://a/f.wasm", "sha256": "0" * 64, "abi": "edge-v1",
        "memory_pages": 16, "max_execution_ms": 500, "max_response_bytes": 65536,
        "env": {}, "routes": [], "deployment_id": None,
    }
    msg = instruction_to_proto(Instruction.from_json(old))
    assert not msg.deploy.HasField("policy")
    assert instruction_from_proto(msg).policy is None is Instruction.from_json(old).policy


def test_route_changes_and_deletion_push(gcp: CP, streams: Streams, fn: dict[str, Any]) -> None:
    node = gcp.node("tokyo", "tokyo-1")

    async def scenario() -> None:
        link = await joined(streams, node)
        # A node's route table holds only routes to functions deployed to it.
        deploy(gcp, fn)
        await link.ack(await link.recv_kind("deploy"))
        route = gcp.ok(
            "POST",
            "/routes",
            ADMIN,
            201,
            json={"host": "*", "path": "/hello", "function_id": fn["id"], "priority": 3},
        )
        config = await link.recv_kind("config")
        assert [(r.id, r.host, r.path, r.priority, r.function_id) for r in config.routes] == [
            (route["id"], "*", "/hello", 3, fn["id"])
        ]
        assert "GET" in config.routes[0].methods
        gcp.ok("DELETE", f"/routes/{route['id']}", ADMIN, 204)
        assert list((await link.recv_kind("config")).routes) == []

        gcp.ok("DELETE", f"/functions/{fn['id']}", ADMIN, 204)
        undeploy = await link.recv_kind("undeploy")
        assert undeploy.id > 0 and undeploy.function_id == fn["id"]
        await link.recv_kind("config")
        await link.close()

    run(scenario)


def test_canary_ack_pushes_the_next_wave(gcp: CP, streams: Streams, fn: dict[str, Any]) -> None:
    """An ack on one stream commits the next wave; the other node's stream gets it."""
    first, second = gcp.node("a-pop", "node-a"), gcp.node("b-pop", "node-b")

    async def scenario() -> None:
        a, b = await joined(streams, first), await joined(streams, second)
        dep = deploy(gcp, fn, strategy="canary")
        await a.ack(await a.recv_kind("deploy"))
        await b.ack(await b.recv_kind("deploy"))
        await b.heartbeat()
        assert gcp.ok("GET", f"/deployments/{dep['id']}", ADMIN)["state"] == "succeeded"
        await a.close()
        await b.close()

    run(scenario)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_another_replica_commit_reaches_the_stream(
    cp_factory: Any, wasm: SimpleNamespace, transport: str
) -> None:
    """A deploy through a second CP on the same database is found by the re-check."""
    streaming = cp_factory(grpc_port=0, stream_recheck_s=0.1)
    api_only = cp_factory()
    node = api_only.node("tokyo", "tokyo-1")
    project = api_only.project("alpha")
    fn = api_only.function(ADMIN, "hello", owner_project_id=project)
    assert api_only.upload(ADMIN, fn["id"], "1.0.0", wasm.edge_v1).status_code == 201
    streams = Streams(streaming, transport)

    async def scenario() -> None:
        link = await joined(streams, node)
        deploy(api_only, fn)
        assert (await link.recv_kind("deploy")).function_id == fn["id"]
        await link.close()

    try:
        run(scenario)
    finally:
        streams.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_shutdown_ends_streams(cp_factory: Any, transport: str) -> None:
    cp = cp_factory(grpc_port=0)
    node = cp.node("tokyo", "tokyo-1")
    streams = Streams(cp, transport)

    async def scenario() -> None:
        link = await joined(streams, node)
        await asyncio.to_thread(cp.client.__exit__, None, None, None)
        assert await link.ended() is None  # a clean end (gRPC OK, WebSocket 1001)
        await link.close()

    try:
        run(scenario)
    finally:
        streams.close()


@pytest.fixture
def served_cp(tmp_path: Path, database_url: str) -> Iterator[tuple[str, Any]]:
    """A CP app under a real uvicorn server on loopback, with its gRPC server, so
    that the artifact URLs it signs can be downloaded: (base URL, app)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(make_settings(tmp_path, database_url, grpc_port=0, public_url=base))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the control plane did not start"
        time.sleep(0.02)
    yield base, app
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_agent_acks_a_bad_instruction_as_error_and_applies_the_next(
    served_cp: tuple[str, Any], tmp_path: Path, engine: Engine, wasm: SimpleNamespace,
    transport: Any,
) -> None:
    """An instruction the node cannot apply (an artifact URL httpx cannot even
    parse, as a version ending in a newline once made) is acked as an error; the
    stream stays up and the deploy after it is applied. Before, the exception
    ended the stream, the instruction came again on the next one, and nothing
    after it was ever applied."""
    base, app = served_cp
    api = httpx.Client(base_url=base + "/api/v1", headers=ADMIN, timeout=10)
    project = api.post("/projects", json={"name": "alpha"}).json()["id"]
    fid = api.post("/functions", json={"name": "hello", "owner_project_id": project}).json()["id"]
    upload = api.post(
        f"/functions/{fid}/versions",
        data={"version": "1.0.0"},
        files={"artifact": ("m.wasm", wasm.edge_v1, "application/wasm")},
    )
    assert upload.status_code == 201, upload.text
    node = api.post("/nodes", json={"id": "tokyo-1", "pop_id": "tokyo"}).json()

    # What an older control plane could send: a deploy whose URL has a newline.
    bad = {
        "type": "deploy",
        "function_id": "broken",
        "version": "5.0.0\n",
        "sha256": "ab" * 32,
        "abi": "edge-v1",
        "artifact_url": base + "/api/v1/artifacts/functions/broken/5.0.0\n.wasm",
        "memory_pages": 16,
        "max_execution_ms": 500,
        "max_response_bytes": 65536,
        "env": {},
        "routes": [],
        "deployment_id": None,
    }
    with db.session_scope(app.state.cp.sessions) as session:
        session.add(OutboxInstruction(node_id="tokyo-1", type="deploy", payload=bad))
        session.commit()

    controller = NodeController(
        tmp_path / "node" / "state.json", ArtifactCache(tmp_path / "node" / "cache"), engine
    )
    agent = Agent(
        controller,
        node_id="tokyo-1",
        token=node["token"],
        # Without a CP URL the gRPC agent has no HTTP fallback: the stream did the work.
        cp_url=base if transport == "websocket" else "",
        grpc_url=f"127.0.0.1:{app.state.grpc.port}",
        transport=transport,
        pop_id="tokyo",
    )
    agent.start()
    try:
        dep = api.post(f"/functions/{fid}/deploy", json={"version": "1.0.0"}).json()
        deadline = time.monotonic() + 30
        while api.get(f"/deployments/{dep['id']}").json()["state"] != "succeeded":
            assert time.monotonic() < deadline, api.get(f"/deployments/{dep['id']}").text
            time.sleep(0.1)
        assert [(f.id, f.version) for f in read_state(controller.state_path).functions] == [
            (fid, "1.0.0")
        ]
        with db.session_scope(app.state.cp.sessions) as session:
            row = session.scalars(
                sa.select(OutboxInstruction)
                .where(OutboxInstruction.type == "deploy")
                .order_by(OutboxInstruction.id)
            ).first()
            assert row is not None and row.payload["function_id"] == "broken"
            assert (row.state, row.ack_state) == ("acked", "error")
            assert "artifact" in (row.ack_message or "")
        assert agent.stream_connected.is_set()
    finally:
        agent.stop()


# Rows no release writes now: what a hand edit or an older release may have left.
UNDECODABLE: list[Any] = [
    {"type": "deploy", "function_id": "ghost"},  # nearly every field missing
    {"type": "deploy", "function_id": "ghost", "version": "1.0.0", "artifact_url": None,
     "sha256": "ab" * 32, "abi": "edge-v1", "memory_pages": "lots", "max_execution_ms": 500,
     "max_response_bytes": 65536, "env": {}, "routes": [], "deployment_id": None},
    {"type": "config", "routes": [{"id": "r1"}]},  # a route without its fields
    ["not", "an", "object"],
]


def add_rows(cp: CP, node_id: str, payloads: list[Any]) -> list[int]:
    with db.session_scope(cp.client.app.state.cp.sessions) as session:  # type: ignore[attr-defined]
        rows = [OutboxInstruction(node_id=node_id, type="deploy", payload=p) for p in payloads]
        session.add_all(rows)
        session.commit()
        return [r.id for r in rows]


def outbox_rows(cp: CP, ids: list[int]) -> list[tuple[str, str | None, str | None]]:
    with db.session_scope(cp.client.app.state.cp.sessions) as session:  # type: ignore[attr-defined]
        rows = session.scalars(
            sa.select(OutboxInstruction).where(OutboxInstruction.id.in_(ids))
            .order_by(OutboxInstruction.id)
        )
        return [(r.state, r.ack_state, r.ack_message) for r in rows]


def test_an_undecodable_row_is_skipped_and_the_stream_stays_up(
    gcp: CP, streams: Streams, fn: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A row missing fields used to end the node's stream with a KeyError, on every
    reconnect; it is now marked failed (never sent) and what follows flows."""
    node = gcp.node("tokyo", "tokyo-1")

    async def scenario() -> None:
        link = await joined(streams, node)
        bad = add_rows(gcp, "tokyo-1", UNDECODABLE)
        dep = deploy(gcp, fn)  # its commit wakes the stream past the bad rows
        pushed = await link.recv_kind("deploy")
        assert pushed.deployment_id == dep["id"] and pushed.id > max(bad)
        await link.ack(pushed)
        await link.heartbeat()  # the stream is still up
        await link.close()
        again = await streams.link(node).open()
        await again.heartbeat()  # nothing comes back on a reconnect
        await again.close()
        for state, ack_state, message in outbox_rows(gcp, bad):
            assert (state, ack_state) == ("failed", "error")
            assert message and message.startswith("undecodable 'deploy' instruction: ")
        assert gcp.ok("GET", f"/deployments/{dep['id']}", ADMIN)["state"] == "succeeded"

    with caplog.at_level("ERROR", logger="edgefn.controlplane.deployments"):
        run(scenario)
    skipped = [r for r in caplog.records if "skipped, never sent" in r.getMessage()]
    assert len(skipped) == len(UNDECODABLE)


def test_an_undecodable_row_is_skipped_by_both_heartbeats(gcp: CP, fn: dict[str, Any]) -> None:
    """The HTTP heartbeat and the unary gRPC one never hand out such a row either,
    and a deployment whose instruction cannot be sent fails with the reason."""
    node = gcp.node("tokyo", "tokyo-1")
    first = gcp.heartbeat(node)  # the route table every new node gets
    bad = add_rows(gcp, "tokyo-1", UNDECODABLE[:1])
    dep = deploy(gcp, fn)
    with db.session_scope(gcp.client.app.state.cp.sessions) as session:  # type: ignore[attr-defined]
        row = session.scalars(sa.select(OutboxInstruction).where(
            OutboxInstruction.deployment_id == dep["id"])).one()
        row.payload = {k: v for k, v in row.payload.items() if k != "sha256"}
        session.commit()
        broken = row.id
    assert [i["id"] for i in gcp.heartbeat(node)] == [i["id"] for i in first]
    assert [s for s, _, _ in outbox_rows(gcp, [*bad, broken])] == ["failed", "failed"]
    out = gcp.ok("GET", f"/deployments/{dep['id']}", ADMIN)
    assert out["state"] == "failed"
    assert out["nodes"][0]["message"] == "undecodable 'deploy' instruction: KeyError: 'sha256'"
    # The next deploy flows, on the unary gRPC heartbeat too.
    bad = add_rows(gcp, "tokyo-1", UNDECODABLE[3:])
    again = deploy(gcp, fn, "1.1.0")

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(target(gcp)) as channel:
            answer = await pb_grpc.EdgeControlStub(channel).Heartbeat(
                pb.HeartbeatRequest(node_id="tokyo-1"), metadata=metadata(node["token"], "tokyo-1"))
        deploys = [i for i in answer.instructions if i.WhichOneof("payload") == "deploy"]
        assert [d.deploy.deployment_id for d in deploys] == [again["id"]]

    run(scenario)
    assert outbox_rows(gcp, bad)[0][0] == "failed"


def test_websocket_auth_and_frames(gcp: CP) -> None:
    """The WebSocket endpoint refuses the upgrade as a heartbeat would be refused (status
    and error body), and closes a stream with 4000 + the status of what ended it."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosedError, InvalidStatus

    tokyo, osaka = gcp.node("tokyo", "tokyo-1"), gcp.node("osaka", "osaka-1")
    streams = Streams(gcp, "websocket")
    url = streams.url().replace("http://", "ws://") + "/api/v1/nodes/tokyo-1/stream"
    refused = {
        "no token": ({}, 401),
        "unknown token": ({"authorization": "Bearer efn_nope"}, 401),
        "bad scheme": ({"authorization": tokyo["token"]}, 401),
        "another node's": ({"authorization": f"Bearer {osaka['token']}"}, 403),
        "admin token": ({"authorization": "Bearer test-admin-token"}, 403),
    }
    as_tokyo = {"authorization": f"Bearer {tokyo['token']}"}

    async def closed_with(*frames: str) -> tuple[int, str]:
        async with connect(url, additional_headers=as_tokyo) as ws:
            for frame in frames:
                await ws.send(frame)
            with pytest.raises(ConnectionClosedError) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None
            return closed.value.rcvd.code, closed.value.rcvd.reason

    async def scenario() -> None:
        for case, (headers, status) in refused.items():
            with pytest.raises(InvalidStatus) as denied:
                await connect(url, additional_headers=headers)
            response = denied.value.response
            assert response.status_code == status, case
            assert json.loads(response.body or b"")["error"]["message"], case
        hello = json.dumps({"type": "hello", "functions": []})
        # A stream must start with a Hello.
        code, reason = await closed_with(json.dumps({"type": "heartbeat", "node_id": "tokyo-1"}))
        assert code == 4400 and "Hello" in reason
        # Frames are JSON objects, about this node, that fit their schema.
        assert (await closed_with(hello, "[1, 2]"))[0] == 4400
        assert (await closed_with(hello, json.dumps({"type": "ack", "node_id": "osaka-1",
                                                     "id": 1, "state": "cached"})))[0] == 4400
        assert (await closed_with(hello, json.dumps({"type": "ack", "id": "x"})))[0] == 4400
        too_big = json.dumps({"type": "unknown", "pad": "x" * gcp.settings.max_json_body_bytes})
        assert (await closed_with(hello, too_big))[0] == 1009
        # A frame type this release does not know is passed over.
        async with connect(url, additional_headers=as_tokyo) as ws:
            await ws.send(hello)
            await ws.send(json.dumps({"type": "from-the-future"}))
            await ws.send(json.dumps({"type": "heartbeat", "node_id": "tokyo-1", "cpu": 2.5}))
            kinds = [json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] for _ in range(2)]
            assert sorted(kinds) == ["heartbeat_ack", "instruction"]

    try:
        run(scenario)
    finally:
        streams.close()
    assert node_row(gcp, "tokyo-1")["cpu"] == 2.5


def test_a_node_forwards_log_lines_only_of_functions_it_was_sent(
    gcp: CP, fn: dict[str, Any], wasm: SimpleNamespace
) -> None:
    """Lines naming a function never sent to the node (another tenant's) are dropped;
    those of its own function are kept under the function's project, whatever
    project the node names."""
    other_project = gcp.project("beta")
    other = gcp.function(ADMIN, "secret", owner_project_id=other_project)
    assert gcp.upload(ADMIN, other["id"], "1.0.0", wasm.edge_v1).status_code == 201
    node = gcp.node("tokyo", "tokyo-1")
    hub = gcp.client.app.state.cp.logs  # type: ignore[attr-defined]
    delivered: list[LogLine] = []
    deliver = hub.deliver
    hub.deliver = lambda lines: (delivered.extend(lines), deliver(lines))

    async def scenario() -> None:
        link = await connected(gcp, node)
        deploy(gcp, fn)
        await link.ack(await link.recv_kind("deploy"))
        lines = [pb.LogLine(function_id=fn["id"], project_id=other_project, line='{"n":1}'),
                 pb.LogLine(function_id=other["id"], project_id=other_project, line='{"n":2}')]
        await link.send(logs=pb.LogBatch(lines=lines))
        await link.heartbeat()  # handled after the batch: the batch is in
        await link.close()

    run(scenario)
    assert delivered == [LogLine(fn["id"], fn["owner_project_id"], '{"n":1}')]
    assert hub.recent(fn["id"], 10) == ['{"n":1}'] and hub.recent(other["id"], 10) == []


# SQLite takes its write lock when a transaction begins, so there a delete cannot
# come between an ack's read and its write.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_ack_for_an_instruction_deleted_meanwhile_is_let_go(
    gcp: CP, fn: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node is deleted (its instructions with it) between an ack's read of its
    instruction and its write: the stream's ack handler lets it go instead of failing
    the stream, which then ends as a deleted node's does."""
    from edgefn.controlplane.deployments import service as deployments
    from edgefn.controlplane.deployments.schemas import AckIn
    from edgefn.controlplane.stream import session as stream_session

    gcp.node("tokyo", "tokyo-1")
    deploy(gcp, fn)
    sessions = gcp.client.app.state.cp.sessions  # type: ignore[attr-defined]
    with db.session_scope(sessions) as session:
        row_id = session.execute(sa.select(OutboxInstruction.id).where(
            OutboxInstruction.node_id == "tokyo-1", OutboxInstruction.type == "deploy")).scalar()
    assert row_id is not None
    record = deployments._record_ack

    def deleted_meanwhile(*args: Any, **kw: Any) -> None:
        gcp.ok("DELETE", "/nodes/tokyo-1", ADMIN, 204)
        record(*args, **kw)

    monkeypatch.setattr(deployments, "_record_ack", deleted_meanwhile)
    with db.session_scope(sessions) as session:
        stream_session._acker("tokyo-1", AckIn(id=row_id, state="cached"))(session)
    with db.session_scope(sessions) as session:
        assert session.get(OutboxInstruction, row_id) is None
