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
from edgefn.controlplane import db
from edgefn.controlplane.models import Base
from tests.controlplane.conftest import create_pg_schema, drop_pg_schema, require_postgres
from tests.controlplane.test_artifacts import free_port


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
        assert db.current_revision(engine) == "0001"
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


def test_cli_migrate(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["cp", "migrate", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "revision 0001" in result.output
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
