"""Login throttling: failures counted per account (the email tried, known or not)
and per client address, in a fixed window; reaching a limit locks that key out.

Counting in one row per key keeps the table as small as the set of keys that
failed within the last window, whatever an attacker sends; an IPv6 client counts
by its /64, since one host usually holds a whole /64. The counts are upserts, so
concurrent failures never lose an increment on SQLite or PostgreSQL.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from edgefn.controlplane.auth.models import LoginFailure
from edgefn.controlplane.errors import TooManyRequests
from edgefn.controlplane.settings import CPSettings

Scope = Literal["account", "address"]


@dataclass(frozen=True)
class Policy:
    window_s: float
    max_account: int
    max_address: int
    lockout_s: float

    @classmethod
    def from_settings(cls, settings: CPSettings) -> Policy:
        return cls(
            window_s=settings.login_window_s,
            max_account=settings.login_max_failures_account,
            max_address=settings.login_max_failures_address,
            lockout_s=settings.login_lockout_s,
        )

    def limit(self, scope: Scope) -> int:
        return self.max_account if scope == "account" else self.max_address


@dataclass(frozen=True)
class Lockout:
    """A lockout that a failure has just started."""

    scope: Scope
    value: str
    failures: int
    until: float


def address_key(host: str | None) -> str:
    """What a client address counts as: the IP itself, or its /64 for IPv6."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _key(scope: Scope, value: str) -> str:
    return hashlib.sha256(f"{scope}:{value}".encode()).hexdigest()


def check(session: Session, *, email: str, address: str, now: float) -> None:
    """TooManyRequests while the account or the address is locked out."""
    keys = [_key("account", email), _key("address", address)]
    until = session.scalar(
        select(LoginFailure.locked_until)
        .where(LoginFailure.key.in_(keys))
        .order_by(LoginFailure.locked_until.desc())
        .limit(1)
    )
    if until is not None and until > now:
        raise TooManyRequests(
            "too many failed logins; try again later", retry_after_s=math.ceil(until - now)
        )


def _count(
    session: Session, policy: Policy, scope: Scope, value: str, now: float
) -> Lockout | None:
    key = _key(scope, value)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    expired = LoginFailure.window_start <= now - policy.window_s
    stmt = (
        insert(LoginFailure)
        .values(key=key, window_start=now, failures=1, locked_until=0.0)
        .on_conflict_do_update(
            index_elements=[LoginFailure.key],
            set_={
                "failures": case((expired, 1), else_=LoginFailure.failures + 1),
                "window_start": case((expired, now), else_=LoginFailure.window_start),
            },
        )
        .returning(LoginFailure.failures)
    )
    failures = session.execute(stmt).scalar_one()
    if failures < policy.limit(scope):
        return None
    until = now + policy.lockout_s
    # Conditional, so that of two concurrent failures only one starts the lockout
    # (and writes its audit row); the next window opens when the lockout ends.
    started = session.execute(
        update(LoginFailure)
        .where(LoginFailure.key == key, LoginFailure.locked_until <= now)
        .values(locked_until=until, window_start=until, failures=0)
        .returning(LoginFailure.key)
    ).first()
    return Lockout(scope, value, failures, until) if started is not None else None


def failed(
    session: Session, policy: Policy, *, email: str, address: str, now: float
) -> list[Lockout]:
    """Count one failure against both keys; return the lockouts it started."""
    session.execute(
        delete(LoginFailure).where(
            LoginFailure.window_start < now - policy.window_s, LoginFailure.locked_until < now
        )
    )
    started = [
        _count(session, policy, "account", email, now),
        _count(session, policy, "address", address, now),
    ]
    return [lock for lock in started if lock is not None]


def succeeded(session: Session, *, email: str) -> None:
    """A right password clears the account's count (the address keeps its own, or
    one attacker's own account would reset their count against everyone else)."""
    session.execute(delete(LoginFailure).where(LoginFailure.key == _key("account", email)))
