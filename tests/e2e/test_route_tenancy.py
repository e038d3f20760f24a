"""Route tenancy through a real control plane and edge node: another project's
developer cannot take a project's host or `*` paths, and the victim's traffic is
unchanged while the intruder's own routes serve."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from edgefn.cluster import Cluster, Edge, wait_until
from tests.e2e.conftest import module

pytestmark = pytest.mark.e2e

HELLO = b"Hello from edgefn!"
HOST = "shop.victim.test"


def is_victim(resp: httpx.Response) -> bool:
    return resp.status_code == 200 and HELLO in resp.content


def is_intruder(resp: httpx.Response) -> bool:
    return resp.status_code == 200 and resp.headers.get("x-init") == "1"


def victim_intact(edge: Edge) -> bool:
    return all(
        is_victim(r)
        for r in (
            edge.get("/victim/x"),
            edge.get("/victim/sub"),
            edge.get("/victim"),
            edge.get("/api/a", headers={"host": HOST}),
        )
    )


class Intruder:
    """A developer of another project, with its own API key."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.project = cluster.call("POST", "/projects", json={"name": "intruder"})["id"]
        key = cluster.call("POST", f"/projects/{self.project}/api-keys", json={"name": "dev"})
        self.headers = {"authorization": f"Bearer {key['key']}"}

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, self.cluster.api + path, headers=self.headers, timeout=10, **kw
        )

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.call(method, path, **kw)
        assert resp.status_code < 300, resp.text
        return resp.json()


def test_another_project_cannot_take_a_host_or_shadow_a_path(cluster: Cluster) -> None:
    edge = cluster.add_edge("tenancy-1", "pop-1")
    victim = cluster.function("shop")
    cluster.upload(victim, "1.0.0", module("hello-c"))
    cluster.route(victim, "/victim/*")
    cluster.route(victim, "/api/*", host=HOST)
    cluster.deploy(victim, "1.0.0")
    wait_until("the victim serving", lambda: victim_intact(edge))

    b = Intruder(cluster)
    fid = b.ok("POST", "/functions", json={"name": "intruder"})["id"]
    files = {"artifact": ("f.wasm", module("counter"), "application/wasm")}
    b.ok("POST", f"/functions/{fid}/versions", data={"version": "1.0.0"}, files=files)
    b.ok("POST", f"/functions/{fid}/deploy", json={"version": "1.0.0"})
    for attack in (
        {"host": "*", "path": "/victim/*", "priority": 1_000_000},
        {"host": "*", "path": "/victim/sub"},
        {"host": "*", "path": "/*"},
        {"host": HOST, "path": "/api/*", "priority": 1_000_000},
        {"host": HOST, "path": "/login"},
        {"host": "*.victim.test", "path": "/*"},
    ):
        resp = b.call("POST", "/routes", json={**attack, "function_id": fid})
        assert resp.status_code == 409, (attack, resp.text)
        assert "claimed by another project" in resp.json()["error"]["message"]

    # The intruder's own `*` route serves other hosts, never the victim's host.
    b.ok("POST", "/routes", json={"host": "*", "path": "/login", "function_id": fid})
    wait_until("the intruder's route", lambda: is_intruder(edge.get("/login")))
    assert edge.get("/login", headers={"host": HOST}).status_code == 404
    assert victim_intact(edge)
    own = {
        (r["host"], r["path"])
        for r in cluster.call("GET", "/routes?limit=200")
        if r["function_id"] == victim
    }
    assert own == {("*", "/victim/*"), (HOST, "/api/*")}

    # The admin gives the host to the intruder: the victim's routes there go.
    cluster.call("PUT", "/route-claims", json={"host": HOST, "project_id": b.project})
    b.ok("POST", "/routes", json={"host": HOST, "path": "/api/*", "function_id": fid})
    wait_until(
        "the host reassigned", lambda: is_intruder(edge.get("/api/a", headers={"host": HOST}))
    )
    assert is_victim(edge.get("/victim/x"))
