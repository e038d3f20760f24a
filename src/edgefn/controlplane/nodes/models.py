"""The nodes table; a node's token is kept only as its sha256."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.controlplane.db import Base, UTCDateTime, utcnow


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pop_id: Mapped[str] = mapped_column(String(100))
    ip: Mapped[str | None] = mapped_column(String(64))
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="registered")
    last_heartbeat: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    cpu: Mapped[float | None] = mapped_column(Float)
    mem_bytes: Mapped[int | None] = mapped_column(BigInteger)
    functions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # The node's invocation figures per function and version (`rollouts.VersionStats`,
    # keyed "function_id@version"), as its last report gave them.
    version_stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The engine tags the node loads compiled code of (`sandbox.enginetag`), as it
    # last said; None until it says (nodes of releases before precompiled artifacts).
    engine_tags: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
