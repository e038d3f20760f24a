"""Secrets (docs/security.md, Secrets): write-only values sealed at rest with a key
outside the database, RBAC per project, audit without values, and the node call
that answers only for a function deployed to that node and the names it lists."""

from __future__ import annotations

import base64
import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from edgefn.controlplane.errors import SecretStoreError
from edgefn.controlplane.secrets.builtin import BuiltinSecretStore, load_or_create_key
from tests.controlplane.conftest import ADMIN, CP, bearer

VALUE = "sk_live_0123456789abcdef-very-secret"
OTHER_VALUE = "rotated-value-9876543210"


def _secrets(cp: CP, project: str) -> str:
    return f"/projects/{project}/secrets"


def _put(cp: CP, who: dict[str, str], project: str, name: str, value: str) -> Any:
    return cp.call("POST", _secrets(cp, project), who, json={"name": name, "value": value})


def _raw_rows(cp: CP) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(cp.settings.resolved_database_url())
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql("SELECT * FROM secrets")]
    finally:
        engine.dispose()


def _raw_text(cp: CP, table: str) -> str:
    engine = sa.create_engine(cp.settings.resolved_database_url())
    try:
        with engine.connect() as conn:
            return repr([tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table}")])
    finally:
        engine.dispose()


def test_values_are_write_only_and_sealed_in_the_database(
    cp: CP, team: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = _put(cp, team.a_dev, team.a, "API_KEY", VALUE)
    assert created.status_code == 201, created.text
    assert set(created.json()) == {"name", "project_id", "created_at", "updated_at", "updated_by"}
    replaced = _put(cp, team.a_owner, team.a, "API_KEY", OTHER_VALUE)
    assert replaced.status_code == 200
    listed = cp.ok("GET", _secrets(cp, team.a), team.a_viewer)
    assert [s["name"] for s in listed] == ["API_KEY"]
    assert listed[0]["updated_by"].startswith("user:")
    # Nothing the API says, the database holds or a log line shows carries a value.
    answers = created.text + replaced.text + repr(listed)
    rows = _raw_rows(cp)
    assert len(rows) == 1
    sealed = next(c for c in rows[0] if isinstance(c, (bytes, memoryview)))
    for value in (VALUE, OTHER_VALUE):
        assert value not in answers
        assert value.encode() not in bytes(sealed) and value not in repr(rows)
        assert value not in _raw_text(cp, "audit_logs")
        assert value not in caplog.text
    audit = cp.ok("GET", "/audit", ADMIN)
    actions = [e["action"] for e in audit if e["target_type"] == "secret"]
    assert actions == ["secret.update", "secret.create"]


def test_rbac_per_project(cp: CP, team: SimpleNamespace) -> None:
    assert _put(cp, team.a_dev, team.a, "TOKEN", VALUE).status_code == 201
    # Viewers list names but may not write or delete.
    assert _put(cp, team.a_viewer, team.a, "TOKEN", "x").status_code == 403
    assert cp.call("DELETE", f"{_secrets(cp, team.a)}/TOKEN", team.a_viewer).status_code == 403
    # Another project's developer cannot see the project at all: 404, not 403.
    for method, path, body in (
        ("GET", _secrets(cp, team.a), None),
        ("POST", _secrets(cp, team.a), {"name": "TOKEN", "value": "stolen"}),
        ("DELETE", f"{_secrets(cp, team.a)}/TOKEN", None),
    ):
        assert cp.call(method, path, team.b_dev, json=body).status_code == 404
    assert cp.call("GET", _secrets(cp, team.a)).status_code == 401
    assert cp.ok("GET", _secrets(cp, team.b), team.b_dev) == []
    cp.ok("DELETE", f"{_secrets(cp, team.a)}/TOKEN", team.a_dev, 204)
    assert cp.ok("GET", _secrets(cp, team.a), team.a_dev) == []
    assert cp.call("DELETE", f"{_secrets(cp, team.a)}/TOKEN", team.a_dev).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": "BAD-NAME", "value": "v"},
        {"name": "A\n", "value": "v"},
        {"name": "", "value": "v"},
        {"name": "A" * 129, "value": "v"},
        {"name": "OK", "value": "v" * (64 * 1024 + 1)},
        {"name": "OK", "value": 5},
        {"name": "OK"},
        {"name": "OK", "value": "v", "extra": 1},
    ],
)
def test_bad_input_is_400(cp: CP, team: SimpleNamespace, body: dict[str, Any]) -> None:
    r = cp.call("POST", _secrets(cp, team.a), team.a_dev, json=body)
    assert r.status_code == 400, r.text
    assert "v" * 100 not in r.text


def _deployed(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace, **policy: Any) -> Any:
    fn = cp.function(team.a_dev, "reader", **policy)
    assert cp.upload(team.a_dev, fn["id"], "1.0.0", wasm.edge_v1).status_code == 201
    return fn


def _resolve(cp: CP, node: Any, function_id: str, names: list[str],
             token: str | None = None) -> Any:
    return cp.call(
        "POST", f"/nodes/{node['id']}/secrets", bearer(token or node["token"]),
        json={"function_id": function_id, "names": names},
    )


def test_a_node_reads_only_what_its_deployed_function_lists(
    cp: CP, team: SimpleNamespace, wasm: SimpleNamespace
) -> None:
    _put(cp, team.a_dev, team.a, "API_KEY", VALUE)
    _put(cp, team.a_dev, team.a, "UNLISTED", "not-for-this-function")
    _put(cp, team.b_dev, team.b, "B_KEY", "beta-secret")
    fn = _deployed(cp, team, wasm, secrets=["API_KEY", "NOT_SET"])
    assert fn["secrets"] == ["API_KEY", "NOT_SET"]
    tokyo, paris = cp.node("tokyo", "tokyo-1"), cp.node("paris", "paris-1")
    # Not deployed anywhere yet: no node gets anything.
    assert _resolve(cp, tokyo, fn["id"], ["API_KEY"]).status_code == 404
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202,
          json={"version": "1.0.0", "target_pop": ["tokyo"]})
    deploy = next(i for i in cp.heartbeat(tokyo) if i["type"] == "deploy")
    # The instruction carries the names, never a value.
    assert deploy["secrets"] == ["API_KEY", "NOT_SET"]
    assert VALUE not in repr(deploy) and VALUE not in _raw_text(cp, "outbox")

    r = _resolve(cp, tokyo, fn["id"], ["API_KEY", "NOT_SET", "UNLISTED", "B_KEY"])
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.json() == {"secrets": {"API_KEY": VALUE}, "missing": ["NOT_SET"],
                        "denied": ["B_KEY", "UNLISTED"]}
    # Paris was not targeted; and one node cannot ask in another's name.
    assert _resolve(cp, paris, fn["id"], ["API_KEY"]).status_code == 404
    assert _resolve(cp, tokyo, fn["id"], ["API_KEY"], token=paris["token"]).status_code == 403
    # People cannot use the node call, not even the function's own developer.
    r = cp.call("POST", f"/nodes/{tokyo['id']}/secrets", team.a_dev,
                json={"function_id": fn["id"], "names": ["API_KEY"]})
    assert r.status_code == 403
    # Node reads are audited by name.
    audit = cp.ok("GET", "/audit", ADMIN)
    (read,) = [e for e in audit if e["action"] == "secret.resolve"]
    assert read["details"] == {"node_id": "tokyo-1", "names": ["API_KEY"]}
    assert VALUE not in repr(audit)

    # Deleting the function undeploys it: from then on the node gets nothing.
    cp.ok("DELETE", f"/functions/{fn['id']}", team.a_owner, 204)
    assert _resolve(cp, tokyo, fn["id"], ["API_KEY"]).status_code == 404


def test_a_later_node_gets_only_what_deployments_targeted(
    cp: CP, team: SimpleNamespace, wasm: SimpleNamespace
) -> None:
    """A node registered after the deploys receives only the functions whose latest
    deployment targets it (their selector, or their target_pop), with their routes."""
    everywhere = cp.function(team.a_dev, "everywhere", env={"A_ENV": "alpha-env"})
    pinned = cp.function(team.b_dev, "pinned", env={"B_ENV": "beta-env"})
    for fn, who in ((everywhere, team.a_dev), (pinned, team.b_dev)):
        assert cp.upload(who, fn["id"], "1.0.0", wasm.edge_v1).status_code == 201
        cp.ok("POST", "/routes", who, 201,
              json={"host": "*", "path": f"/{fn['name']}", "function_id": fn["id"]})
    cp.node("tokyo", "tokyo-1")
    cp.ok("POST", f"/functions/{everywhere['id']}/deploy", team.a_dev, 202,
          json={"version": "1.0.0"})
    cp.ok("POST", f"/functions/{pinned['id']}/deploy", team.b_dev, 202,
          json={"version": "1.0.0", "target_pop": ["tokyo"]})
    late = cp.node("paris", "paris-1")
    pending = cp.heartbeat(late)
    deploys = [i["function_id"] for i in pending if i["type"] == "deploy"]
    assert deploys == [everywhere["id"]]
    assert "beta-env" not in repr(pending) and pinned["id"] not in repr(pending)
    (config,) = [i for i in pending if i["type"] == "config"]
    assert [r["function_id"] for r in config["routes"]] == [everywhere["id"]]
    # A later node in the targeted POP gets the pinned function too.
    late_tokyo = cp.node("tokyo", "tokyo-2")
    deploys = {i["function_id"] for i in cp.heartbeat(late_tokyo) if i["type"] == "deploy"}
    assert deploys == {everywhere["id"], pinned["id"]}


def test_key_file_is_created_0600_once_and_outside_the_database(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "secrets.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key  # read, not replaced
    assert base64.b64decode(path.read_text()) == key


def test_sealed_values_are_bound_to_project_and_name_and_key() -> None:
    store = BuiltinSecretStore(os.urandom(32))
    sealed = store.seal("project-a", "API_KEY", VALUE)
    assert store.unseal("project-a", "API_KEY", sealed) == VALUE
    assert store.seal("project-a", "API_KEY", VALUE) != sealed  # a fresh nonce each time
    # A row moved to another project or renamed does not open.
    for project, name in (("project-b", "API_KEY"), ("project-a", "OTHER")):
        with pytest.raises(SecretStoreError, match="does not open"):
            store.unseal(project, name, sealed)
    with pytest.raises(SecretStoreError):
        BuiltinSecretStore(os.urandom(32)).unseal("project-a", "API_KEY", sealed)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(SecretStoreError):
        store.unseal("project-a", "API_KEY", tampered)
    with pytest.raises(SecretStoreError):
        store.unseal("project-a", "API_KEY", None)


def test_swapped_rows_do_not_open_through_the_api(
    cp: CP, team: SimpleNamespace, wasm: SimpleNamespace
) -> None:
    """A database writer who copies project B's sealed value into project A's row
    gets a 502 from the node call, never B's value."""
    _put(cp, team.a_dev, team.a, "API_KEY", VALUE)
    _put(cp, team.b_dev, team.b, "API_KEY", "beta-secret")
    fn = _deployed(cp, team, wasm, secrets=["API_KEY"])
    node = cp.node("tokyo", "tokyo-1")
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.a_dev, 202, json={"version": "1.0.0"})
    engine = sa.create_engine(cp.settings.resolved_database_url())
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "UPDATE secrets SET sealed = (SELECT sealed FROM secrets WHERE project_id = :b) "
                "WHERE project_id = :a"), {"a": team.a, "b": team.b})
    finally:
        engine.dispose()
    r = _resolve(cp, node, fn["id"], ["API_KEY"])
    assert r.status_code == 502 and "beta-secret" not in r.text
    assert r.json()["error"]["code"] == "secret_store_error"


def test_a_control_plane_with_another_key_cannot_open_them(
    cp_factory: Any, tmp_path: Path, wasm: SimpleNamespace
) -> None:
    first = cp_factory()
    project = first.project("alpha")
    admin_fn = first.function(ADMIN, "reader", owner_project_id=project, secrets=["API_KEY"])
    assert first.upload(ADMIN, admin_fn["id"], "1.0.0", wasm.edge_v1).status_code == 201
    first.ok("POST", f"/projects/{project}/secrets", ADMIN, 201,
             json={"name": "API_KEY", "value": VALUE})
    node = first.node("tokyo", "tokyo-1")
    first.ok("POST", f"/functions/{admin_fn['id']}/deploy", ADMIN, 202, json={"version": "1.0.0"})
    assert _resolve(first, node, admin_fn["id"], ["API_KEY"]).json()["secrets"] == {
        "API_KEY": VALUE}
    other_key = base64.b64encode(os.urandom(32)).decode()
    second = cp_factory(secrets_key=other_key)
    assert _resolve(second, node, admin_fn["id"], ["API_KEY"]).status_code == 502


def test_a_name_resolves_in_the_functions_own_project_only(
    cp: CP, team: SimpleNamespace, wasm: SimpleNamespace
) -> None:
    """Project B's function listing A's secret name gets B's (unset) secret, never A's."""
    _put(cp, team.a_dev, team.a, "API_KEY", VALUE)
    fn = cp.function(team.b_dev, "thief", secrets=["API_KEY"])
    assert cp.upload(team.b_dev, fn["id"], "1.0.0", wasm.edge_v1).status_code == 201
    node = cp.node("tokyo", "tokyo-1")
    cp.ok("POST", f"/functions/{fn['id']}/deploy", team.b_dev, 202, json={"version": "1.0.0"})
    r = _resolve(cp, node, fn["id"], ["API_KEY"])
    assert r.json() == {"secrets": {}, "missing": ["API_KEY"], "denied": []}
    assert VALUE not in r.text
    # B's developer cannot list secrets into the function either: a PATCH only names.
    cp.ok("PATCH", f"/functions/{fn['id']}", team.b_dev, json={"secrets": ["API_KEY", "X"]})
    assert cp.ok("GET", f"/functions/{fn['id']}", team.b_dev)["secrets"] == ["API_KEY", "X"]
    bad = cp.call("PATCH", f"/functions/{fn['id']}", team.b_dev, json={"secrets": ["a-b"]})
    assert bad.status_code == 400
