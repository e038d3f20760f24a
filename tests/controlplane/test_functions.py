"""Functions and versions through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from edgefn.controlplane.routes.service import route_url
from edgefn.controlplane.settings import CPSettings
from tests.controlplane.conftest import ADMIN, CP, DEFAULT_POLICY


def test_create_function_defaults_and_upload_url(cp: CP, team: SimpleNamespace) -> None:
    fn = cp.function(team.a_dev, "hello")
    assert fn["owner_project_id"] == team.a  # the caller's only project
    assert (fn["memory_pages"], fn["max_execution_ms"], fn["max_response_bytes"]) == (
        16,
        500,
        65536,
    )
    assert fn["entrypoint"] == "handle" and fn["runtime"] == "wasm"
    assert {k: fn[k] for k in DEFAULT_POLICY} == DEFAULT_POLICY  # deny by default
    assert fn["upload_url"].startswith("http://testserver/api/v1/uploads/functions/")
    assert cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)["name"] == "hello"
    listed = cp.call("GET", "/functions", team.a_dev)
    assert [f["id"] for f in listed.json()] == [fn["id"]]
    assert listed.headers["x-total-count"] == "1"


def test_function_fields_and_conflict(cp: CP, team: SimpleNamespace) -> None:
    fn = cp.function(
        team.a_dev,
        "api",
        memory_pages=4,
        max_execution_ms=50,
        pop_selector="region in ['tokyo','osaka']",
        env={"GREETING": "hi"},
    )
    assert fn["env"] == {"GREETING": "hi"} and fn["memory_pages"] == 4
    r = cp.call("POST", "/functions", team.a_dev, json={"name": "api"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    patched = cp.ok("PATCH", f"/functions/{fn['id']}", team.a_dev, json={"max_execution_ms": 80})
    assert patched["max_execution_ms"] == 80


def test_policies_create_patch_get(cp: CP, team: SimpleNamespace) -> None:
    fn = cp.function(
        team.a_dev,
        "store",
        kv={"enabled": True, "max_keys": 5},
        http_fetch={"allow_hosts": [" API.Example.com", "*.cdn.example"], "max_redirects": 0},
        isolation="per-request",
        min_hot_instances=0,
        max_hot_instances=2,
        idle_timeout_s=30,
        max_request_bytes=1024,
    )
    # Stored whole: the fields left out at their defaults, hosts as the edge reads them.
    wanted = DEFAULT_POLICY | {
        "kv": DEFAULT_POLICY["kv"] | {"enabled": True, "max_keys": 5},
        "http_fetch": DEFAULT_POLICY["http_fetch"]
        | {"allow_hosts": ["api.example.com", "*.cdn.example"], "max_redirects": 0},
        "isolation": "per-request",
        "min_hot_instances": 0,
        "max_hot_instances": 2,
        "idle_timeout_s": 30.0,
        "max_request_bytes": 1024,
    }
    assert {k: fn[k] for k in DEFAULT_POLICY} == wanted
    got = cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)
    assert {k: got[k] for k in DEFAULT_POLICY} == wanted
    listed = cp.ok("GET", "/functions", team.a_dev)[0]
    assert {k: listed[k] for k in DEFAULT_POLICY} == wanted

    # A patch replaces the fields it names (`kv` whole) and keeps the others.
    patched = cp.ok(
        "PATCH",
        f"/functions/{fn['id']}",
        team.a_dev,
        json={"kv": {"max_keys": 7}, "max_request_bytes": None, "max_execution_ms": 90},
    )
    assert patched["kv"] == DEFAULT_POLICY["kv"] | {"max_keys": 7}
    assert patched["max_request_bytes"] is None and patched["max_execution_ms"] == 90
    assert patched["http_fetch"] == wanted["http_fetch"] and patched["isolation"] == "per-request"
    got = cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)
    assert {k: got[k] for k in DEFAULT_POLICY} == {k: patched[k] for k in DEFAULT_POLICY}
    update = cp.ok("GET", "/audit", ADMIN)[0]
    assert update["action"] == "function.update" and update["details"]["kv"]["max_keys"] == 7


INVALID_POLICIES: list[tuple[dict[str, Any], str]] = [
    ({"kv": {"enabled": True, "max_keys": 0}}, "kv.max_keys"),
    ({"kv": {"enabled": True, "colour": "red"}}, "kv.colour"),
    ({"http_fetch": {"allow_hosts": ["2130706433"]}}, "2130706433"),
    ({"http_fetch": {"allow_hosts": ["exa mple.com"]}}, "http_fetch.allow_hosts"),
    ({"http_fetch": {"max_redirects": 11}}, "http_fetch.max_redirects"),
    ({"isolation": "shared"}, "isolation"),
    ({"min_hot_instances": -1}, "min_hot_instances"),
    ({"idle_timeout_s": 0}, "idle_timeout_s"),
    ({"max_request_bytes": -1}, "max_request_bytes"),
    ({"policy": {"kv": {"enabled": True}}}, "policy"),
]


@pytest.mark.parametrize(("body", "named"), INVALID_POLICIES)
def test_invalid_policy_is_400(
    cp: CP, team: SimpleNamespace, body: dict[str, Any], named: str
) -> None:
    created = cp.call("POST", "/functions", team.a_dev, json={"name": "x", **body})
    assert created.status_code == 400, created.text
    error = created.json()["error"]
    assert error["code"] == "validation_error" and named in error["message"]
    fn = cp.function(team.a_dev, "y")
    patched = cp.call("PATCH", f"/functions/{fn['id']}", team.a_dev, json=body)
    assert patched.status_code == 400, patched.text
    error = patched.json()["error"]
    assert error["code"] == "validation_error" and named in error["message"]
    got = cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)
    assert {k: got[k] for k in DEFAULT_POLICY} == DEFAULT_POLICY


def test_patch_cannot_null_a_policy(cp: CP, team: SimpleNamespace) -> None:
    fn = cp.function(team.a_dev, "x", kv={"enabled": True})
    for field in ("kv", "http_fetch", "isolation", "idle_timeout_s"):
        r = cp.call("PATCH", f"/functions/{fn['id']}", team.a_dev, json={field: None})
        assert r.status_code == 400, field
        assert r.json()["error"]["code"] == "validation_error" and field in r.text
    assert cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)["kv"]["enabled"] is True


def test_admin_must_name_the_project(cp: CP, team: SimpleNamespace) -> None:
    r = cp.call("POST", "/functions", ADMIN, json={"name": "x"})
    assert r.status_code == 400
    assert "owner_project_id" in r.json()["error"]["message"]
    fn = cp.function(ADMIN, "x", owner_project_id=team.b)
    assert fn["owner_project_id"] == team.b


def test_bad_bodies_are_400_json(cp: CP, team: SimpleNamespace) -> None:
    malformed = cp.call(
        "POST",
        "/functions",
        {**team.a_dev, "content-type": "application/json"},
        content=b'{"name": "x",',
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "validation_error"
    unknown = cp.call("POST", "/functions", team.a_dev, json={"name": "x", "colour": "red"})
    assert unknown.status_code == 400 and "colour" in unknown.json()["error"]["message"]
    selector = cp.call(
        "POST", "/functions", team.a_dev, json={"name": "x", "pop_selector": "region = 'tokyo'"}
    )
    assert selector.status_code == 400 and "pop_selector" in selector.text
    limits = cp.call("POST", "/functions", team.a_dev, json={"name": "x", "memory_pages": 0})
    assert limits.status_code == 400


def test_unknown_paths_and_methods_are_json(cp: CP) -> None:
    r = cp.client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = cp.client.put("/api/v1/functions", headers=ADMIN)
    assert r.status_code == 405 and "error" in r.json()
    r = cp.call("GET", "/functions/no-such-id", ADMIN)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_upload_version(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace) -> None:
    fn = cp.function(team.a_dev)
    r = cp.upload(team.a_dev, fn["id"], "1.0.0", wasm.edge_v1)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["function_id"] == fn["id"] and body["version"] == "1.0.0"
    assert body["sha256"] == hashlib.sha256(wasm.edge_v1).hexdigest()
    assert body["size"] == len(wasm.edge_v1) and body["abi"] == "edge-v1"
    assert body["artifact_url"] == f"local:functions/{fn['id']}/1.0.0.wasm"
    wagi = cp.upload(
        team.a_dev,
        fn["id"],
        "1.1.0-rc.1+build.5",
        wasm.wagi_wasi,
        sha256=hashlib.sha256(wasm.wagi_wasi).hexdigest(),
    )
    assert wagi.status_code == 201 and wagi.json()["abi"] == "wagi"
    versions = cp.ok("GET", f"/functions/{fn['id']}/versions", team.a_viewer)
    assert [v["version"] for v in versions] == ["1.0.0", "1.1.0-rc.1+build.5"]
    stored = cp.settings.resolved_artifact_dir() / f"functions/{fn['id']}/1.0.0.wasm"
    assert stored.read_bytes() == wasm.edge_v1


def test_upload_refusals(cp_factory, wasm: SimpleNamespace) -> None:  # type: ignore[no-untyped-def]
    cp = cp_factory(max_artifact_bytes=4096)
    project = cp.project("p")
    dev = cp.member("dev@p.test", project)
    fid = cp.function(dev)["id"]

    def refused(version: str, data: bytes, status: int, words: str, **fields: str) -> None:
        r = cp.upload(dev, fid, version, data, **fields)
        assert r.status_code == status, r.text
        assert words in r.json()["error"]["message"], r.text

    refused("1.0", wasm.edge_v1, 400, "not a semantic version")
    refused("latest", wasm.edge_v1, 400, "not a semantic version")
    refused("1.0.0", wasm.not_wasm, 400, "not a WebAssembly module")
    refused("1.0.0", wasm.imports_env, 400, "env.foo")
    refused("1.0.0", wasm.big_memory, 400, "exceeds memory_pages=16")
    refused("1.0.0", wasm.no_abi, 400, "neither the edge-v1 ABI")
    refused("1.0.0", wasm.edge_v1, 400, "sha256 mismatch", sha256="0" * 64)
    refused("1.0.0", wasm.edge_v1 + b"\0" * 5000, 413, "limit")
    assert cp.upload(dev, fid, "1.0.0", wasm.edge_v1).status_code == 201
    refused("1.0.0", wasm.edge_v1_b, 409, "immutable")
    # Nothing refused left a version or a file behind.
    assert [v["version"] for v in cp.ok("GET", f"/functions/{fid}/versions", dev)] == ["1.0.0"]
    missing = cp.call("POST", f"/functions/{fid}/versions", dev, data={"version": "2.0.0"})
    assert missing.status_code == 400 and "upload_url" in missing.json()["error"]["message"]


def test_upload_through_upload_url(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace) -> None:
    fn = cp.function(team.a_dev)
    put = cp.client.put(fn["upload_url"], content=wasm.edge_v1)
    assert put.status_code == 200, put.text
    r = cp.call(
        "POST",
        f"/functions/{fn['id']}/versions",
        team.a_dev,
        data={"version": "2.0.0", "sha256": hashlib.sha256(wasm.edge_v1).hexdigest()},
    )
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == hashlib.sha256(wasm.edge_v1).hexdigest()
    # A forged or altered signature is refused.
    forged = fn["upload_url"].replace("sig=", "sig=00")
    assert cp.client.put(forged, content=wasm.edge_v1).status_code == 403
    # Viewers get no upload URL.
    assert cp.ok("GET", f"/functions/{fn['id']}", team.a_viewer)["upload_url"] is None


def test_delete_function(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace) -> None:
    fn = cp.function(team.a_dev)
    assert cp.upload(team.a_dev, fn["id"], "1.0.0", wasm.edge_v1).status_code == 201
    # Deleting takes the project's owner.
    assert cp.call("DELETE", f"/functions/{fn['id']}", team.a_dev).status_code == 403
    assert cp.call("DELETE", f"/functions/{fn['id']}", team.a_owner).status_code == 204
    assert cp.call("GET", f"/functions/{fn['id']}", team.a_dev).status_code == 404
    assert not (cp.settings.resolved_artifact_dir() / f"functions/{fn['id']}/1.0.0.wasm").exists()


def test_pagination(cp: CP, team: SimpleNamespace) -> None:
    for i in range(5):
        cp.function(team.a_dev, f"f{i}")
    r = cp.call("GET", "/functions?limit=2&offset=2", team.a_dev)
    assert [f["name"] for f in r.json()] == ["f2", "f3"]
    assert r.headers["x-total-count"] == "5"
    assert 'rel="next"' in r.headers["link"] and 'rel="prev"' in r.headers["link"]
    assert cp.call("GET", "/functions?limit=1000", team.a_dev).status_code == 400


def test_openapi_and_docs(cp: CP) -> None:
    spec = cp.client.get("/openapi.json").json()
    for path in (
        "/api/v1/functions",
        "/api/v1/functions/{function_id}/versions",
        "/api/v1/functions/{function_id}/deploy",
        "/api/v1/deployments/{deployment_id}",
        "/api/v1/functions/{function_id}/rollback",
        "/api/v1/routes",
        "/api/v1/routes/{route_id}",
        "/api/v1/nodes",
        "/api/v1/nodes/{node_id}/heartbeat",
        "/api/v1/audit",
        "/api/v1/auth/login",
    ):
        assert path in spec["paths"], path
    assert cp.client.get("/docs").status_code == 200
    r = cp.client.get("/api/v1/functions", headers={**ADMIN, "x-request-id": "req-123"})
    assert r.headers["x-request-id"] == "req-123"
    assert isinstance(httpx.Response, type)


@pytest.mark.parametrize(("edge_url", "host", "path", "url"), [
    ("https://edge.example.com", "*", "/hello", "https://edge.example.com/hello"),
    ("https://edge.example.com/", "shop.example.com", "/api/*", "https://shop.example.com/api/"),
    ("http://127.0.0.1:8000", "*", "/*", "http://127.0.0.1:8000/"),
    ("http://127.0.0.1:8000", "*.example.com", "/w", "http://*.example.com:8000/w"),
    ("http://[::1]:8000", "*", "/x", "http://[::1]:8000/x"),
])
def test_a_route_on_the_edge_url(edge_url: str, host: str, path: str, url: str) -> None:
    assert route_url(edge_url, host, path) == url


@pytest.mark.parametrize("bad", ["edge.example.com", "ftp://edge.example.com",
                                 "https://edge.example.com/fn", "https://edge.example.com?x=1",
                                 "http://edge.example.com:99999", "https://"])
def test_the_edge_url_is_a_scheme_a_host_and_a_port(bad: str) -> None:
    with pytest.raises(ValueError, match="edge_url"):
        CPSettings(edge_url=bad)
    assert CPSettings(edge_url="https://edge.example.com:8443/").edge_url


def test_a_function_is_served_at_its_routes_on_the_edge_url(cp_factory: Any) -> None:
    """`urls` on a single function's answers: a route on the edge URL each; none
    without a route; null in listings and on a CP that has no edge URL."""
    cp = cp_factory(edge_url="https://edge.example.com")
    project = cp.project("p")
    fn = cp.function(ADMIN, "hello", owner_project_id=project)
    assert (fn["urls"], fn["edge_url"]) == ([], "https://edge.example.com")
    cp.ok("POST", "/routes", ADMIN, 201, json={"host": "*", "path": "/hello",
                                               "function_id": fn["id"]})
    got = cp.ok("GET", f"/functions/{fn['id']}", ADMIN)
    assert got["urls"] == ["https://edge.example.com/hello"]
    assert cp.ok("PATCH", f"/functions/{fn['id']}", ADMIN,
                 json={"max_execution_ms": 80})["urls"] == got["urls"]
    assert cp.ok("GET", "/functions", ADMIN)[0]["urls"] is None
    plain = cp_factory()
    assert plain.ok("GET", f"/functions/{fn['id']}", ADMIN)["urls"] is None
