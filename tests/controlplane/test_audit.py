"""The audit log: keyed chain, signed checkpoints, append-only triggers, and
`edgefn audit verify` (the CLI, on a real SQLite or PostgreSQL database) catching
a tampered, a rewritten and a truncated log."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.orm import Session

from edgefn.cli.main import cli
from edgefn.controlplane import db
from edgefn.controlplane.audit.models import AuditLog
from edgefn.controlplane.audit.service import GENESIS_HASH, legacy_hash, row_content
from tests.controlplane.conftest import ADMIN, CP


def _verify(cp: CP, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli,
        [
            "audit",
            "verify",
            "--data-dir",
            str(cp.settings.data_dir),
            "--database-url",
            cp.settings.resolved_database_url(),
            *extra,
        ],
    )
    return result.exit_code, result.output


def _checkpoints(cp: CP) -> list[dict[str, Any]]:
    path = cp.settings.resolved_audit_checkpoint_file()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_audit_rows_chain_and_order(cp: CP, team: SimpleNamespace) -> None:
    rows = cp.ok("GET", "/audit", ADMIN)
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    oldest = rows[-1]
    assert oldest["action"] == "project.create" and oldest["actor"] == "admin"
    assert oldest["prev_hash"] == GENESIS_HASH and oldest["request_id"]
    for newer, older in itertools.pairwise(rows):
        assert newer["prev_hash"] == older["hash"]
    assert {"user.create", "member.create"} <= {r["action"] for r in rows}
    # The links are keyed: the unkeyed sha256 of a row is not its hash.
    assert oldest["hash"] != legacy_hash(GENESIS_HASH, {**oldest, "details": "{}"})
    code, out = _verify(cp)
    assert code == 0, out
    assert f"{len(rows)} rows" in out and f"{len(rows) + 1} signed checkpoints" in out


def test_key_and_checkpoint_files(cp: CP, team: SimpleNamespace) -> None:
    key = cp.settings.data_dir / "audit.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text()) >= 32
    points = _checkpoints(cp)
    # The first line starts the file at the (empty) head; one line per row follows.
    assert points[0]["seq"] == 0 and points[0]["legacy_upto"] == 0
    newest = cp.ok("GET", "/audit", ADMIN)[0]
    assert points[-1]["seq"] == newest["id"] and points[-1]["hash"] == newest["hash"]
    assert set(points[-1]) == {"seq", "hash", "time", "signature"}


def test_checkpoint_every_n_rows(cp_factory: Any) -> None:
    cp = cp_factory(audit_checkpoint_every=3)
    for i in range(7):
        cp.project(f"p{i}")
    assert [p["seq"] for p in _checkpoints(cp)] == [0, 3, 6]
    # Rows after the last checkpoint are the window a truncation can hide in.
    code, out = _verify(cp)
    assert code == 0, out


def test_database_refuses_update_and_delete(cp: CP, team: SimpleNamespace) -> None:
    engine = _engine(cp)
    try:
        for statement in ("UPDATE audit_logs SET actor = 'mallory'", "DELETE FROM audit_logs"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _engine(cp: CP) -> sa.Engine:
    return db.make_engine(cp.settings.resolved_database_url())


@pytest.fixture
def writer(cp: CP) -> Iterator[sa.Connection]:
    """A connection of someone with DDL rights on the database, the append-only
    triggers lifted; the test commits what it changed."""
    engine = _engine(cp)
    conn = engine.connect()
    _lift_triggers(conn)
    conn.commit()
    try:
        yield conn
    finally:
        conn.rollback()
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_logs ENABLE TRIGGER USER")
            conn.commit()
        conn.close()
        engine.dispose()


def _lift_triggers(conn: sa.Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE audit_logs DISABLE TRIGGER USER")
    else:
        conn.exec_driver_sql("DROP TRIGGER audit_logs_no_update")
        conn.exec_driver_sql("DROP TRIGGER audit_logs_no_delete")


def _rechain_unkeyed(conn: sa.Connection, start: int) -> None:
    """Recompute every link from row `start` on with the unkeyed sha256, as a
    forger without the key would."""
    session = Session(bind=conn)
    rows = list(session.scalars(sa.select(AuditLog).order_by(AuditLog.id)))
    prev = GENESIS_HASH
    for row in rows:
        if row.id >= start:
            new = legacy_hash(prev, row_content(row))
            conn.execute(
                sa.update(AuditLog).where(AuditLog.id == row.id).values(prev_hash=prev, hash=new)
            )
            prev = new
        else:
            prev = row.hash


def test_tampered_row_is_found(cp: CP, team: SimpleNamespace, writer: sa.Connection) -> None:
    writer.exec_driver_sql("UPDATE audit_logs SET actor = 'mallory' WHERE id = 3")
    writer.commit()
    code, out = _verify(cp)
    assert code == 1 and "broken at row 3" in out and "key" in out


def test_deleted_middle_row_is_found(cp: CP, team: SimpleNamespace, writer: sa.Connection) -> None:
    writer.exec_driver_sql("DELETE FROM audit_logs WHERE id = 3")
    writer.commit()
    code, out = _verify(cp)
    assert code == 1 and "broken at row 4" in out and "prev_hash" in out


def test_rewritten_chain_is_found(cp: CP, team: SimpleNamespace, writer: sa.Connection) -> None:
    """An edit with every following link recomputed (unkeyed) still fails: the
    forger cannot compute the keyed links, and unkeyed ones end where the signed
    checkpoints say."""
    writer.exec_driver_sql("UPDATE audit_logs SET actor = 'mallory' WHERE id = 3")
    _rechain_unkeyed(writer, 3)
    writer.commit()
    code, out = _verify(cp)
    assert code == 1 and "broken at row 3" in out and "key" in out
    # Even the whole log rewritten unkeyed is refused.
    _rechain_unkeyed(writer, 1)
    writer.commit()
    code, out = _verify(cp)
    assert code == 1 and "broken at row 1" in out


def test_truncated_log_is_found(cp: CP, team: SimpleNamespace, writer: sa.Connection) -> None:
    """Deleting the newest rows leaves a valid chain; the checkpoints show it."""
    last = cp.ok("GET", "/audit", ADMIN)[0]["id"]
    writer.exec_driver_sql(f"DELETE FROM audit_logs WHERE id > {last - 2}")
    writer.commit()
    code, out = _verify(cp)
    assert code == 1 and f"broken at row {last}" in out and "truncated" in out
    assert f"ends at row {last - 2}" in out
    # The chain alone cannot tell, which is what the checkpoints are for.
    code, out = _verify(cp, "--no-checkpoints")
    assert code == 0 and "checkpoints" not in out


def test_forged_or_missing_checkpoints_are_found(cp: CP, team: SimpleNamespace) -> None:
    path = cp.settings.resolved_audit_checkpoint_file()
    original = path.read_text()
    lines = original.splitlines()
    forged = json.loads(lines[-1]) | {"seq": 999}
    path.write_text(original + json.dumps(forged) + "\n")
    code, out = _verify(cp)
    assert code == 1 and f"line {len(lines) + 1}: the signature does not verify" in out
    path.unlink()
    code, out = _verify(cp)
    assert code == 1 and "no checkpoint file" in out


def test_verify_needs_the_key(cp: CP, team: SimpleNamespace) -> None:
    (cp.settings.data_dir / "audit.key").rename(cp.settings.data_dir / "elsewhere.key")
    code, out = _verify(cp)
    assert code == 1 and "no audit key" in out
    # Another key: nothing verifies.
    (cp.settings.data_dir / "audit.key").write_text("k" * 48)
    code, out = _verify(cp)
    assert code == 1 and "signature does not verify" in out


def _legacy_rows(url: str, count: int) -> None:
    """Rows as an older control plane wrote them: unkeyed sha256 links."""
    engine = db.make_engine(url)
    with Session(engine) as session:
        prev = GENESIS_HASH
        for i in range(1, count + 1):
            row = AuditLog(
                id=i,
                at=dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
                actor="admin",
                action="project.create",
                target_type="project",
                target_id=f"old-{i}",
                project_id=None,
                request_id=None,
                details="{}",
                prev_hash=prev,
            )
            row.hash = prev = legacy_hash(prev, row_content(row))
            session.add(row)
        session.commit()
    engine.dispose()


def test_existing_unkeyed_chain_is_carried_over(cp_factory: Any, database_url: str) -> None:
    """Rows from before the key verify as unkeyed up to the head the first
    checkpoint names; from there on only keyed links pass."""
    _legacy_rows(database_url, 3)
    cp = cp_factory()
    cp.project("new")
    assert _checkpoints(cp)[0]["legacy_upto"] == 3
    code, out = _verify(cp)
    assert code == 0 and "4 rows" in out, out
    engine = _engine(cp)
    with engine.begin() as conn:
        _lift_triggers(conn)
        # Rewriting an old row with its unkeyed links recomputed: the first
        # checkpoint signed the old head (and the first keyed row links to it).
        conn.exec_driver_sql("UPDATE audit_logs SET actor = 'mallory' WHERE id = 2")
        _rechain_unkeyed(conn, 2)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_logs ENABLE TRIGGER USER")
    engine.dispose()
    code, out = _verify(cp)
    assert code == 1 and "broken at row 3" in out and "checkpoint" in out, out


def test_checkpoint_file_is_appended_not_rewritten(cp: CP, team: SimpleNamespace) -> None:
    path = cp.settings.resolved_audit_checkpoint_file()
    before = path.read_text()
    inode = os.stat(path).st_ino
    cp.project("one-more")
    assert path.read_text().startswith(before) and os.stat(path).st_ino == inode
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Path(path).read_text().count("\n") == before.count("\n") + 1
