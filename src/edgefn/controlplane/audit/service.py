"""Appending to and verifying the audit hash chain.

Each row's `hash` is sha256(prev_hash + canonical JSON of the row's content,
including its id), so changing, removing or reordering a row breaks every link
after it. Appends are serialized (an advisory lock on PostgreSQL, BEGIN
IMMEDIATE on SQLite) so two writers never chain onto the same parent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from edgefn.controlplane.audit.models import AuditLog
from edgefn.controlplane.auth.principal import Principal

GENESIS_HASH = "0" * 64
_PG_LOCK_KEY = 0x6564_6765  # any constant, shared by every CP replica


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_content(row: AuditLog) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at,
        "actor": row.actor,
        "action": row.action,
        "target_type": row.target_type,
        "target_id": row.target_id,
        "project_id": row.project_id,
        "request_id": row.request_id,
        "details": row.details,
    }


def chain_hash(prev_hash: str, content: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + _canonical(content)).encode()).hexdigest()


def record(
    session: Session,
    who: Principal,
    action: str,
    *,
    target_type: str,
    target_id: str | None,
    project_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    """Add one row in the caller's transaction; it commits with the change it records."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    last = session.execute(
        select(AuditLog.id, AuditLog.hash).order_by(AuditLog.id.desc()).limit(1)
    ).first()
    prev_id, prev_hash = (last[0], last[1]) if last else (0, GENESIS_HASH)
    row = AuditLog(
        # Explicit id: the hash covers it, and it must be known before the insert
        # because the row can never be updated afterwards.
        id=prev_id + 1,
        at=dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
        actor=who.actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        project_id=project_id,
        request_id=who.request_id,
        details=_canonical(details or {}),
        prev_hash=prev_hash,
    )
    row.hash = chain_hash(prev_hash, row_content(row))
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class ChainReport:
    rows: int
    broken_at: int | None
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def _rows(session: Session) -> Iterator[AuditLog]:
    yield from session.scalars(
        select(AuditLog).order_by(AuditLog.id).execution_options(yield_per=500)
    )


def verify_chain(session: Session) -> ChainReport:
    """Walk the chain from the start; report the first row whose link does not hold."""
    prev_hash = GENESIS_HASH
    count = 0
    for row in _rows(session):
        count += 1
        if row.prev_hash != prev_hash:
            return ChainReport(count, row.id, "prev_hash does not match the previous row's hash")
        if chain_hash(prev_hash, row_content(row)) != row.hash:
            return ChainReport(count, row.id, "hash does not match the row's content")
        prev_hash = row.hash
    return ChainReport(count, None, None)


def list_rows(
    session: Session, *, projects: set[str] | None, limit: int, offset: int
) -> tuple[list[AuditLog], int]:
    query = select(AuditLog)
    if projects is not None:
        query = query.where(AuditLog.project_id.in_(projects))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(AuditLog.id.desc()).limit(limit).offset(offset))
    return list(rows), total
