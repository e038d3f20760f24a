"""Tokens, logins, API keys and the RBAC matrix, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
import sqlalchemy as sa

from edgefn.cluster import free_port
from edgefn.controlplane.app import create_app
from edgefn.controlplane.auth import service as auth_service
from edgefn.controlplane.auth import throttle
from tests.controlplane.conftest import ADMIN, CP, PASSWORD, bearer, make_settings


def test_no_or_bad_token_is_401(cp: CP) -> None:
    for headers in (None, bearer("nope"), {"Authorization": "Basic abc"}):
        r = cp.call("GET", "/functions", headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "unauthorized"


def test_login_issues_jwt(cp: CP, team: SimpleNamespace) -> None:
    body = cp.ok("POST", "/auth/login", json={"email": "DEV@a.test", "password": PASSWORD})
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["projects"] == [team.a] and claims["exp"] > dt.datetime.now(dt.UTC).timestamp()
    assert cp.call("GET", "/functions", bearer(body["token"])).status_code == 200


def _login(cp: CP, email: str, password: str = "wrong password") -> httpx.Response:
    return cp.call("POST", "/auth/login", json={"email": email, "password": password})


def _audit_actions(cp: CP) -> list[str]:
    return [row["action"] for row in cp.ok("GET", "/audit", ADMIN)]


def _failure_rows(cp: CP) -> int:
    engine = sa.create_engine(cp.settings.resolved_database_url())
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM login_failures")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize("email", ["dev@p.test", "nobody@p.test"])
def test_account_lockout_after_failures(cp_factory: Any, email: str) -> None:
    """Known and unknown emails lock out alike (no existence leak); the right
    password waits out the lockout too; the lockout is one audit row."""
    cp = cp_factory(login_max_failures_account=3, login_lockout_s=3.0)
    cp.member("dev@p.test", cp.project("p"))
    before = _audit_actions(cp)
    assert [_login(cp, email).status_code for _ in range(3)] == [401, 401, 401]
    locked = _login(cp, email, PASSWORD)
    assert locked.status_code == 429, locked.text
    assert locked.json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(locked.headers["retry-after"]) <= 3
    # Other accounts (same client address, under its own limit) are not locked.
    assert _login(cp, "other@p.test").status_code == 401
    after = _audit_actions(cp)
    assert after[: len(after) - len(before)] == ["auth.lockout"]
    lockout = cp.ok("GET", "/audit", ADMIN)[0]
    assert lockout["target_type"] == "account" and lockout["target_id"] == email
    assert lockout["details"]["failures"] == 3
    time.sleep(3.1)
    if email == "dev@p.test":
        assert _login(cp, email, PASSWORD).status_code == 200
    else:
        assert _login(cp, email).status_code == 401


def test_address_lockout_spans_accounts(cp_factory: Any) -> None:
    cp = cp_factory(login_max_failures_account=100, login_max_failures_address=5)
    cp.member("dev@p.test", cp.project("p"))
    for i in range(5):
        assert _login(cp, f"guess{i}@p.test").status_code == 401
    r = _login(cp, "dev@p.test", PASSWORD)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 800
    lockout = cp.ok("GET", "/audit", ADMIN)[0]
    assert lockout["action"] == "auth.lockout" and lockout["target_type"] == "address"


def test_failures_are_counted_not_logged(cp_factory: Any) -> None:
    """40 failures add no audit row and at most one counter row per key; counters
    whose window has passed are deleted by later failures."""
    limits = {"login_max_failures_account": 100, "login_max_failures_address": 100}
    cp = cp_factory(**limits)
    cp.member("dev@p.test", cp.project("p"))
    before = _audit_actions(cp)
    for i in range(40):
        assert _login(cp, f"user{i % 4}@p.test").status_code == 401
    assert _audit_actions(cp) == before
    assert _failure_rows(cp) == 5  # four accounts and one address
    # A success clears the account's count.
    assert _login(cp, "dev@p.test").status_code == 401
    assert _failure_rows(cp) == 6
    assert _login(cp, "dev@p.test", PASSWORD).status_code == 200
    assert _failure_rows(cp) == 5
    # A CP on the same database with a short window: the old counts are over.
    short = cp_factory(**limits, login_window_s=0.01)
    time.sleep(0.05)
    assert _login(short, "late@p.test").status_code == 401
    assert _failure_rows(cp) == 2  # late@ and the address


def test_unknown_email_costs_one_verification(cp: CP) -> None:
    """The dummy hash has the hasher's own parameters, so an unknown email costs
    the same argon2 work as a known one (bench/login_timing.py measures it)."""
    hasher = cp.client.app.state.cp.creds.hasher  # type: ignore[attr-defined]
    dummy = auth_service._dummy_hash(hasher)
    assert dummy is auth_service._dummy_hash(hasher)
    assert not hasher.check_needs_rehash(dummy)


def test_client_address_keys() -> None:
    assert throttle.address_key("203.0.113.7") == "203.0.113.7"
    assert throttle.address_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert throttle.address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert throttle.address_key(None) == "unknown"


def _user_id(cp: CP, headers: dict[str, str]) -> str:
    token = headers["Authorization"].split()[1]
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def test_forged_and_expired_jwt(cp: CP, team: SimpleNamespace) -> None:
    sub = _user_id(cp, team.a_dev)
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    forged = jwt.encode({"sub": sub, "projects": [team.b], "exp": exp}, "x" * 32, "HS256")
    r = cp.call("GET", "/functions", bearer(forged))
    assert r.status_code == 401 and r.json()["error"]["message"] == "invalid token"
    unsigned = jwt.encode({"sub": sub, "exp": exp}, None, "none")
    assert cp.call("GET", "/functions", bearer(unsigned)).status_code == 401
    secret = cp.settings.resolved_secret_key()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    expired = jwt.encode({"sub": sub, "projects": [team.a], "exp": past}, secret, "HS256")
    r = cp.call("GET", "/functions", bearer(expired))
    assert r.status_code == 401 and r.json()["error"]["message"] == "token expired"


def test_admin_only_endpoints(cp: CP, team: SimpleNamespace) -> None:
    assert cp.call("POST", "/projects", team.a_owner, json={"name": "z"}).status_code == 403
    r = cp.call("POST", "/users", team.a_owner, json={"email": "x@y.z", "password": PASSWORD})
    assert r.status_code == 403
    assert cp.call("POST", "/nodes", team.a_owner, json={"pop_id": "p"}).status_code == 403
    assert cp.call("POST", "/projects", ADMIN, json={"name": "alpha"}).status_code == 409
    r = cp.call("POST", "/users", ADMIN, json={"email": "dev@a.test", "password": PASSWORD})
    assert r.status_code == 409


def test_owner_manages_members_and_keys(cp: CP, team: SimpleNamespace) -> None:
    uid = cp.user("new@a.test")
    body = {"user_id": uid, "role": "viewer"}
    assert cp.call("POST", f"/projects/{team.a}/members", team.a_dev, json=body).status_code == 403
    cp.ok("POST", f"/projects/{team.a}/members", team.a_owner, 201, json=body)
    r = cp.call("POST", f"/projects/{team.b}/members", team.a_owner, json=body)
    assert r.status_code == 404  # B's existence does not leak to A's owner
    key = cp.ok(
        "POST",
        f"/projects/{team.a}/api-keys",
        team.a_owner,
        201,
        json={"name": "ci", "role": "developer"},
    )
    assert key["key"].startswith("efk_")
    api = bearer(key["key"])
    fn = cp.function(api, "from-ci")
    assert fn["owner_project_id"] == team.a
    assert cp.call("GET", "/functions", api).json()[0]["id"] == fn["id"]
    assert cp.call("GET", "/functions", bearer(key["key"] + "x")).status_code == 401
    projects = cp.ok("GET", "/projects", team.a_dev)
    assert [p["id"] for p in projects] == [team.a]


@pytest.fixture
def b_function(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace) -> str:
    fn = cp.function(team.b_dev, "secret")
    assert cp.upload(team.b_dev, fn["id"], "1.0.0", wasm.edge_v1).status_code == 201
    return str(fn["id"])


def test_rbac_other_project_is_invisible(
    cp: CP, team: SimpleNamespace, wasm: SimpleNamespace, b_function: str
) -> None:
    a = team.a_dev
    assert cp.ok("GET", "/functions", a) == []
    for method, path in (
        ("GET", f"/functions/{b_function}"),
        ("GET", f"/functions/{b_function}/versions"),
        ("PATCH", f"/functions/{b_function}"),
        ("DELETE", f"/functions/{b_function}"),
    ):
        kw = {"json": {"max_execution_ms": 9}} if method == "PATCH" else {}
        r = cp.call(method, path, team.a_owner, **kw)
        assert r.status_code == 404, (method, path, r.text)
    assert cp.upload(a, b_function, "9.9.9", wasm.edge_v1).status_code == 404
    r = cp.call("POST", f"/functions/{b_function}/deploy", a, json={"version": "1.0.0"})
    assert r.status_code == 404
    assert cp.call("POST", f"/functions/{b_function}/rollback", a, json={}).status_code == 404
    r = cp.call("POST", "/routes", a, json={"host": "*", "path": "/", "function_id": b_function})
    assert r.status_code == 404
    r = cp.call("POST", "/functions", a, json={"name": "intruder", "owner_project_id": team.b})
    assert r.status_code == 403
    # And B's data is untouched.
    assert cp.ok("GET", f"/functions/{b_function}/versions", team.b_dev)[0]["version"] == "1.0.0"
    # Audit rows of B are not shown to A.
    assert all(row["project_id"] == team.a for row in cp.ok("GET", "/audit", a))


def test_rbac_roles_within_project(cp: CP, team: SimpleNamespace, wasm: SimpleNamespace) -> None:
    fn = cp.function(team.a_dev)
    viewer = team.a_viewer
    assert cp.ok("GET", f"/functions/{fn['id']}", viewer)["id"] == fn["id"]
    assert cp.upload(viewer, fn["id"], "1.0.0", wasm.edge_v1).status_code == 403
    r = cp.call("POST", f"/functions/{fn['id']}/deploy", viewer, json={"version": "1.0.0"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert cp.call("POST", "/functions", viewer, json={"name": "v"}).status_code == 400
    r = cp.call("POST", "/functions", viewer, json={"name": "v", "owner_project_id": team.a})
    assert r.status_code == 403


def test_node_token_only_for_heartbeats(cp: CP) -> None:
    node = cp.node("tokyo-1", region="tokyo")
    assert node["token"].startswith("efn_")
    r = cp.call("GET", "/functions", bearer(node["token"]))
    assert r.status_code == 403
    other = cp.node("osaka-1")
    r = cp.call(
        "POST",
        f"/nodes/{other['id']}/heartbeat",
        bearer(node["token"]),
        json={"node_id": other["id"]},
    )
    assert r.status_code == 403
    r = cp.call("POST", f"/nodes/{node['id']}/heartbeat", json={"node_id": node["id"]})
    assert r.status_code == 401
    r = cp.call("POST", f"/nodes/{node['id']}/heartbeat", ADMIN, json={"node_id": node["id"]})
    assert r.status_code == 403


def test_owner_lists_and_revokes_api_keys(cp: CP, team: SimpleNamespace) -> None:
    path = f"/projects/{team.a}/api-keys"
    key = cp.ok("POST", path, team.a_owner, 201, json={"name": "ci", "role": "developer"})
    api = bearer(key["key"])
    assert cp.call("GET", "/functions", api).status_code == 200
    listed = cp.ok("GET", path, team.a_owner)
    assert [(k["id"], k["name"]) for k in listed] == [(key["id"], "ci")]
    assert all("key" not in k for k in listed)  # the secret is never shown again
    assert cp.call("GET", path, team.a_dev).status_code == 403
    assert cp.call("DELETE", f"{path}/{key['id']}", team.a_dev).status_code == 403
    other = f"/projects/{team.b}/api-keys/{key['id']}"
    assert cp.call("DELETE", other, team.a_owner).status_code == 404
    assert cp.call("DELETE", f"{path}/{key['id']}", team.a_owner).status_code == 204
    assert cp.call("GET", "/functions", api).status_code == 401  # revoked at once
    assert cp.call("DELETE", f"{path}/{key['id']}", team.a_owner).status_code == 404
    actions = [row["action"] for row in cp.ok("GET", "/audit", ADMIN)]
    assert "api_key.revoke" in actions


def test_concurrent_failures_are_all_counted(
    tmp_path: Path, database_url: str, serve_app: Any
) -> None:
    """20 wrong passwords at once, through a real server: the upserts lose none,
    and exactly one of the requests that reach the limit starts the lockout."""
    settings = make_settings(
        tmp_path, database_url, login_max_failures_account=10, login_max_failures_address=1000
    )
    port = free_port()
    serve_app(create_app(settings), port)
    url = f"http://127.0.0.1:{port}/api/v1/auth/login"

    def attempt(_: int) -> int:
        body = {"email": "target@p.test", "password": "wrong password"}
        return httpx.post(url, json=body, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(attempt, range(20)))
    # Those that checked before the lockout began failed with 401; the rest 429.
    assert statuses.count(401) >= 10 and set(statuses) <= {401, 429}
    audit = httpx.get(f"http://127.0.0.1:{port}/api/v1/audit", headers=ADMIN).json()
    assert [row["action"] for row in audit].count("auth.lockout") == 1
    engine = sa.create_engine(settings.resolved_database_url())
    try:
        with engine.connect() as conn:
            failures = conn.execute(
                sa.text("SELECT failures FROM login_failures ORDER BY failures DESC")
            ).scalars().all()
    finally:
        engine.dispose()
    # The address row saw every 401; the account row restarted at the lockout.
    assert failures[0] == statuses.count(401)
