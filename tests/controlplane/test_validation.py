"""Input validation as the OpenAPI states it, on SQLite and PostgreSQL: what a
fuzzer once turned into 500s (offsets past 64 bits, nulls in a PATCH, NUL and
lone surrogates that PostgreSQL cannot store, NaN), versions with a trailing
newline, and the document itself (every error status declared, 400 not 422)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from edgefn.controlplane.fields import JSON_INT_MAX
from edgefn.controlplane.functions.models import Function
from tests.controlplane.conftest import ADMIN, CP

TOO_BIG = str(2**64)


def error_of(r: Any, status: int = 400, code: str = "validation_error") -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return str(body["error"]["message"])


def raw(cp: CP, method: str, path: str, text: str, headers: dict[str, str]) -> Any:
    """A JSON body sent as written (NaN, lone surrogates: what json.dumps would not)."""
    return cp.call(method, path, {**headers, "content-type": "application/json"}, content=text)


@pytest.fixture
def fn(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace) -> dict[str, Any]:
    body: dict[str, Any] = cp.function(team.a_dev, env={"K": "v"})
    assert cp.upload(team.a_dev, body["id"], "1.0.0", wasm.edge_v1).status_code == 201
    return body


def test_offsets_past_what_the_database_holds_are_400(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    for path in ("/nodes", "/audit", f"/functions/{fn['id']}/versions", "/routes", "/functions"):
        message = error_of(cp.call("GET", f"{path}?offset={TOO_BIG}", ADMIN))
        assert "offset" in message
        assert cp.call("GET", f"{path}?offset=-1", ADMIN).status_code == 400
        # The largest accepted offset is a page past the end, not an error.
        r = cp.call("GET", f"{path}?offset={JSON_INT_MAX}", ADMIN)
        assert r.status_code == 200 and r.json() == [], r.text
    # The server went on serving.
    assert cp.ok("GET", "/functions", team.a_dev)[0]["id"] == fn["id"]


@pytest.mark.parametrize(
    "field",
    [
        "env",
        "memory_pages",
        "entrypoint",
        "runtime",
        "max_execution_ms",
        "kv",
        "http_fetch",
        "isolation",
        "min_hot_instances",
        "idle_timeout_s",
    ],
)
def test_null_is_refused_where_the_docs_say_so(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any], field: str
) -> None:
    message = error_of(cp.call("PATCH", f"/functions/{fn['id']}", team.a_dev, json={field: None}))
    assert message.startswith(field), message
    # Nothing was stored: every reader, of any project, still gets the function list.
    for who in (team.a_dev, team.a_viewer, ADMIN):
        assert cp.ok("GET", f"/functions/{fn['id']}", who)["env"] == {"K": "v"}
        assert [f["id"] for f in cp.ok("GET", "/functions", who)] == [fn["id"]]
    assert cp.ok("GET", "/functions", team.b_dev) == []


def test_null_clears_the_selector_and_the_request_limit(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    body = {"pop_selector": "region=='tokyo'", "max_request_bytes": 1024}
    cp.ok("PATCH", f"/functions/{fn['id']}", team.a_dev, json=body)
    out = cp.ok(
        "PATCH",
        f"/functions/{fn['id']}",
        team.a_dev,
        json={"pop_selector": None, "max_request_bytes": None},
    )
    assert (out["pop_selector"], out["max_request_bytes"]) == (None, None)


def test_a_function_stored_with_a_null_env_still_reads(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    """What an older release's PATCH {"env": null} left in the table."""
    engine = sa.create_engine(cp.settings.database_url or "")
    with engine.begin() as conn:
        conn.execute(sa.update(Function).where(Function.id == fn["id"]).values(env=None))
    engine.dispose()
    assert cp.ok("GET", f"/functions/{fn['id']}", team.a_dev)["env"] == {}
    assert cp.ok("GET", "/functions", ADMIN)[0]["env"] == {}


# A trailing newline, Arabic-Indic digits (a Unicode `\d` takes them), and plain errors.
NOT_SEMVER = ["5.0.0\n", "5.0.0\r\n", "\u0661.\u0660.\u0660", "1.0", " 1.0.0", "01.0.0"]


@pytest.mark.parametrize("version", NOT_SEMVER)
def test_a_version_must_be_exactly_a_semantic_version(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any], wasm: SimpleNamespace, version: str
) -> None:
    message = error_of(cp.upload(team.a_dev, fn["id"], version, wasm.edge_v1_b))
    assert "version" in message
    for action in ("deploy", "rollback"):
        r = cp.call(
            "POST", f"/functions/{fn['id']}/{action}", team.a_dev, json={"version": version}
        )
        assert "version" in error_of(r)
    assert [v["version"] for v in cp.ok("GET", f"/functions/{fn['id']}/versions", ADMIN)] == [
        "1.0.0"
    ]


def test_text_the_database_cannot_store_is_400(
    cp: CP, team: SimpleNamespace, fn: dict[str, Any]
) -> None:
    """NUL (PostgreSQL refuses it in text) and lone surrogates (not UTF-8) in any
    string, NaN and Infinity (not JSON on the way out): each a 400, on either
    database, and the server keeps serving."""
    fid = fn["id"]
    cases: list[tuple[str, str, str, dict[str, str]]] = [
        ("POST", "/auth/login", '{"email": "a\\u0000b@x.test", "password": "pw"}', {}),
        ("POST", "/auth/login", '{"email": "a\\udc00b@x.test", "password": "pw"}', {}),
        ("PATCH", f"/functions/{fid}", '{"env": {"A": "x\\u0000"}}', team.a_dev),
        ("PATCH", f"/functions/{fid}", '{"env": {"A": "x\\udc00"}}', team.a_dev),
        ("PATCH", f"/functions/{fid}", '{"env": {"A=B": "x"}}', team.a_dev),
        ("PATCH", f"/functions/{fid}", '{"entrypoint": "handle\\n"}', team.a_dev),
        ("PATCH", f"/functions/{fid}", '{"idle_timeout_s": NaN}', team.a_dev),
        # Another JSON type is not converted: false and "5" are not integers.
        ("PATCH", f"/functions/{fid}", '{"max_hot_instances": false}', team.a_dev),
        ("PATCH", f"/functions/{fid}", '{"memory_pages": "16"}', team.a_dev),
        ("PATCH", f"/functions/{fid}", '{"kv": {"max_keys": "5"}}', team.a_dev),
        ("PATCH", f"/functions/{fid}", '{"kv": {"enabled": 1}}', team.a_dev),
        ("POST", f"/projects/{team.a}/api-keys", '{"name": "k\\u0000"}', ADMIN),
        ("POST", "/nodes", '{"pop_id": "p", "labels": {"a": NaN}}', ADMIN),
        ("POST", "/nodes", '{"pop_id": "p", "labels": {"a": Infinity}}', ADMIN),
        ("POST", "/nodes", '{"pop_id": "p", "labels": {"a": "' + "0" * 257 + '"}}', ADMIN),
        ("POST", "/nodes", '{"pop_id": "p", "labels": {"bad key": 1}}', ADMIN),
        ("POST", "/nodes", '{"pop_id": "p\\u0000"}', ADMIN),
        (
            "POST",
            "/routes",
            json.dumps({"host": "a.test\n", "path": "/", "function_id": fid}),
            team.a_dev,
        ),
        (
            "POST",
            "/routes",
            json.dumps({"host": "a.test", "path": "/x\n", "function_id": fid}),
            team.a_dev,
        ),
    ]
    for method, path, text, headers in cases:
        error_of(raw(cp, method, path, text, headers))
    for path in ("/functions/a%00b", "/deployments/a%00b", f"/projects/{team.a}%00"):
        error_of(cp.call("GET", path, ADMIN))
    assert cp.ok("GET", f"/functions/{fid}", team.a_dev)["env"] == {"K": "v"}
    assert cp.ok("GET", "/nodes", ADMIN) == []


def test_heartbeat_values_are_bounded(cp: CP) -> None:
    node = cp.node("tokyo", "tokyo-1")
    headers = {"Authorization": f"Bearer {node['token']}"}
    path = "/nodes/tokyo-1/heartbeat"
    for body in (
        {"node_id": "tokyo-1", "acks": [{"id": 2**40, "state": "cached"}]},
        {"node_id": "tokyo-1", "mem_bytes": 2**64},
        {"node_id": "tokyo-1", "functions": [{"id": "f", "state": "cached", "n": [1]}]},
        {"node_id": "tokyo-1", "functions": [{"id": "f", "state": "cached", "n": 1e999}]},
    ):
        error_of(raw(cp, "POST", path, json.dumps(body).replace("Infinity", "1e999"), headers))
    cp.heartbeat(node, functions=[{"id": "f", "state": "cached", "invocations": 3}])
    assert cp.ok("GET", "/nodes", ADMIN)[0]["functions"] == [
        {"id": "f", "version": None, "state": "cached", "invocations": 3}
    ]


def test_route_methods_in_any_case(cp: CP, team: SimpleNamespace, fn: dict[str, Any]) -> None:
    body = {"host": "*", "path": "/x", "function_id": fn["id"], "methods": ["get", "Post"]}
    assert cp.ok("POST", "/routes", team.a_dev, 201, json=body)["methods"] == ["GET", "POST"]
    body["methods"] = ["FETCH"]
    assert "methods" in error_of(cp.call("POST", "/routes", team.a_dev, json=body))


def test_bad_requests_are_400_in_the_contract_shape(cp: CP, team: SimpleNamespace) -> None:
    error_of(raw(cp, "POST", "/functions", "{not json", team.a_dev))
    assert "colour" in error_of(
        cp.call("POST", "/functions", team.a_dev, json={"name": "x", "colour": "red"})
    )


def test_the_openapi_declares_every_error_an_operation_answers(cp: CP) -> None:
    doc = cp.client.get("/openapi.json").json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    # Bounds are JSON Schema's, not pydantic's own keywords (which clients ignore).
    text = json.dumps(doc)
    assert '"ge":' not in text and '"le":' not in text
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            assert "422" not in responses, where
            # Signing in has no role to lack; the git hook is signed by HMAC, not a role.
            expected = {"400", "401"} | (
                {"429"} if path == "/api/v1/auth/login"
                else set() if path == "/api/v1/hooks/git" else {"403"})
            if "{" in path:
                expected.add("404")
            assert expected <= set(responses), (where, sorted(responses))
            for status, response in responses.items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == error_ref, (where, status)
    create = doc["paths"]["/api/v1/functions"]["post"]["responses"]["201"]
    assert "get_functions_function_id" in create["links"]


def test_405_lists_every_method_of_the_path(cp: CP) -> None:
    r = cp.call("PUT", "/functions/abc", ADMIN)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "DELETE, GET, PATCH"
    assert cp.call("OPTIONS", "/functions", ADMIN).headers["allow"] == "GET, POST"
