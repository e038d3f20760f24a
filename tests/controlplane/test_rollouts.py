"""Gated rollouts: the bake window, the health gates' decisions from the nodes'
reported figures, automatic rollback, promote and abort, on both databases."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from edgefn.contract import LATENCY_BOUNDS
from edgefn.controlplane import db
from edgefn.controlplane.deployments import service as deployments
from tests.controlplane.conftest import ADMIN, CP


@pytest.fixture
def fn(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace) -> dict[str, Any]:
    body: dict[str, Any] = cp.function(team.a_dev, "hello")
    for version, data in (("1.0.0", wasm.edge_v1), ("1.1.0", wasm.edge_v1_b)):
        assert cp.upload(team.a_dev, body["id"], version, data).status_code == 201
    return body


def _stats(fid: str, version: str, count: int, errors: int = 0, slow: bool = False) -> Any:
    bound = 0.5 if slow else 0.005
    latency = [count if b >= bound else 0 for b in LATENCY_BOUNDS]
    return {"function_id": fid, "version": version, "count": count,
            "errors": {"guest_error": errors} if errors else {}, "latency": latency}


def _drive(cp: CP) -> None:
    sessions = cp.client.app.state.cp.sessions  # type: ignore[attr-defined]
    with db.session_scope(sessions) as session:
        deployments.drive_rollouts(session)
        session.commit()


def _ack_all(cp: CP, nodes: list[Any], **body: Any) -> None:
    for node in nodes:
        acks = [{"id": i["id"], "state": "cached"} for i in cp.heartbeat(node, **body)]
        cp.heartbeat(node, acks=acks, **body)


def _rollout(cp: CP, dep: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = cp.ok("GET", f"/deployments/{dep['id']}", ADMIN)
    return out


def _setup(cp: CP, team: SimpleNamespace, fn: dict[str, Any], **gates: Any) -> Any:
    nodes = [cp.node(f"pop-{i}", f"node-{i}") for i in range(3)]
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.0.0"})
    old = [_stats(fn["id"], "1.0.0", 100)]
    _ack_all(cp, nodes, versions=old)
    dep = cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={
        "version": "1.1.0", "strategy": "gradual",
        "gates": {"bake_s": 0, "min_requests": 10, "wave_percent": 50, **gates}})
    assert dep["rollout"]["state"] == "pending" and dep["rollout"]["waves"] == 2
    _ack_all(cp, nodes[:1], versions=old)
    assert _rollout(cp, dep)["rollout"]["state"] == "baking"
    return nodes, dep


def test_a_healthy_version_goes_through_every_wave(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    nodes, dep = _setup(cp, team, fn)
    _drive(cp)  # nothing reported for the new version yet: the gate waits
    rollout = _rollout(cp, dep)["rollout"]
    assert rollout["state"] == "baking" and rollout["decisions"][-1]["action"] == "wait"
    cp.heartbeat(nodes[0], versions=[_stats(fn["id"], "1.1.0", 50)])
    _drive(cp)
    out = _rollout(cp, dep)
    decision = out["rollout"]["decisions"][-1]
    assert decision["action"] == "promote" and decision["new"]["requests"] == 50
    assert decision["previous"]["requests"] == 200  # the two nodes still on 1.0.0
    assert out["rollout"]["state"] == "promoting" and out["rollout"]["wave"] == 1
    assert out["rollout"]["nodes"][0]["new"]["requests"] == 50
    _ack_all(cp, nodes[1:])
    out = _rollout(cp, dep)
    assert (out["state"], out["rollout"]["state"]) == ("succeeded", "done")


@pytest.mark.parametrize("bad", ["errors", "slow"])
def test_a_failing_version_is_rolled_back_by_itself(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any], bad: str
) -> None:
    nodes, dep = _setup(cp, team, fn)
    figures = _stats(fn["id"], "1.1.0", 50, errors=50 if bad == "errors" else 0,
                     slow=bad == "slow")
    cp.heartbeat(nodes[0], versions=[figures])
    _drive(cp)
    out = _rollout(cp, dep)
    assert out["state"] == "failed" and out["rollout"]["state"] == "rolling_back"
    assert out["rollout"]["reason"].startswith("automatic rollback: ")
    assert ("error rate" if bad == "errors" else "p99") in out["rollout"]["reason"]
    back = cp.ok("GET", f"/deployments/{out['rollout']['rollback_id']}", ADMIN)
    assert (back["kind"], back["version"]) == ("rollback", "1.0.0")
    assert len(back["nodes"]) == 3
    # Every node is sent the old version, including those that never got the new one.
    for node in nodes:
        assert [i["version"] for i in cp.heartbeat(node) if i["type"] == "deploy"] == ["1.0.0"]
    _ack_all(cp, nodes)
    _drive(cp)
    assert _rollout(cp, dep)["rollout"]["state"] == "rolled_back"
    assert cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)["active_version"] == "1.0.0"
    entry = next(a for a in cp.ok("GET", "/audit", team.a_dev)
                 if a["action"] == "function.rollback")
    assert entry["details"]["automatic"] is True
    assert entry["details"]["reason"] == out["rollout"]["reason"]


def test_manual_promotion_and_abort(cp: CP, team: SimpleNamespace, fn: dict[str, Any]) -> None:
    nodes, dep = _setup(cp, team, fn, manual=True)
    cp.heartbeat(nodes[0], versions=[_stats(fn["id"], "1.1.0", 50)])
    _drive(cp)
    out = _rollout(cp, dep)
    assert out["rollout"]["state"] == "baking"
    assert out["rollout"]["decisions"][-1]["action"] == "hold"
    assert cp.call("POST", f"/deployments/{dep['id']}/promote", team.b_dev).status_code == 404
    promoted = cp.ok("POST", f"/deployments/{dep['id']}/promote", team.a_dev)
    assert promoted["rollout"]["state"] == "promoting"
    assert cp.call("POST", f"/deployments/{dep['id']}/promote", team.a_dev).status_code == 409
    aborted = cp.ok("POST", f"/deployments/{dep['id']}/abort", team.a_dev)
    assert aborted["rollout"]["state"] == "rolling_back"
    assert aborted["rollout"]["reason"].startswith("aborted by ")
    _ack_all(cp, nodes)
    _drive(cp)
    assert _rollout(cp, dep)["rollout"]["state"] == "aborted"


def test_a_node_that_cannot_load_the_version_rolls_it_back(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    nodes = [cp.node(f"pop-{i}", f"node-{i}") for i in range(3)]
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.0.0"})
    _ack_all(cp, nodes)
    dep = cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202,
                json={"version": "1.1.0", "strategy": "canary", "gates": {}})
    ins = [i for i in cp.heartbeat(nodes[0]) if i["type"] == "deploy"]
    cp.heartbeat(nodes[0], acks=[{"id": ins[0]["id"], "state": "error", "message": "no"}])
    rollout = _rollout(cp, dep)["rollout"]
    assert rollout["state"] == "rolling_back"
    assert rollout["reason"] == "automatic rollback: node node-0 could not load it: no"
    _ack_all(cp, nodes)
    _drive(cp)
    assert _rollout(cp, dep)["rollout"]["state"] == "rolled_back"


# ---- gated splits: every node shares the traffic, each share is judged ----------

SPLIT = {"percent": 20, "key": "header:x-user"}


def _split_setup(cp: CP, team: SimpleNamespace, fn: dict[str, Any], split: dict[str, Any],
                 **gates: Any) -> Any:
    """Three nodes on 1.0.0, then 1.1.0 split on all of them, acked: baking."""
    nodes = [cp.node(f"pop-{i}", f"node-{i}") for i in range(3)]
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.0.0"})
    _ack_all(cp, nodes, versions=[_stats(fn["id"], "1.0.0", 100)])
    dep = cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={
        "version": "1.1.0", "strategy": "gradual", "split": split,
        "gates": {"bake_s": 0, "min_requests": 10, **gates}})
    assert dep["strategy"] == "pull" and dep["rollout"]["state"] == "pending"
    assert dep["split"] == {"percent": split["percent"], "key": split.get("key", ""),
                            "steps": split.get("steps")}
    for node in nodes:
        sent = [i for i in cp.heartbeat(node) if i["type"] == "deploy"]
        assert [(i["version"], i["split"]) for i in sent] == [
            ("1.1.0", {"percent": split["percent"], "key": split.get("key", "")})]
    _ack_all(cp, nodes)
    out = _rollout(cp, dep)
    # Every node acked, yet the deployment runs on: the share bakes.
    assert (out["state"], out["rollout"]["state"]) == ("in_progress", "baking")
    return nodes, dep


def _both(fid: str, new: int, errors: int = 0) -> list[Any]:
    """A node's report while it splits: the new version's figures beside the old one's."""
    return [_stats(fid, "1.0.0", 100), _stats(fid, "1.1.0", new, errors=errors)]


def _sent(cp: CP, nodes: list[Any]) -> list[tuple[str, Any]]:
    return [(i["version"], i["split"]) for node in nodes for i in cp.heartbeat(node)
            if i["type"] == "deploy"]


def test_a_healthy_split_bakes_then_takes_all_the_traffic(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    nodes, dep = _split_setup(cp, team, fn, SPLIT)
    r = _rollout(cp, dep)["rollout"]
    assert (r["wave"], r["waves"], r["percent"]) == (0, 2, 20)
    _drive(cp)  # nothing reported for the new version yet: the gate waits
    assert _rollout(cp, dep)["rollout"]["decisions"][-1]["action"] == "wait"
    for node in nodes:
        cp.heartbeat(node, versions=_both(fn["id"], 5))
    _drive(cp)
    out = _rollout(cp, dep)
    decision = out["rollout"]["decisions"][-1]
    # Judged over every node: the new version's figures against the old one's there.
    assert decision["action"] == "promote"
    assert decision["new"] == {"nodes": 3, "requests": 15, "errors": 0, "error_rate": 0.0,
                               "p99_s": 0.005}
    assert decision["previous"]["nodes"] == 3 and decision["previous"]["requests"] == 300
    assert (out["rollout"]["state"], out["rollout"]["wave"], out["rollout"]["percent"]) == (
        "promoting", 1, 100)
    # The promotion is a plain deploy of the new version: the split ends on every node.
    assert _sent(cp, nodes) == [("1.1.0", None)] * 3
    assert _rollout(cp, dep)["nodes"][0]["state"] == "pending"
    _ack_all(cp, nodes)
    out = _rollout(cp, dep)
    assert (out["state"], out["rollout"]["state"]) == ("succeeded", "done")
    assert cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)["active_version"] == "1.1.0"


def test_a_failing_split_is_removed_by_itself(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    nodes, dep = _split_setup(cp, team, fn, SPLIT)
    for node in nodes:
        cp.heartbeat(node, versions=_both(fn["id"], 5, errors=5))
    _drive(cp)
    out = _rollout(cp, dep)
    assert out["state"] == "failed" and out["rollout"]["state"] == "rolling_back"
    assert out["rollout"]["reason"] == (
        "automatic rollback: error rate 100.0% against 0.0% before "
        "(at most 2.0% more allowed)")
    back = cp.ok("GET", f"/deployments/{out['rollout']['rollback_id']}", ADMIN)
    assert (back["kind"], back["version"], back["split"]) == ("rollback", "1.0.0", None)
    # Every node is sent the old version alone: no split left anywhere.
    assert _sent(cp, nodes) == [("1.0.0", None)] * 3
    _ack_all(cp, nodes)
    _drive(cp)
    assert _rollout(cp, dep)["rollout"]["state"] == "rolled_back"
    assert cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)["active_version"] == "1.0.0"
    entry = next(a for a in cp.ok("GET", "/audit", team.a_dev)
                 if a["action"] == "function.rollback")
    assert entry["details"]["automatic"] is True and entry["details"]["rolls_back"] == dep["id"]
    assert entry["details"]["reason"] == out["rollout"]["reason"]


def test_a_split_in_steps_held_promoted_and_aborted(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    split = {"percent": 10, "key": "cookie:uid", "steps": [50, 100]}
    nodes, dep = _split_setup(cp, team, fn, split, manual=True)
    assert _rollout(cp, dep)["rollout"]["waves"] == 3
    for node in nodes:
        cp.heartbeat(node, versions=_both(fn["id"], 5))
    _drive(cp)
    r = _rollout(cp, dep)["rollout"]
    assert r["state"] == "baking" and r["decisions"][-1]["action"] == "hold"
    assert _sent(cp, nodes) == []  # held: nothing sent until promoted
    promoted = cp.ok("POST", f"/deployments/{dep['id']}/promote", team.a_dev)
    assert (promoted["rollout"]["state"], promoted["rollout"]["percent"]) == ("promoting", 50)
    assert cp.call("POST", f"/deployments/{dep['id']}/promote", team.a_dev).status_code == 409
    assert _sent(cp, nodes) == [("1.1.0", {"percent": 50, "key": "cookie:uid"})] * 3
    _ack_all(cp, nodes)
    assert _rollout(cp, dep)["rollout"]["state"] == "baking"  # the 50% share bakes too
    aborted = cp.ok("POST", f"/deployments/{dep['id']}/abort", team.a_dev)
    assert aborted["rollout"]["state"] == "rolling_back"
    assert aborted["rollout"]["reason"].startswith("aborted by ")
    assert _sent(cp, nodes) == [("1.0.0", None)] * 3
    _ack_all(cp, nodes)
    _drive(cp)
    assert _rollout(cp, dep)["rollout"]["state"] == "aborted"


def test_a_split_without_gates_is_not_a_rollout(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    nodes = [cp.node("pop-0", "node-0")]
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.0.0"})
    _ack_all(cp, nodes)
    dep = cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202,
                json={"version": "1.1.0", "split": SPLIT})
    assert dep["rollout"] is None and dep["split"] == {**SPLIT, "steps": None}
    _ack_all(cp, nodes)
    assert _rollout(cp, dep)["state"] == "succeeded"


@pytest.mark.parametrize(("split", "waves"), [
    ({"percent": 20, "steps": [50, 10, 100, 50]}, [20, 50, 100]),  # rising, from percent up
    ({"percent": 20, "steps": [50]}, [20, 50, 100]),  # always ending at 100
    ({"percent": 0}, [0, 100]),  # nothing to judge yet: waits, or is promoted by hand
    ({"percent": 100, "steps": [50]}, [100]),  # the whole traffic at once: no bake
])
def test_the_shares_a_gated_split_moves_through(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any], split: dict[str, Any], waves: list[int]
) -> None:
    node = cp.node("pop-0", "node-0")
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.0.0"})
    _ack_all(cp, [node])
    dep = cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202,
                json={"version": "1.1.0", "split": split, "gates": {"bake_s": 0}})
    assert (dep["rollout"]["waves"], dep["rollout"]["percent"]) == (len(waves), waves[0])
    assert dep["split"]["steps"] == split.get("steps")  # as asked
    assert _sent(cp, [node]) == [("1.1.0", {"percent": waves[0], "key": ""})]


def test_a_gated_split_of_the_active_version_is_refused(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    cp.node("pop-0", "node-0")
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.0.0"})
    resp = cp.call("POST", f"/functions/{fn['id']}/deploy", team.a_dev, json={
        "version": "1.0.0", "split": {"percent": 10}, "gates": {}})
    assert resp.status_code == 409, resp.text
    assert "other than the active one (1.0.0)" in resp.json()["error"]["message"]
