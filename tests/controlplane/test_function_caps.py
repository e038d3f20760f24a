"""The cluster's resource caps (`CPSettings.caps`) and the absolute bounds, on POST and
PATCH /functions, on SQLite and PostgreSQL."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from edgefn.contract import ResourceCaps
from tests.controlplane.conftest import ADMIN, CP

OVER_DEFAULT_CAPS: list[tuple[dict[str, Any], str]] = [
    ({"memory_pages": 65536}, "memory_pages 65536 is over the cap of 1024"),
    ({"max_execution_ms": 600_000}, "max_execution_ms 600000 is over the cap of 30000"),
    ({"max_response_bytes": 16 * 1024 * 1024}, "max_response_bytes 16777216 is over the cap"),
    ({"max_request_bytes": 1 << 30}, "max_request_bytes 1073741824 is over the cap"),
    ({"max_hot_instances": 1000}, "max_hot_instances 1000 is over the cap of 16"),
    ({"min_hot_instances": 17}, "min_hot_instances 17 is over the cap of 16"),
    ({"http_fetch": {"allow_hosts": ["api.example.com"], "max_response_bytes": 16 << 20}},
     "http_fetch.max_response_bytes 16777216 is over the cap of 8388608"),
]


@pytest.mark.parametrize(("body", "message"), OVER_DEFAULT_CAPS)
def test_a_function_over_the_clusters_caps_is_400(
    cp: CP, team: SimpleNamespace, body: dict[str, Any], message: str
) -> None:
    created = cp.call("POST", "/functions", team.a_dev, json={"name": "big", **body})
    assert created.status_code == 400, created.text
    error = created.json()["error"]
    assert error["code"] == "validation_error"
    assert error["message"].startswith("over this cluster's resource caps: ")
    assert message in error["message"]
    # The admin is held to them too: they are the cluster's, not a role's.
    assert cp.call("POST", "/functions", ADMIN,
                   json={"name": "big", "owner_project_id": team.a, **body}).status_code == 400

    fn = cp.function(team.a_dev, "small")
    patched = cp.call("PATCH", f"/functions/{fn['id']}", team.a_dev, json=body)
    assert patched.status_code == 400 and message in patched.json()["error"]["message"]
    # Nothing of a refused patch is kept, even the fields within the caps.
    both = cp.call("PATCH", f"/functions/{fn['id']}", team.a_dev,
                   json={**body, "env": {"A": "1"}, "isolation": "per-request"})
    assert both.status_code == 400
    got = cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)
    assert got == {**fn, "upload_url": got["upload_url"]}


def test_at_the_caps_is_fine(cp: CP, team: SimpleNamespace) -> None:
    caps = ResourceCaps()
    fn = cp.function(team.a_dev, "edge-of-it", memory_pages=caps.memory_pages,
                     max_execution_ms=caps.max_execution_ms,
                     max_response_bytes=caps.max_response_bytes,
                     max_request_bytes=caps.max_request_bytes,
                     min_hot_instances=caps.max_hot_instances,
                     max_hot_instances=caps.max_hot_instances)
    assert fn["memory_pages"] == 1024 and fn["max_hot_instances"] == 16


def test_the_operator_raises_the_caps_up_to_the_absolute_bounds(
    cp_factory: Any, team: SimpleNamespace
) -> None:
    roomy = cp_factory(caps=ResourceCaps(memory_pages=65536, max_execution_ms=600_000,
                                         max_response_bytes=64 * 1024 * 1024))
    fn = roomy.function(ADMIN, "batch", owner_project_id=team.a, memory_pages=4096,
                        max_execution_ms=600_000, max_response_bytes=64 * 1024 * 1024)
    assert (fn["memory_pages"], fn["max_execution_ms"]) == (4096, 600_000)
    # The absolute bounds are the same as a node's, whatever the caps.
    for field, value in (("memory_pages", 65537), ("max_execution_ms", 600_001),
                         ("max_response_bytes", 64 * 1024 * 1024 + 1)):
        r = roomy.call("PATCH", f"/functions/{fn['id']}", ADMIN, json={field: value})
        assert r.status_code == 400 and field in r.json()["error"]["message"], field


def test_caps_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgefn.controlplane.settings import CPSettings

    monkeypatch.setenv("EDGEFN_CAPS", '{"memory_pages": 2048}')
    assert CPSettings().caps == ResourceCaps(memory_pages=2048)
    # Flags given on top are merged over the variable, field by field.
    assert CPSettings(caps={"max_execution_ms": 60_000}).caps == ResourceCaps(
        memory_pages=2048, max_execution_ms=60_000)


def test_deploy_and_rollback_recheck_caps_lowered_since(
    cp_factory: Any, team: SimpleNamespace, wasm: SimpleNamespace
) -> None:
    """A function created under roomy caps is not deployed once the operator lowered
    them (same database, restarted with the defaults): 400 with the POST's message,
    and nothing queued for the node."""
    roomy = cp_factory(caps=ResourceCaps(memory_pages=4096))
    fn = roomy.function(team.a_dev, "grown", memory_pages=2048)
    for version in ("1.0.0", "1.1.0"):
        assert roomy.upload(team.a_dev, fn["id"], version, wasm.edge_v1).status_code == 201
    node = roomy.node("pop-a")
    roomy.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.0.0"})
    roomy.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.1.0"})

    lowered = cp_factory()
    before = [i["id"] for i in lowered.heartbeat(node)]
    for path, body in (("deploy", {"version": "1.1.0"}), ("rollback", {"version": "1.0.0"}),
                       ("rollback", None)):
        r = lowered.call("POST", f"/functions/{fn['id']}/{path}", team.a_dev, json=body)
        assert r.status_code == 400, (path, r.text)
        error = r.json()["error"]
        assert error["code"] == "validation_error"
        assert error["message"] == (
            "over this cluster's resource caps: memory_pages 2048 is over the cap of 1024")
    assert [i["id"] for i in lowered.heartbeat(node)] == before
    assert len(lowered.ok("GET", f"/functions/{fn['id']}/deployments", team.a_dev)) == 2
    # Back within the caps, it deploys again.
    lowered.ok("PATCH", f"/functions/{fn['id']}", team.a_dev, json={"memory_pages": 1024})
    lowered.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.1.0"})


def test_the_openapi_document_states_the_caps(cp_factory: Any, team: SimpleNamespace) -> None:
    """Top-level fields and http_fetch's, on the inputs only: a function stored under
    roomier caps is still answered as it is."""
    caps = ResourceCaps(memory_pages=2048, max_fetch_response_bytes=4 << 20)
    doc = cp_factory(caps=caps).client.get("/openapi.json").json()
    models = doc["components"]["schemas"]
    for name in ("FunctionIn", "FunctionPatch"):
        props = models[name]["properties"]
        assert [b["maximum"] for b in props["memory_pages"].get("anyOf", [props["memory_pages"]])
                if b.get("type") == "integer"] == [2048]
        assert props["http_fetch"]["$ref"] == "#/components/schemas/HttpFetchPolicyIn"
    assert models["HttpFetchPolicyIn"]["properties"]["max_response_bytes"]["maximum"] == 4 << 20
    assert models["FunctionOut"]["properties"]["http_fetch"]["$ref"] == (
        "#/components/schemas/HttpFetchPolicy")
    assert models["HttpFetchPolicy"]["properties"]["max_response_bytes"]["maximum"] > 4 << 20
