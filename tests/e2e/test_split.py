"""Traffic splitting through the control plane's API, on a real node."""

from __future__ import annotations

import zlib

import httpx
import pytest

from edgefn.cluster import Cluster, Edge, wait_until
from edgefn.edge.worker.split import bucket
from tests.e2e.conftest import module

pytestmark = pytest.mark.e2e

USERS = [f"user-{i}" for i in range(300)]


def versions(edge: Edge) -> dict[str, str]:
    """Each user's version: `headers` (2.0.0) answers `x-one`, `echo` (1.0.0) does not."""
    with httpx.Client(base_url=edge.url, timeout=5) as c:
        return {u: "2.0.0" if c.get("/shop", headers={"x-user": u}).headers.get("x-one") else
                "1.0.0" for u in USERS}


def test_a_split_set_through_the_api_then_rolled_back_and_promoted(cluster: Cluster) -> None:
    edge = cluster.add_edge("tokyo-1", "jp-t1")
    fid = cluster.function("shop")
    cluster.upload(fid, "1.0.0", module("echo"))
    cluster.upload(fid, "2.0.0", module("headers"))
    cluster.route(fid, "/shop")
    cluster.deploy(fid, "1.0.0")
    wait_until("v1", lambda: edge.get("/shop").status_code == 200)

    split = {"percent": 10, "key": "header:x-user"}
    dep = cluster.deploy(fid, "2.0.0", split=split, strategy="gradual")
    assert cluster.deployment(dep)["strategy"] == "pull"
    wait_until("split applied", lambda: cluster.node_states(dep) == {"tokyo-1": "cached"})
    salt = zlib.crc32(fid.encode())
    expected = {u: "2.0.0" if bucket(u.encode(), salt) < 10 else "1.0.0" for u in USERS}
    wait_until("both versions serving", lambda: versions(edge) == expected)
    assert 0 < list(expected.values()).count("2.0.0") < 60

    dep = cluster.deploy(fid, "2.0.0", split={"percent": 0, "key": "header:x-user"})
    wait_until("rolled back to 0%", lambda: set(versions(edge).values()) == {"1.0.0"})
    dep = cluster.deploy(fid, "2.0.0", split={"percent": 100})
    wait_until("promoted to 100%", lambda: set(versions(edge).values()) == {"2.0.0"})


def test_an_invalid_split_is_refused(cluster: Cluster) -> None:
    fid = cluster.function("shop")
    cluster.upload(fid, "1.0.0", module("echo"))
    for body in (
        {"version": "1.0.0", "split": {"percent": 101}},
        {"version": "1.0.0", "split": {"percent": 5, "key": "query:u"}},
        {"version": "1.0.0", "split": {"percent": 5, "extra": 1}},
    ):
        resp = httpx.post(f"{cluster.api}/functions/{fid}/deploy", json=body,
                          headers=cluster.headers, timeout=10)
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "validation_error"
