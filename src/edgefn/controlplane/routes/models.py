"""The routes table."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.controlplane.db import Base, UTCDateTime, new_id, utcnow


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
