"""Routes, nodes, heartbeats, deploys, rollouts and rollbacks, on both databases."""

from __future__ import annotations

import datetime as dt
import hashlib
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from edgefn.controlplane import db
from edgefn.controlplane.nodes.service import mark_stale
from tests.controlplane.conftest import ADMIN, CP, DEFAULT_POLICY


@pytest.fixture
def fn(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace) -> dict[str, Any]:
    body: dict[str, Any] = cp.function(team.a_dev, "hello", env={"K": "v"})
    for version, data in (("1.0.0", wasm.edge_v1), ("1.1.0", wasm.edge_v1_b)):
        assert cp.upload(team.a_dev, body["id"], version, data).status_code == 201
    return body


def _deploys(instructions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in instructions if i["type"] == "deploy"]


def test_routes(cp: CP, team: SimpleNamespace, fn: dict[str, Any]) -> None:
    route = cp.ok(
        "POST",
        "/routes",
        team.a_dev,
        201,
        json={
            "host": "*.example.com",
            "path": "/api/*",
            "function_id": fn["id"],
            "methods": ["get", "POST"],
            "priority": 5,
        },
    )
    assert route["methods"] == ["GET", "POST"] and route["host"] == "*.example.com"
    dup = {"host": "*.example.com", "path": "/api/*", "function_id": fn["id"], "priority": 5}
    assert cp.call("POST", "/routes", team.a_dev, json=dup).status_code == 409
    for bad in (
        {"host": "a*b.com", "path": "/"},
        {"host": "*", "path": "api"},
        {"host": "*", "path": "/a/*/b"},
        {"host": "*", "path": "/", "methods": ["BREW"]},
    ):
        r = cp.call("POST", "/routes", team.a_dev, json={**bad, "function_id": fn["id"]})
        assert r.status_code == 400, bad
    assert [r["id"] for r in cp.ok("GET", "/routes", team.a_viewer)] == [route["id"]]
    assert cp.ok("GET", "/routes", team.b_dev) == []
    assert cp.call("DELETE", f"/routes/{route['id']}", team.b_dev).status_code == 404
    assert cp.call("DELETE", f"/routes/{route['id']}", team.a_viewer).status_code == 403
    assert cp.call("DELETE", f"/routes/{route['id']}", team.a_dev).status_code == 204
    assert cp.ok("GET", "/routes", team.a_dev) == []


def test_nodes_and_heartbeat(cp: CP, team: SimpleNamespace) -> None:
    node = cp.node("jp-t1", "tokyo-1", region="tokyo", latency=20)
    assert node["id"] == "tokyo-1" and node["status"] == "registered"
    assert (
        cp.call("POST", "/nodes", ADMIN, json={"id": "tokyo-1", "pop_id": "x"}).status_code == 409
    )
    first = cp.heartbeat(node, functions=[{"id": "f", "version": "1.0.0", "state": "cached"}])
    assert [i["type"] for i in first] == ["config"]  # a new node gets its route table
    listed = cp.ok("GET", "/nodes", team.a_dev)
    assert listed[0]["id"] == "tokyo-1" and listed[0]["status"] == "online"
    assert listed[0]["mem_bytes"] == 1 << 20 and listed[0]["last_heartbeat"]
    assert listed[0]["functions"][0]["state"] == "cached"
    # Instructions stay pending until acked; acks are idempotent.
    assert [i["id"] for i in cp.heartbeat(node)] == [first[0]["id"]]
    assert cp.heartbeat(node, acks=[{"id": first[0]["id"], "state": "cached"}]) == []
    assert cp.heartbeat(node, acks=[{"id": first[0]["id"], "state": "cached"}]) == []
    r = cp.call(
        "POST",
        "/nodes/tokyo-1/heartbeat",
        {"Authorization": f"Bearer {node['token']}"},
        json={"node_id": "osaka-1"},
    )
    assert r.status_code == 400
    r = cp.call(
        "POST",
        "/nodes/tokyo-1/heartbeat",
        {"Authorization": f"Bearer {node['token']}"},
        json={"node_id": "tokyo-1", "surprise": 1},
    )
    assert r.status_code == 400


def test_silent_node_goes_offline(cp: CP) -> None:
    node = cp.node("jp-t1", "tokyo-1")
    cp.heartbeat(node)
    engine = db.make_engine(cp.settings.resolved_database_url())
    try:
        with db.session_scope(db.make_sessionmaker(engine)) as session:
            later = db.utcnow() + dt.timedelta(seconds=61)
            assert mark_stale(session, interval_s=30, now=later) == 0  # two intervals: still up
            later = db.utcnow() + dt.timedelta(seconds=91)
            assert mark_stale(session, interval_s=30, now=later) == 1
            session.commit()
    finally:
        engine.dispose()
    assert cp.ok("GET", "/nodes", ADMIN)[0]["status"] == "offline"
    cp.heartbeat(node)
    assert cp.ok("GET", "/nodes", ADMIN)[0]["status"] == "online"


def test_deploy_pull_with_selector_and_instruction_format(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any], wasm: SimpleNamespace
) -> None:
    cp.ok(
        "PATCH",
        f"/functions/{fn['id']}",
        team.a_dev,
        json={"pop_selector": "region in ['tokyo','osaka'] and latency<30"},
    )
    tokyo = cp.node("jp-t1", "tokyo-1", region="tokyo", latency=20)
    osaka = cp.node("jp-o1", "osaka-1", region="osaka", latency=45)
    paris = cp.node("eu-p1", "paris-1", region="paris", latency=10)
    route = cp.ok(
        "POST",
        "/routes",
        team.a_dev,
        201,
        json={"host": "*", "path": "/hello", "function_id": fn["id"], "methods": ["GET"]},
    )
    dep = cp.ok(
        "POST",
        f"/functions/{fn['id']}/deploy",
        team.a_dev,
        202,
        json={"version": "1.0.0", "strategy": "pull"},
    )
    assert dep["deployment_id"] == dep["id"] and dep["state"] == "in_progress"
    assert [n["node_id"] for n in dep["nodes"]] == ["tokyo-1"]
    assert _deploys(cp.heartbeat(osaka)) == [] and _deploys(cp.heartbeat(paris)) == []
    pending = cp.heartbeat(tokyo)
    # The route table sent at registration was replaced by the newer one, which
    # holds no route yet: the function was not deployed to the node when it was
    # made. The deploy brings the function's routes.
    assert [i["type"] for i in pending] == ["config", "deploy"]
    config, deploy = pending
    assert config["routes"] == []
    assert set(deploy) == {
        "id",
        "type",
        "function_id",
        "project_id",
        "version",
        "artifact_url",
        "sha256",
        "abi",
        "entrypoint",
        "memory_pages",
        "max_execution_ms",
        "max_response_bytes",
        "env",
        "routes",
        "deployment_id",
        "split",
        "precompiled",
        "data",
        *DEFAULT_POLICY,
    }
    assert deploy["split"] is None
    assert deploy["data"] is None  # a version without a data archive
    assert deploy["precompiled"] == []  # the node reported no engine tag
    # A function created without a policy sends every field at its (denying) default.
    assert {k: deploy[k] for k in DEFAULT_POLICY} == DEFAULT_POLICY
    assert deploy["version"] == "1.0.0" and deploy["abi"] == "edge-v1"
    assert deploy["entrypoint"] == "handle"
    assert deploy["sha256"] == hashlib.sha256(wasm.edge_v1).hexdigest()
    assert deploy["env"] == {"K": "v"} and deploy["deployment_id"] == dep["id"]
    assert deploy["routes"] == [
        {
            "id": route["id"],
            "host": "*",
            "path": "/hello",
            "methods": ["GET"],
            "priority": 0,
            "function_id": fn["id"],
            "project_id": fn["owner_project_id"],
        }
    ]
    assert deploy["project_id"] == fn["owner_project_id"]
    assert pending[0]["id"] < pending[1]["id"]
    # The signed URL downloads the module without any credentials.
    got = cp.client.get(deploy["artifact_url"])
    assert got.status_code == 200 and got.content == wasm.edge_v1
    assert cp.client.get(deploy["artifact_url"].replace("expires=", "expires=1")).status_code == 403
    cp.heartbeat(tokyo, acks=[{"id": i["id"], "state": "cached"} for i in pending])
    done = cp.ok("GET", f"/deployments/{dep['id']}", team.a_viewer)
    assert done["state"] == "succeeded" and done["nodes"] == [
        {"node_id": "tokyo-1", "state": "cached", "message": None}
    ]
    assert cp.call("GET", f"/deployments/{dep['id']}", team.b_dev).status_code == 404
    assert cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)["active_version"] == "1.0.0"


def test_deploy_target_pop_and_errors(cp: CP, team: SimpleNamespace, fn: dict[str, Any]) -> None:
    a = cp.node("jp-t1", "tokyo-1")
    cp.node("jp-t2", "tokyo-2")
    dep = cp.ok(
        "POST",
        f"/functions/{fn['id']}/deploy",
        team.a_dev,
        202,
        json={"version": "1.0.0", "target_pop": ["jp-t1"]},
    )
    assert [n["node_id"] for n in dep["nodes"]] == ["tokyo-1"]
    r = cp.call("POST", f"/functions/{fn['id']}/deploy", team.a_dev, json={"version": "3.0.0"})
    assert r.status_code == 404
    r = cp.call(
        "POST",
        f"/functions/{fn['id']}/deploy",
        team.a_dev,
        json={"version": "1.0.0", "strategy": "yolo"},
    )
    assert r.status_code == 400
    deploy = _deploys(cp.heartbeat(a))[0]
    cp.heartbeat(a, acks=[{"id": deploy["id"], "state": "error", "message": "sha mismatch"}])
    failed = cp.ok("GET", f"/deployments/{dep['id']}", team.a_dev)
    assert failed["state"] == "failed" and failed["nodes"][0]["message"] == "sha mismatch"


def test_canary_then_rest(cp: CP, team: SimpleNamespace, fn: dict[str, Any]) -> None:
    nodes = [cp.node(f"pop-{i}", f"node-{i}") for i in range(3)]
    dep = cp.ok(
        "POST",
        f"/functions/{fn['id']}/deploy",
        team.a_dev,
        202,
        json={"version": "1.0.0", "strategy": "canary"},
    )
    assert [n["state"] for n in dep["nodes"]] == ["pending", "waiting", "waiting"]
    assert _deploys(cp.heartbeat(nodes[1])) == []
    canary = _deploys(cp.heartbeat(nodes[0]))[0]
    cp.heartbeat(nodes[0], acks=[{"id": canary["id"], "state": "cached"}])
    states = [n["state"] for n in cp.ok("GET", f"/deployments/{dep['id']}", ADMIN)["nodes"]]
    assert states == ["cached", "pending", "pending"]
    for node in nodes[1:]:
        ins = _deploys(cp.heartbeat(node))[0]
        cp.heartbeat(node, acks=[{"id": ins["id"], "state": "cached"}])
    assert cp.ok("GET", f"/deployments/{dep['id']}", ADMIN)["state"] == "succeeded"


def test_gradual_waves(cp: CP, team: SimpleNamespace, fn: dict[str, Any]) -> None:
    for i in range(5):
        cp.node(f"pop-{i}", f"node-{i}")
    dep = cp.ok(
        "POST",
        f"/functions/{fn['id']}/deploy",
        team.a_dev,
        202,
        json={"version": "1.0.0", "strategy": "gradual"},
    )
    assert dep["strategy"] == "gradual"
    assert [n["state"] for n in dep["nodes"]].count("pending") == 1


def test_rollback(cp: CP, team: SimpleNamespace, fn: dict[str, Any]) -> None:
    node = cp.node("jp-t1", "tokyo-1")
    r = cp.call("POST", f"/functions/{fn['id']}/rollback", team.a_dev, json={})
    assert r.status_code == 409  # nothing deployed yet
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.0.0"})
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.1.0"})
    # The unacked 1.0.0 deploy was superseded by 1.1.0 on the node.
    assert [i["version"] for i in _deploys(cp.heartbeat(node))] == ["1.1.0"]
    back = cp.ok("POST", f"/functions/{fn['id']}/rollback", team.a_dev, 202)
    assert back["version"] == "1.0.0" and back["kind"] == "rollback"
    assert back["previous_version"] == "1.1.0"
    assert [n["node_id"] for n in back["nodes"]] == ["tokyo-1"]
    assert cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)["active_version"] == "1.0.0"
    explicit = cp.ok(
        "POST", f"/functions/{fn['id']}/rollback", team.a_dev, 202, json={"version": "1.1.0"}
    )
    assert explicit["version"] == "1.1.0"
    listed = cp.call("GET", f"/functions/{fn['id']}/deployments?limit=3", team.a_viewer)
    assert listed.status_code == 200 and listed.headers["X-Total-Count"] == "4"
    assert [(d["kind"], d["version"], d["state"]) for d in listed.json()] == [
        ("rollback", "1.1.0", "in_progress"),
        ("rollback", "1.0.0", "superseded"),
        ("deploy", "1.1.0", "superseded"),
    ]
    newest = listed.json()[0]
    assert newest["nodes"] == [{"node_id": "tokyo-1", "state": "pending", "message": None}]
    assert cp.call("GET", f"/functions/{fn['id']}/deployments", team.b_dev).status_code == 404
    actions = [row["action"] for row in cp.ok("GET", "/audit", team.a_dev)]
    assert actions[:4] == [
        "function.rollback",
        "function.rollback",
        "function.deploy",
        "function.deploy",
    ]


def test_new_node_gets_active_functions_and_delete_undeploys(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.1.0"})
    late = cp.node("jp-t9", "late-1")
    deploys = _deploys(cp.heartbeat(late))
    assert [(d["function_id"], d["version"]) for d in deploys] == [(fn["id"], "1.1.0")]
    cp.heartbeat(late, acks=[{"id": deploys[0]["id"], "state": "cached"}])
    assert cp.call("DELETE", f"/functions/{fn['id']}", team.a_owner).status_code == 204
    undeploy = [i for i in cp.heartbeat(late) if i["type"] == "undeploy"]
    assert [(u["function_id"], u["artifact_url"]) for u in undeploy] == [(fn["id"], None)]
    assert isinstance(httpx.URL("http://x"), httpx.URL)
