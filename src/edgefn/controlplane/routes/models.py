"""The routes table, and the claims that keep tenants' routes apart."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    case,
    exists,
    literal,
)
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.contract.tenancy import WHOLE_HOST
from edgefn.controlplane.db import Base, UTCDateTime, new_id, utcnow
from edgefn.controlplane.functions.models import Function


class Route(Base):
    __tablename__ = "routes"
    __table_args__ = (
        UniqueConstraint("host", "path", "priority", name="uq_routes_host_path_priority"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    host: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1000))
    function_id: Mapped[str] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    methods: Mapped[list[str]] = mapped_column(JSON)
    pop_selector: Mapped[str | None] = mapped_column(String(500))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RouteClaim(Base):
    """A host, or a path on the `*` host, held by one project (contract/tenancy.py).

    `path` is `/*` (the whole host) for a host other than `*`. A claim taken by a
    route goes when its project's last route under it does, unless `pinned` (the
    admin assigned it). One row per (host, path): two projects claiming the same
    one at once cannot both insert it.
    """

    __tablename__ = "route_claims"
    __table_args__ = (UniqueConstraint("host", "path", name="uq_route_claims_host_path"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    host: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(1000))
    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


def claim_path_column() -> ColumnElement[str]:
    """`claim_key` in SQL: the path a route's claim is recorded under."""
    return case((Route.host == "*", Route.path), else_=literal(WHOLE_HOST))


def claim_held() -> ColumnElement[bool]:
    """True for a route whose function's project holds the route's claim: only those
    reach the nodes (a route left without its claim, e.g. the later of two that
    overlapped before claims existed, stays in the table but serves nothing)."""
    return exists().where(
        RouteClaim.host == Route.host,
        RouteClaim.path == claim_path_column(),
        RouteClaim.project_id == Function.project_id,
    )
