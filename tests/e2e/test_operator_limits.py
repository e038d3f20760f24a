"""A control plane and a node whose operators chose differently: the node's own caps and
egress rules hold whatever the control plane accepted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgefn.cluster import Cluster, Edge, wait_until
from tests.e2e.conftest import module

pytestmark = pytest.mark.e2e

HELLO = b"Hello from edgefn!"


def serves(edge: Edge, path: str, needle: bytes) -> bool:
    resp = edge.get(path)
    return resp.status_code == 200 and needle in resp.content


@pytest.fixture
def roomy_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A control plane allowing 60 s functions, and nodes keeping the default 30 s cap."""
    c = Cluster(tmp_path, token="e2e-admin-token", project="e2e")
    c.env["EDGEFN_CAPS"] = '{"max_execution_ms": 60000}'
    c.start_cp()
    del c.env["EDGEFN_CAPS"]
    yield c
    c.close()


def test_a_node_refuses_a_deploy_over_its_caps_and_keeps_serving(
    roomy_cluster: Cluster,
) -> None:
    cluster = roomy_cluster
    tokyo = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    steady = cluster.function("steady")
    cluster.upload(steady, "1.0.0", module("hello-c"))
    cluster.route(steady, "/hello")
    cluster.deploy(steady, "1.0.0")
    wait_until("v1", lambda: serves(tokyo, "/hello", HELLO))

    # The control plane takes 60 s (its cap); the node does not (its own is 30 s).
    long = cluster.function("long", max_execution_ms=60_000)
    cluster.upload(long, "1.0.0", module("hello-c"))
    cluster.route(long, "/long")
    dep = cluster.deploy(long, "1.0.0")
    wait_until("error reported", lambda: cluster.node_states(dep) == {"tokyo-1": "error"})
    assert cluster.deployment(dep)["state"] == "failed"
    resp = tokyo.get("/long")
    assert resp.status_code in (404, 503)  # never run
    # The same for a function that was running: its version on the node keeps serving.
    cluster.call("PATCH", f"/functions/{steady}", json={"max_execution_ms": 45_000})
    again = cluster.deploy(steady, "1.0.0")
    wait_until("error reported", lambda: cluster.node_states(again) == {"tokyo-1": "error"})
    assert serves(tokyo, "/hello", HELLO)
    log = (cluster.root / "tokyo-1.log").read_text()
    assert "over this node's resource caps: max_execution_ms 60000 is over the cap" in log


def test_a_guest_cannot_reach_the_control_plane_or_the_nodes_metrics(
    roomy_cluster: Cluster,
) -> None:
    cluster = roomy_cluster
    tokyo = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    fid = cluster.function("curious", http_fetch={"allow_hosts": ["*"], "allow_private": True})
    cluster.upload(fid, "1.0.0", module("hostcalls"))
    cluster.route(fid, "/*")
    cluster.deploy(fid, "1.0.0")
    wait_until("deployed", lambda: tokyo.get("/env?name=X").status_code == 200)
    for url in (f"http://127.0.0.1:{cluster.api_port}/api/v1/nodes",
                f"http://127.0.0.1:{cluster.grpc_port}/",
                f"http://127.0.0.1:{tokyo.metrics_port}/metrics",
                f"http://[::ffff:127.0.0.1]:{tokyo.port}/",
                f"http://2130706433:{tokyo.metrics_port}/metrics"):
        resp = httpx.post(tokyo.url + "/fetch", content=f"GET {url}\n\n".encode(), timeout=10)
        assert resp.status_code == 200 and resp.headers["x-code"] == "-2", url
