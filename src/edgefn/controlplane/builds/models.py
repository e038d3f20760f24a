"""The `builds` table: one row per build asked for, its state, log and scan report."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.controlplane.db import Base, UTCDateTime, new_id, utcnow


class Build(Base):
    __tablename__ = "builds"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    function_id: Mapped[str] = mapped_column(
        ForeignKey("functions.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[str] = mapped_column(String(36))
    language: Mapped[str] = mapped_column(String(32))
    # queued -> running -> succeeded | failed (running is only seen live, from the queue).
    state: Mapped[str] = mapped_column(String(16), default="queued")
    version: Mapped[str] = mapped_column(String(100))
    allow_critical: Mapped[bool] = mapped_column(Boolean, default=False)
    source_sha256: Mapped[str] = mapped_column(String(64))
    source_size: Mapped[int] = mapped_column(Integer)
    # Who asked: the version is created in their name when the build succeeds.
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    log: Mapped[str] = mapped_column(Text, default="")
    scan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # Builds a git push started: the commit, and whether success deploys the version.
    git_commit: Mapped[str | None] = mapped_column(String(64))
    auto_deploy: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
