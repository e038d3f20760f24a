"""Deploying to edge nodes: a control plane and two nodes with different POP labels."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from edgefn.cluster import Cluster, Edge, wait_until
from tests.e2e.conftest import module

pytestmark = pytest.mark.e2e
# The distribution tests run on both control-stream transports.
TRANSPORTS = ["grpc", "websocket"]

HELLO = b"Hello from edgefn!"


def serves(edge: Edge, path: str, needle: bytes) -> bool:
    resp = edge.get(path)
    return resp.status_code == 200 and needle in resp.content


def two_nodes(cluster: Cluster) -> tuple[Edge, Edge]:
    return (cluster.add_edge("tokyo-1", "jp-t1", region="tokyo"),
            cluster.add_edge("osaka-1", "jp-o1", region="osaka"))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_deploy_reaches_both_nodes_and_serves_the_golden_response(cluster: Cluster) -> None:
    tokyo, osaka = two_nodes(cluster)
    fid = cluster.function("hello")
    cluster.upload(fid, "1.0.0", module("hello-c"))
    cluster.route(fid, "/hello")
    dep = cluster.deploy(fid, "1.0.0")
    for edge in (tokyo, osaka):
        wait_until(f"{edge.node_id} serving", lambda e=edge: serves(e, "/hello", HELLO))
    wait_until("both nodes cached", lambda: set(cluster.node_states(dep).values()) == {"cached"})
    assert cluster.deployment(dep)["state"] == "succeeded"
    body = tokyo.get("/hello").content
    assert body.startswith(HELLO + b"\n") and b"path: /hello" in body


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_new_version_everywhere_then_one_pop_only(cluster: Cluster) -> None:
    tokyo, osaka = two_nodes(cluster)
    fid = cluster.function("api")
    cluster.upload(fid, "1.0.0", module("hello-c"))
    cluster.upload(fid, "2.0.0", module("counter"))
    cluster.upload(fid, "3.0.0", module("headers"))
    cluster.route(fid, "/hello")
    cluster.deploy(fid, "1.0.0")
    for edge in (tokyo, osaka):
        wait_until("v1", lambda e=edge: serves(e, "/hello", HELLO))
    cluster.deploy(fid, "2.0.0")
    for edge in (tokyo, osaka):
        wait_until("v2", lambda e=edge: e.get("/hello").headers.get("x-init") == "1")
    # v3 only where the POP is targeted; the other node keeps v2.
    dep = cluster.deploy(fid, "3.0.0", target_pop=["jp-o1"])
    wait_until("v3 on osaka", lambda: serves(osaka, "/hello", b"x-request-id: "))
    wait_until("only osaka targeted", lambda: cluster.node_states(dep) == {"osaka-1": "cached"})
    assert tokyo.get("/hello").headers.get("x-init") == "1"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_nodes_survive_the_control_plane_and_catch_up(cluster: Cluster) -> None:
    tokyo, osaka = two_nodes(cluster)
    fid = cluster.function("resilient")
    cluster.upload(fid, "1.0.0", module("hello-c"))
    cluster.upload(fid, "2.0.0", module("counter"))
    cluster.route(fid, "/hello")
    cluster.deploy(fid, "1.0.0")
    for edge in (tokyo, osaka):
        wait_until("v1", lambda e=edge: serves(e, "/hello", HELLO))

    cluster.stop_cp()
    for edge in (tokyo, osaka):
        assert serves(edge, "/hello", HELLO)  # the data plane does not need the CP

    cluster.start_cp()
    cluster.stop_edge(osaka)
    dep = cluster.deploy(fid, "2.0.0")
    wait_until("v2 on tokyo", lambda: tokyo.get("/hello").headers.get("x-init") == "1")
    assert cluster.node_states(dep)["osaka-1"] != "cached"

    cluster.start_edge(osaka)  # the deploy made while it was down reaches it
    wait_until("v2 on osaka", lambda: osaka.get("/hello").headers.get("x-init") == "1")
    wait_until("both cached", lambda: set(cluster.node_states(dep).values()) == {"cached"})


def test_tampered_artifact_is_refused_and_the_old_version_keeps_serving(
    cluster: Cluster,
) -> None:
    tokyo = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    fid = cluster.function("guarded")
    cluster.upload(fid, "1.0.0", module("hello-c"))
    v2 = cluster.upload(fid, "2.0.0", module("counter"))
    cluster.route(fid, "/hello")
    cluster.deploy(fid, "1.0.0")
    wait_until("v1", lambda: serves(tokyo, "/hello", HELLO))

    stored = cluster.root / "cp" / "artifacts" / "functions" / fid / "2.0.0.wasm"
    data = bytearray(stored.read_bytes())
    data[200] ^= 0xFF
    stored.write_bytes(bytes(data))
    assert hashlib.sha256(data).hexdigest() != v2["sha256"]

    dep = cluster.deploy(fid, "2.0.0")
    wait_until("error reported", lambda: cluster.node_states(dep) == {"tokyo-1": "error"})
    assert serves(tokyo, "/hello", HELLO)
    assert cluster.deployment(dep)["state"] == "failed"


def test_an_edge_restarts_from_disk_while_the_control_plane_is_down(cluster: Cluster) -> None:
    tokyo = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    fid = cluster.function("offline")
    cluster.upload(fid, "1.0.0", module("hello-c"))
    cluster.route(fid, "/hello")
    cluster.deploy(fid, "1.0.0")
    wait_until("v1", lambda: serves(tokyo, "/hello", HELLO))

    cluster.stop_cp()
    cluster.stop_edge(tokyo)
    cluster.start_edge(tokyo)
    wait_until("served from the disk cache", lambda: serves(tokyo, "/hello", HELLO))
    with pytest.raises(httpx.ConnectError):
        httpx.get(cluster.api + "/nodes", timeout=2)


def test_a_node_without_the_grpc_stream_converges_by_http_heartbeats(cluster: Cluster) -> None:
    token = cluster.register_node("proxied-1", "jp-p1", {"region": "tokyo"})
    # Nothing listens where this node looks for gRPC, as behind a proxy that blocks it.
    edge = Edge("proxied-1", "jp-p1", {"region": "tokyo"}, token, cluster.root / "proxied-1",
                grpc_url="127.0.0.1:1")
    cluster.edges[edge.node_id] = edge
    cluster.start_edge(edge)
    fid = cluster.function("via-http")
    cluster.upload(fid, "1.0.0", module("hello-c"))
    cluster.route(fid, "/hello")
    dep = cluster.deploy(fid, "1.0.0")
    wait_until("served after an HTTP heartbeat", lambda: serves(edge, "/hello", HELLO))
    wait_until("acked by the next heartbeat",
               lambda: cluster.node_states(dep) == {"proxied-1": "cached"})


def test_a_policy_set_through_the_api_is_enforced_on_the_edge(cluster: Cluster) -> None:
    """KV works for the function whose policy enables it, and only for that one:
    the same module deployed without a policy is denied (-2)."""
    tokyo = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    allowed = cluster.function("kv-on", kv={"enabled": True})
    denied = cluster.function("kv-off")
    for fid, host in ((allowed, "on.test"), (denied, "off.test")):
        cluster.upload(fid, "1.0.0", module("hostcalls"))
        cluster.route(fid, "/kv/*", host=host)
        dep = cluster.deploy(fid, "1.0.0")
        wait_until(f"{host} cached", lambda d=dep: cluster.node_states(d) == {"tokyo-1": "cached"})

    def kv(host: str, path: str) -> httpx.Response:
        return tokyo.get(path, headers={"host": host})

    wait_until("served", lambda: kv("on.test", "/kv/get?key=k").status_code == 200)
    assert kv("on.test", "/kv/put?key=k&value=v").headers["x-code"] == "0"
    got = kv("on.test", "/kv/get?key=k")
    assert got.headers["x-code"] == "1" and got.content == b"v"
    for path in ("/kv/put?key=k&value=v", "/kv/get?key=k"):
        assert kv("off.test", path).headers["x-code"] == "-2", path


def test_a_policy_change_reaches_the_running_version(cluster: Cluster) -> None:
    """PATCH the policy and deploy the same version again: the node serves it
    with the new policy, without a new module."""
    tokyo = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    fid = cluster.function("kv-later")
    cluster.upload(fid, "1.0.0", module("hostcalls"))
    cluster.route(fid, "/kv/*")
    cluster.deploy(fid, "1.0.0")
    wait_until("served", lambda: tokyo.get("/kv/get?key=k").status_code == 200)
    assert tokyo.get("/kv/put?key=k&value=v").headers["x-code"] == "-2"

    cluster.call("PATCH", f"/functions/{fid}", json={"kv": {"enabled": True}})
    dep = cluster.deploy(fid, "1.0.0")
    wait_until("cached", lambda: cluster.node_states(dep) == {"tokyo-1": "cached"})
    wait_until("KV allowed", lambda: tokyo.get("/kv/put?key=k&value=v").headers["x-code"] == "0")
    assert tokyo.get("/kv/get?key=k").headers["x-code"] == "1"
