"""Appending to and verifying the audit hash chain.

Each row's `hash` is HMAC-SHA256, under a key the database does not hold, of
prev_hash + the canonical JSON of the row's content (including its id), so
changing, removing or reordering a row breaks every link after it, and nobody
without the key can compute a replacement chain. Rows written before the chain
was keyed carry plain sha256 links; they verify as such only up to the row that
the first signed checkpoint names (see `checkpoints`), never after a keyed row.
Appends are serialized (an advisory lock on PostgreSQL, BEGIN IMMEDIATE on
SQLite) so two writers never chain onto the same parent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from edgefn.controlplane.audit.checkpoints import (
    HEAD_KEY,
    SESSION_KEY,
    Anchor,
    Checkpoint,
    canonical,
)
from edgefn.controlplane.audit.models import AuditLog
from edgefn.controlplane.auth.principal import Principal

GENESIS_HASH = "0" * 64
_PG_LOCK_KEY = 0x6564_6765  # any constant, shared by every CP replica


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


def legacy_hash(prev_hash: str, content: dict[str, Any]) -> str:
    """The unkeyed link of rows written before the chain was keyed."""
    return hashlib.sha256((prev_hash + canonical(content)).encode()).hexdigest()


def chain_hash(key: bytes, prev_hash: str, content: dict[str, Any]) -> str:
    message = (prev_hash + canonical(content)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _key_of(session: Session) -> bytes:
    key = session.info.get(SESSION_KEY)
    if not isinstance(key, bytes):
        # Failing closed: a row chained without the key would break verification.
        raise RuntimeError("this session has no audit key (checkpoints.attach was not called)")
    return key


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
        details=canonical(details or {}),
        prev_hash=prev_hash,
    )
    row.hash = chain_hash(_key_of(session), prev_hash, row_content(row))
    session.add(row)
    session.flush()
    # The commit hook turns the newest committed row into a checkpoint.
    session.info[HEAD_KEY] = (row.id, row.hash)
    return row


@dataclass(frozen=True)
class ChainReport:
    rows: int
    broken_at: int | None
    reason: str | None
    checkpoints: int = 0

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def _rows(session: Session) -> Iterator[AuditLog]:
    yield from session.scalars(
        select(AuditLog).order_by(AuditLog.id).execution_options(yield_per=500)
    )


def head(session: Session) -> tuple[int, str]:
    """The newest row's id and hash; (0, GENESIS_HASH) for an empty log."""
    last = session.execute(
        select(AuditLog.id, AuditLog.hash).order_by(AuditLog.id.desc()).limit(1)
    ).first()
    return (last[0], last[1]) if last else (0, GENESIS_HASH)


def keyed_suffix_start(session: Session, key: bytes) -> int:
    """The id of the newest row that does not verify under `key` (0 when every row
    does): where unkeyed rows written before this key end."""
    rows = session.scalars(
        select(AuditLog).order_by(AuditLog.id.desc()).execution_options(yield_per=500)
    )
    for row in rows:
        if chain_hash(key, row.prev_hash, row_content(row)) != row.hash:
            return row.id
    return 0


def start_checkpoints(session: Session, anchor: Anchor) -> None:
    """Run once when a control plane starts, after migrations."""
    anchor.start(head(session), lambda: keyed_suffix_start(session, anchor.key))


def verify_chain(
    session: Session, key: bytes, checkpoints: Sequence[Checkpoint] | None
) -> ChainReport:
    """Walk the chain from the start and report the first row whose link does not
    hold, then the first checkpoint the rows do not reach.

    `checkpoints` are already signature-checked; None checks the chain alone
    (truncation of the newest rows then goes unseen, and unkeyed rows are
    accepted up to the first keyed one).
    """
    expected = {c.seq: c.hash for c in checkpoints or ()}
    starts = [c.legacy_upto for c in checkpoints or () if c.legacy_upto is not None]
    legacy_upto = min(starts) if starts else (None if checkpoints is None else 0)
    prev_hash = GENESIS_HASH
    count = 0
    keyed_seen = False
    for row in _rows(session):
        count += 1
        if row.prev_hash != prev_hash:
            return ChainReport(count, row.id, "prev_hash does not match the previous row's hash")
        content = row_content(row)
        if chain_hash(key, prev_hash, content) == row.hash:
            keyed_seen = True
        elif (
            keyed_seen
            or (legacy_upto is not None and row.id > legacy_upto)
            or legacy_hash(prev_hash, content) != row.hash
        ):
            return ChainReport(count, row.id, "hash does not match the row's content and the key")
        if row.id in expected and expected.pop(row.id) != row.hash:
            return ChainReport(count, row.id, "hash differs from the signed checkpoint of this row")
        prev_hash = row.hash
    # A checkpoint at seq 0 is the empty log's genesis.
    expected.pop(0, None)
    if expected:
        missing = max(expected)
        return ChainReport(
            count,
            missing,
            f"truncated: a signed checkpoint names row {missing}, the log ends at row "
            f"{head(session)[0]}",
        )
    return ChainReport(count, None, None, len(checkpoints or ()))


def list_rows(
    session: Session, *, projects: set[str] | None, limit: int, offset: int
) -> tuple[list[AuditLog], int]:
    query = select(AuditLog)
    if projects is not None:
        query = query.where(AuditLog.project_id.in_(projects))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(AuditLog.id.desc()).limit(limit).offset(offset))
    return list(rows), total
