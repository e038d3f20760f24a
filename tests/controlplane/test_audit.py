"""The audit log: hash chain, append-only triggers, and `edgefn audit verify`."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from edgefn.cli.main import cli
from edgefn.controlplane import db
from tests.controlplane.conftest import ADMIN, CP


def _verify(cp: CP) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, ["audit", "verify", "--database-url", cp.settings.resolved_database_url()]
    )
    return result.exit_code, result.output


def test_audit_rows_chain_and_order(cp: CP, team: SimpleNamespace) -> None:
    rows = cp.ok("GET", "/audit", ADMIN)
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    oldest = rows[-1]
    assert oldest["action"] == "project.create" and oldest["actor"] == "admin"
    assert oldest["prev_hash"] == "0" * 64 and oldest["request_id"]
    for newer, older in itertools.pairwise(rows):
        assert newer["prev_hash"] == older["hash"]
    assert {"user.create", "member.create"} <= {r["action"] for r in rows}
    code, out = _verify(cp)
    assert code == 0 and f"{len(rows)} rows" in out


def _engine(cp: CP) -> sa.Engine:
    return db.make_engine(cp.settings.resolved_database_url())


def test_database_refuses_update_and_delete(cp: CP, team: SimpleNamespace) -> None:
    engine = _engine(cp)
    try:
        for statement in ("UPDATE audit_logs SET actor = 'mallory'", "DELETE FROM audit_logs"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _without_triggers(conn: sa.Connection, statement: str) -> None:
    """Tamper as someone with DDL rights would: lift the trigger, then edit."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE audit_logs DISABLE TRIGGER USER")
        conn.exec_driver_sql(statement)
        conn.exec_driver_sql("ALTER TABLE audit_logs ENABLE TRIGGER USER")
    else:
        conn.exec_driver_sql("DROP TRIGGER audit_logs_no_update")
        conn.exec_driver_sql("DROP TRIGGER audit_logs_no_delete")
        conn.exec_driver_sql(statement)


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("UPDATE audit_logs SET actor = 'mallory' WHERE id = 3", "content"),
        ("DELETE FROM audit_logs WHERE id = 3", "prev_hash"),
    ],
)
def test_verify_finds_tampering(cp: CP, team: SimpleNamespace, statement: str, reason: str) -> None:
    engine = _engine(cp)
    try:
        with engine.begin() as conn:
            _without_triggers(conn, statement)
    finally:
        engine.dispose()
    code, out = _verify(cp)
    broken_at = 3 if "UPDATE" in statement else 4
    assert code == 1
    assert f"broken at row {broken_at}" in out and reason in out
