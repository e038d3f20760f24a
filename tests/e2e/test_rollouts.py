"""Gated rollouts on a real cluster: three edge nodes report their figures, the
control plane promotes a healthy version wave by wave (or share by share of a
split), rolls a failing one back by itself, and resumes a bake window after a
restart."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefn.cluster import Cluster, ClusterError, Edge, fixed_response_module, wait_until
from tests.e2e.conftest import module

pytestmark = pytest.mark.e2e

HELLO = b"Hello from edgefn!"
# Judged on errors: a p99 under a second is never a regression here, since a busy
# machine's tail moves more than a new version's (the p99 gate has its own tests).
GATES = {"bake_s": 1, "min_requests": 10, "wave_percent": 50, "p99_floor_s": 1.0}
# Clients told apart by a header, as a split keys them; with 30% of 40, some on each side.
USERS = [f"user-{i}" for i in range(40)]
SPLIT = {"percent": 30, "key": "header:x-user"}


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Cluster, list[Edge], str]]:
    """A CP judging gates every 0.3 s, three nodes, and v1 (hello) everywhere."""
    c = Cluster(tmp_path, token="e2e-admin-token", project="e2e")
    c.cp_env.update({"EDGEFN_LEASE_TTL_S": "0.9", "EDGEFN_ROLLOUT_CHECK_S": "0.3"})
    c.start_cp()
    try:
        edges = c.add_edges([(f"node-{i}", f"pop-{i}") for i in range(3)])
        fid = c.function("gated")
        c.upload(fid, "1.0.0", module("hello-c"))
        c.upload(fid, "2.0.0", module("counter"))
        c.upload(fid, "3.0.0", module("trap"))
        # Its own 500s, with no trap and no failed call.
        c.upload(fid, "4.0.0", fixed_response_module(500, "boom"))
        c.route(fid, "/hello")
        c.deploy(fid, "1.0.0")
        for edge in edges:
            wait_until(f"v1 on {edge.node_id}", lambda e=edge: HELLO in e.get("/hello").content)
        yield c, edges, fid
    finally:
        c.close()


@pytest.fixture
def traffic(fleet: tuple[Cluster, list[Edge], str]) -> Iterator[None]:
    """Requests to every node while the test runs, so that there is something to judge."""
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(timeout=5) as client:
            n = 0
            while not stop.is_set():
                n += 1
                for edge in fleet[1]:
                    with contextlib.suppress(httpx.HTTPError):
                        client.get(f"{edge.url}/hello",
                                   headers={"x-user": USERS[n % len(USERS)]})
                stop.wait(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


def rollout(cluster: Cluster, dep: str) -> dict[str, Any]:
    return dict(cluster.deployment(dep)["rollout"])


def states_until_done(cluster: Cluster, dep: str, timeout: float) -> list[str]:
    """The states rollout `dep` went through until `done`; the states and the rollout
    in the failure when it does not get there."""
    states: list[str] = []

    def done() -> bool:
        r = rollout(cluster, dep)
        if not states or states[-1] != r["state"]:
            states.append(r["state"])
        return bool(r["state"] == "done")

    try:
        wait_until("rollout done", done, timeout=timeout)
    except ClusterError as exc:
        raise AssertionError(f"{exc}; states {states}; {rollout(cluster, dep)}") from None
    return states


def guest_5xx(edge: Edge, version: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("edge_guest_5xx_responses_total{")
               and f'version="{version}"' in line)


def serves_v2(edge: Edge, user: str = "") -> bool:
    resp = edge.get("/hello", headers={"x-user": user} if user else {})
    return resp.status_code == 200 and resp.headers.get("x-init") == "1"


def restart_and_check_resumed(cluster: Cluster, dep: str) -> dict[str, Any]:
    """Restart the control plane during `dep`'s bake window; the rollout as it found it."""
    before = rollout(cluster, dep)
    cluster.stop_cp()
    cluster.start_cp()
    after = rollout(cluster, dep)
    # Resumed where it was: the same wave, baking since the same instant (not a fresh
    # window), or past it already if the restart outlasted the window on a busy machine.
    if after["wave"] == before["wave"] and after["state"] == "baking":
        assert after["bake_started_at"] == before["bake_started_at"]
    else:
        assert after["wave"] > before["wave"] or after["state"] in ("promoting", "done")
        assert after["wave"] >= before["wave"]
    assert after["decisions"][: len(before["decisions"])] == before["decisions"]
    return after


def every_user_on_v2(edges: list[Edge]) -> bool:
    return all(serves_v2(edge, user) for edge in edges for user in USERS)


@pytest.mark.usefixtures("traffic")
def test_a_good_version_goes_canary_waves_done(fleet: tuple[Cluster, list[Edge], str]) -> None:
    cluster, edges, fid = fleet
    dep = cluster.deploy(fid, "2.0.0", strategy="gradual", gates=GATES)
    states = states_until_done(cluster, dep, timeout=60)
    r = rollout(cluster, dep)
    assert [d["action"] for d in r["decisions"] if d["action"] != "wait"] == ["promote"]
    promote = next(d for d in r["decisions"] if d["action"] == "promote")
    assert promote["new"]["requests"] >= 10 and promote["new"]["errors"] == 0
    assert promote["previous"]["requests"] > 0
    assert "baking" in states and states[-1] == "done"
    for edge in edges:
        assert serves_v2(edge)


@pytest.mark.usefixtures("traffic")
def test_a_version_answering_500_is_rolled_back(fleet: tuple[Cluster, list[Edge], str]) -> None:
    cluster, edges, fid = fleet
    good = cluster.deploy(fid, "2.0.0")
    for edge in edges:
        wait_until(f"v2 on {edge.node_id}", lambda e=edge: serves_v2(e))
    wait_until("v2 acked", lambda: cluster.deployment(good)["state"] == "succeeded")
    # Its own 500s, not traps (the split's rollback below is of a trapping version).
    dep = cluster.deploy(fid, "4.0.0", strategy="gradual", gates=GATES)
    wait_until("rolled back", lambda: rollout(cluster, dep)["state"] == "rolled_back",
               timeout=60)
    r = rollout(cluster, dep)
    assert r["reason"].startswith("automatic rollback: error rate 100.0%")
    assert r["decisions"][-1]["new"]["errors"] >= 10
    # The guest's own answers, not failed calls: counted as such on the node that had it.
    answered = sum(guest_5xx(edge, "4.0.0") for edge in edges)
    assert answered >= 10
    for edge in edges:
        wait_until(f"v2 again on {edge.node_id}", lambda e=edge: serves_v2(e))
    audit = cluster.call("GET", "/audit")
    entry = next(a for a in audit if a["action"] == "function.rollback")
    assert entry["details"]["automatic"] is True and entry["details"]["rolls_back"] == dep


@pytest.mark.usefixtures("traffic")
def test_a_restart_in_the_bake_window_resumes(fleet: tuple[Cluster, list[Edge], str]) -> None:
    cluster, edges, fid = fleet
    # A bake window longer than a restart of the control plane takes on a busy machine.
    dep = cluster.deploy(fid, "2.0.0", strategy="gradual", gates={**GATES, "bake_s": 15})
    wait_until("baking", lambda: rollout(cluster, dep)["state"] == "baking", timeout=30)
    restart_and_check_resumed(cluster, dep)
    wait_until("rollout done", lambda: rollout(cluster, dep)["state"] == "done", timeout=120)
    for edge in edges:
        assert serves_v2(edge)


@pytest.mark.usefixtures("traffic")
def test_a_good_version_under_a_split_bakes_and_takes_all_the_traffic(
    fleet: tuple[Cluster, list[Edge], str]
) -> None:
    cluster, edges, fid = fleet
    dep = cluster.deploy(fid, "2.0.0", split=SPLIT, gates=GATES)
    out = cluster.deployment(dep)
    assert out["strategy"] == "pull" and out["rollout"]["percent"] == 30
    states = states_until_done(cluster, dep, timeout=120)
    r = rollout(cluster, dep)
    assert [d["action"] for d in r["decisions"] if d["action"] != "wait"] == ["promote"]
    promote = next(d for d in r["decisions"] if d["action"] == "promote")
    # Judged on every node at once: each served both versions side by side.
    assert promote["new"]["nodes"] == 3 and promote["previous"]["nodes"] == 3
    assert promote["new"]["requests"] >= 10 and promote["new"]["errors"] == 0
    assert "baking" in states and (r["wave"], r["percent"]) == (1, 100)
    assert cluster.deployment(dep)["state"] == "succeeded"
    wait_until("every client on 2.0.0 on every node", lambda: every_user_on_v2(edges),
               timeout=60)


@pytest.mark.usefixtures("traffic")
def test_a_version_answering_500_under_a_split_is_removed(
    fleet: tuple[Cluster, list[Edge], str]
) -> None:
    cluster, edges, fid = fleet
    good = cluster.deploy(fid, "2.0.0")
    wait_until("v2 acked", lambda: cluster.deployment(good)["state"] == "succeeded", timeout=60)
    wait_until("v2 everywhere", lambda: every_user_on_v2(edges), timeout=60)
    dep = cluster.deploy(fid, "3.0.0", split=SPLIT, gates=GATES)
    wait_until("rolled back", lambda: rollout(cluster, dep)["state"] == "rolled_back",
               timeout=120)
    r = rollout(cluster, dep)
    assert r["reason"].startswith("automatic rollback: error rate 100.0%")
    assert r["decisions"][-1]["action"] == "rollback"
    assert r["decisions"][-1]["new"]["errors"] >= 10
    # The split is gone: every client of every node is answered by 2.0.0 alone.
    wait_until("every client on 2.0.0 again", lambda: every_user_on_v2(edges), timeout=60)
    back = cluster.deployment(r["rollback_id"])
    assert (back["kind"], back["version"], back["split"]) == ("rollback", "2.0.0", None)
    entry = next(a for a in cluster.call("GET", "/audit")
                 if a["action"] == "function.rollback")
    assert entry["details"]["automatic"] is True and entry["details"]["rolls_back"] == dep
    assert entry["details"]["reason"] == r["reason"]


@pytest.mark.usefixtures("traffic")
def test_a_restart_in_a_split_bake_window_resumes(
    fleet: tuple[Cluster, list[Edge], str]
) -> None:
    cluster, edges, fid = fleet
    dep = cluster.deploy(fid, "2.0.0", split=SPLIT, gates={**GATES, "bake_s": 15})
    wait_until("baking", lambda: rollout(cluster, dep)["state"] == "baking", timeout=60)
    r = restart_and_check_resumed(cluster, dep)
    # Still the 30% share, or already the whole traffic if the window ran out meanwhile.
    assert r["percent"] == (30 if r["wave"] == 0 else 100)
    wait_until("rollout done", lambda: rollout(cluster, dep)["state"] == "done", timeout=120)
    wait_until("every client on 2.0.0", lambda: every_user_on_v2(edges), timeout=60)
