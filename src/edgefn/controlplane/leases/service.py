"""Taking, renewing and giving up a lease, in the caller's transaction.

A lease is a row with a holder and an expiry, not a PostgreSQL advisory lock: it
works the same on SQLite, shows who holds what (`SELECT * FROM leases`), lives in
the schema (two clusters in one database do not contend), needs no connection
pinned for the life of the process (a transaction-pooling proxy such as PgBouncer
breaks session locks), and a holder that hangs without dying loses it after the
TTL, where an advisory lock stays until TCP notices. The cost: a dead holder's
lease moves only when it lapses, up to `ttl` later.

On PostgreSQL `hold` leaves the row locked until the caller commits, so work done
in the same transaction commits only while this replica holds the lease: a
replica that paused past its expiry and woke up finds the row taken and does
nothing (the fencing a lease needs). SQLite runs one replica; its transactions
are serialized anyway (BEGIN IMMEDIATE, `db`).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edgefn.controlplane.db import utcnow
from edgefn.controlplane.leases.models import Lease


def database_now(session: Session) -> dt.datetime:
    """The database server's clock on PostgreSQL (shared by every replica); this
    process's on SQLite (a single replica)."""
    if session.get_bind().dialect.name == "postgresql":
        now = session.scalar(select(func.clock_timestamp()))
        assert now is not None
        return now.astimezone(dt.UTC)
    return utcnow()


def _ensure(session: Session, name: str, now: dt.datetime) -> None:
    """The lease's row, lapsed and held by nobody, unless it exists. Looked for
    first: an insert, even one that does nothing, would wait for the holder's
    transaction, which updated the row."""
    if session.scalar(select(Lease.name).where(Lease.name == name)) is not None:
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(Lease)
        .values(name=name, holder="", expires_at=now, acquired_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )


def hold(session: Session, name: str, holder: str, ttl_s: float) -> bool:
    """Take lease `name` for `holder`, or renew it, until `ttl_s` from now; True when
    `holder` has it. The caller commits (and does the leased work before that)."""
    now = database_now(session)
    _ensure(session, name, now)
    row = session.scalar(
        select(Lease)
        .where(Lease.name == name)
        # Locked: the holder is working under it right now, so it is not lapsed.
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    if row is None or (row.holder != holder and row.expires_at > now):
        return False
    if row.holder != holder:
        row.holder = holder
        row.acquired_at = now
    row.expires_at = now + dt.timedelta(seconds=ttl_s)
    session.flush()
    return True


def release(session: Session, name: str, holder: str) -> None:
    """Let the lease lapse now if `holder` has it, so another replica takes it at its
    next try rather than after the TTL (at a clean shutdown). The caller commits."""
    session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(expires_at=database_now(session))
    )


def holder_of(session: Session, name: str) -> str | None:
    """Who holds the lease now, if anyone."""
    row = session.get(Lease, name, populate_existing=True)
    if row is None or not row.holder or row.expires_at <= database_now(session):
        return None
    return row.holder
