"""One row per (version, engine tag) the control plane precompiled, or tried to."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.controlplane.db import Base, UTCDateTime, new_id, utcnow

READY = "ready"
FAILED = "failed"


class PrecompiledArtifact(Base):
    """Never updated: compiled code of one version for one engine tag, or why there is
    none (`failed`, not tried again: the same compiler would fail the same way)."""

    __tablename__ = "precompiled_artifacts"
    __table_args__ = (
        UniqueConstraint("function_id", "version", "engine_tag",
                         name="uq_precompiled_artifacts_tag"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    function_id: Mapped[str] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(100))
    engine_tag: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16))
    artifact_key: Mapped[str | None] = mapped_column(String(500))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    compile_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
