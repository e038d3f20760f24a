"""Shared fixtures of the control-plane tests: real SQLite and PostgreSQL databases
(migrated once per session, emptied between tests), test modules compiled from
WAT, and a `CP` helper driving the API through FastAPI's TestClient."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
import wasmtime
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from edgefn.controlplane import db
from edgefn.controlplane.app import create_app
from edgefn.controlplane.models import Base
from edgefn.controlplane.settings import CPSettings

PG_URL = os.environ.get(
    "EDGEFN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PASSWORD = "correct horse battery"
# A function's policy fields at the edge's defaults, as the API and the deploy
# instruction show them; written out so that changing a default shows here.
DEFAULT_POLICY: dict[str, Any] = {
    "max_request_bytes": None,
    "kv": {
        "enabled": False,
        "max_key_bytes": 512,
        "max_value_bytes": 65536,
        "max_keys": 10000,
        "max_ttl_seconds": 2592000,
    },
    "http_fetch": {
        "allow_hosts": [],
        "allow_private": False,
        "max_response_bytes": 1048576,
        "max_redirects": 3,
    },
    "isolation": "reuse",
    "min_hot_instances": 1,
    "max_hot_instances": 10,
    "idle_timeout_s": 300.0,
    "secrets": [],
    "argv": None,
}

EDGE_V1_WAT = """(module (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    i32.const 0))"""


def _wasm(wat: str) -> bytes:
    return bytes(wasmtime.wat2wasm(wat))


@pytest.fixture(scope="session")
def wasm() -> SimpleNamespace:
    """Modules for uploads: valid edge-v1 and WAGI ones, and three the CP must refuse."""
    edge_v1 = _wasm(EDGE_V1_WAT)
    return SimpleNamespace(
        edge_v1=edge_v1,
        edge_v1_b=_wasm(EDGE_V1_WAT.replace("i32.const 0))", "i32.const 1))")),
        wagi=_wasm('(module (memory (export "memory") 1) (func (export "_start")))'),
        wagi_wasi=_wasm(
            '(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))'
            ' (memory (export "memory") 1) (func (export "_start")))'
        ),
        imports_env=_wasm(
            EDGE_V1_WAT.replace("(module ", '(module (import "env" "foo" (func)) ', 1)
        ),
        big_memory=_wasm(
            EDGE_V1_WAT.replace('(memory (export "memory") 1)', '(memory (export "memory") 17)')
        ),
        no_abi=_wasm('(module (func (export "main")))'),
        not_wasm=b"#!/bin/sh\necho this is not wasm\n",
    )


# ---- databases ---------------------------------------------------------------


def pg_reachable() -> bool:
    engine = sa.create_engine(PG_URL)
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def require_postgres() -> None:
    """CI must run the PostgreSQL half: there an unreachable server is a failure."""
    if pg_reachable():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL at {PG_URL} is unreachable and CI=true")
    pytest.skip(f"PostgreSQL at {PG_URL} is unreachable (set CI=true to make this fail)")


def pg_schema_url(schema: str) -> str:
    """A URL whose connections live in `schema` (search_path), isolating a test run."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


def create_pg_schema() -> tuple[str, str]:
    schema = f"edgefn_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    return schema, pg_schema_url(schema)


def drop_pg_schema(schema: str) -> None:
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "cp.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.migrate(engine)
    # Closing the last connection folds the WAL into the file, so a plain copy
    # is a complete database.
    engine.dispose()
    assert not path.with_name("cp.db-wal").exists()
    return path


@pytest.fixture(scope="session")
def pg_session_url() -> Iterator[str]:
    require_postgres()
    schema, url = create_pg_schema()
    engine = db.make_engine(url)
    db.migrate(engine)
    engine.dispose()
    yield url
    drop_pg_schema(schema)


def _truncate_pg(url: str) -> None:
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        # The append-only triggers are the point of the audit table; only the test
        # harness, as the table's owner, lifts them to reset between tests.
        conn.exec_driver_sql("ALTER TABLE audit_logs DISABLE TRIGGER USER")
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        conn.exec_driver_sql("ALTER TABLE audit_logs ENABLE TRIGGER USER")
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database of each kind."""
    if request.param == "sqlite":
        target = tmp_path / "cp.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_session_url")
    _truncate_pg(url)
    return url


# ---- the control plane ---------------------------------------------------------


def make_settings(tmp_path: Path, database_url: str, **overrides: Any) -> CPSettings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "bootstrap_token": ADMIN_TOKEN,
        # Tests that need the EdgeControl server ask for one (port 0).
        "grpc_port": None,
        "secret_key": "test-secret-key-" * 3,
        "public_url": "http://testserver",
        "auto_migrate": False,
        # argon2 at its floor: the tests check behaviour, not hash strength.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 64,
        "argon2_parallelism": 1,
        # Git links to local repositories (file://, git daemon on loopback).
        "git_url_schemes": ["https", "http", "git", "file"],
        "git_allow_private_hosts": True,
    }
    values.update(overrides)
    return CPSettings(**values)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class CP:
    """The API as a client script sees it, with shortcuts for the usual setup."""

    client: TestClient
    settings: CPSettings

    def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        return self.client.request(method, "/api/v1" + path, headers=headers, **kw)

    def ok(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        status: int = 200,
        **kw: Any,
    ) -> Any:
        r = self.call(method, path, headers, **kw)
        assert r.status_code == status, r.text
        return r.json() if r.content else None

    def project(self, name: str) -> str:
        return str(self.ok("POST", "/projects", ADMIN, 201, json={"name": name})["id"])

    def user(self, email: str, project_id: str | None = None, role: str = "developer") -> str:
        uid = str(
            self.ok("POST", "/users", ADMIN, 201, json={"email": email, "password": PASSWORD})["id"]
        )
        if project_id:
            self.ok(
                "POST",
                f"/projects/{project_id}/members",
                ADMIN,
                201,
                json={"user_id": uid, "role": role},
            )
        return uid

    def login(self, email: str) -> dict[str, str]:
        body = self.ok("POST", "/auth/login", json={"email": email, "password": PASSWORD})
        return bearer(body["token"])

    def member(self, email: str, project_id: str, role: str = "developer") -> dict[str, str]:
        self.user(email, project_id, role)
        return self.login(email)

    def function(self, headers: dict[str, str], name: str = "hello", **kw: Any) -> Any:
        return self.ok("POST", "/functions", headers, 201, json={"name": name, **kw})

    def upload(
        self, headers: dict[str, str], function_id: str, version: str, data: bytes, **fields: str
    ) -> httpx.Response:
        return self.call(
            "POST",
            f"/functions/{function_id}/versions",
            headers,
            data={"version": version, **fields},
            files={"artifact": ("module.wasm", data, "application/wasm")},
        )

    def node(self, pop_id: str, node_id: str | None = None, **labels: Any) -> Any:
        body: dict[str, Any] = {"pop_id": pop_id, "labels": labels}
        if node_id:
            body["id"] = node_id
        return self.ok("POST", "/nodes", ADMIN, 201, json=body)

    def heartbeat(
        self, node: Any, acks: list[dict[str, Any]] | None = None, **body: Any
    ) -> list[dict[str, Any]]:
        payload = {
            "node_id": node["id"],
            "status": "online",
            "cpu": 1.5,
            "mem_bytes": 1 << 20,
            "functions": [],
            "acks": acks or [],
            **body,
        }
        out = self.ok("POST", f"/nodes/{node['id']}/heartbeat", bearer(node["token"]), json=payload)
        return list(out["instructions"])


@pytest.fixture
def cp_factory(tmp_path: Path, database_url: str) -> Iterator[Any]:
    """Builds CPs on this test's database, with settings overrides."""
    clients: list[TestClient] = []

    def build(**overrides: Any) -> CP:
        settings = make_settings(tmp_path, database_url, **overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return CP(client, settings)

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def cp(cp_factory: Any) -> CP:
    built: CP = cp_factory()
    return built


@pytest.fixture
def team(cp: CP) -> SimpleNamespace:
    """Two projects, A and B, each with a developer; A also has an owner and a viewer."""
    a, b = cp.project("alpha"), cp.project("beta")
    return SimpleNamespace(
        a=a,
        b=b,
        a_dev=cp.member("dev@a.test", a),
        b_dev=cp.member("dev@b.test", b),
        a_owner=cp.member("owner@a.test", a, "owner"),
        a_viewer=cp.member("viewer@a.test", a, "viewer"),
    )


@pytest.fixture
def serve_app() -> Iterator[Any]:
    """Runs an app under a real uvicorn server on loopback: `start(app, port)`."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: Any, port: int) -> None:
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        servers.append((server, thread))

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's S3 server on loopback: the real wire protocol, for the S3 store."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
