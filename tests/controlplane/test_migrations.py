"""Migrations from an empty database up to head and back down, on both databases,
and `edgefn cp migrate` / `edgefn cp serve` as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from edgefn.cli.main import cli
from edgefn.contract import FunctionPolicy
from edgefn.controlplane import db
from edgefn.controlplane.functions.models import Function
from edgefn.controlplane.models import Base
from tests.controlplane.conftest import create_pg_schema, drop_pg_schema, require_postgres
from tests.controlplane.test_artifacts import free_port

HEAD = "0015"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    require_postgres()
    schema, url = create_pg_schema()
    yield url
    drop_pg_schema(schema)


def test_upgrade_from_empty_and_downgrade(empty_url: str) -> None:
    engine = db.make_engine(empty_url)
    try:
        assert db.current_revision(engine) is None
        db.migrate(engine)
        assert db.current_revision(engine) == HEAD
        tables = set(sa.inspect(engine).get_table_names())
        assert {t.name for t in Base.metadata.sorted_tables} <= tables
        db.downgrade(engine, "base")
        assert db.current_revision(engine) is None
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
        db.migrate(engine)  # and up again, triggers included
        with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO audit_logs (id, at, actor, action, target_type, details, "
                "prev_hash, hash) VALUES (1, 'a', 'b', 'c', 'd', '{}', 'e', 'f')"
            )
            conn.exec_driver_sql("DELETE FROM audit_logs")
    finally:
        engine.dispose()


def _columns(engine: sa.Engine, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns(table)}


def test_0002_function_policy_up_and_down_keeps_rows(empty_url: str) -> None:
    """A function made before policies reads as the default policy; going back
    down drops only the column (no table rebuild cascading into versions)."""
    engine = db.make_engine(empty_url)
    now = db.utcnow()
    try:
        db.migrate(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO projects (id, name, created_at) VALUES ('p', 'p', :t)"),
                {"t": now},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO functions (id, project_id, name, entrypoint, runtime, "
                    "max_execution_ms, memory_pages, max_response_bytes, env, created_at, "
                    "updated_at) VALUES ('f', 'p', 'old', 'handle', 'wasm', 500, 16, 65536, "
                    "'{}', :t, :t)"
                ),
                {"t": now},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO function_versions (id, function_id, version, sha256, size, "
                    "artifact_key, artifact_url, abi, created_at) VALUES ('v', 'f', '1.0.0', "
                    "'00', 1, 'k', 'u', 'edge-v1', :t)"
                ),
                {"t": now},
            )
        assert "policy" not in _columns(engine, "functions")

        db.migrate(engine, "0002")
        assert "policy" in _columns(engine, "functions")
        with db.session_scope(db.make_sessionmaker(engine)) as session:
            fn = session.get(Function, "f")
            assert fn is not None and fn.policy == {}
            assert fn.function_policy() == FunctionPolicy()
            assert not fn.function_policy().kv.enabled
            fn.policy = FunctionPolicy(kv={"enabled": True}).model_dump(mode="json")
            session.commit()
        with db.session_scope(db.make_sessionmaker(engine)) as session:
            fn = session.get(Function, "f")
            assert fn is not None and fn.function_policy().kv.enabled

        db.downgrade(engine, "0001")
        assert db.current_revision(engine) == "0001"
        assert "policy" not in _columns(engine, "functions")
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM function_versions")) == 1
            assert conn.scalar(sa.text("SELECT name FROM functions")) == "old"
        db.migrate(engine)
        assert db.current_revision(engine) == HEAD
    finally:
        engine.dispose()


def test_cli_migrate(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cp", "migrate", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert f"revision {HEAD}" in result.output
    assert (tmp_path / "controlplane.db").exists()


def test_cp_serve_runs_with_defaults(tmp_path: Path) -> None:
    """The real command in its own process: migrates an empty data dir and serves."""
    port = free_port()
    env = {**os.environ, "EDGEFN_BOOTSTRAP_TOKEN": "serve-admin"}
    env.pop("EDGEFN_DATABASE_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edgefn.cli.main",
            "cp",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/openapi.json")
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "cp serve did not come up"
                time.sleep(0.1)
        assert r.status_code == 200 and "/api/v1/functions" in r.json()["paths"]
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/nodes", headers={"Authorization": "Bearer serve-admin"}
        )
        assert r.status_code == 200 and r.json() == []
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert (tmp_path / "data" / "controlplane.db").exists()
