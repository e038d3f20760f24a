"""Every node certificate the CA issued, by serial: what the CP accepts and what it
revoked. Rows outlive their node, so a deleted node's certificates stay refused."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.controlplane.db import Base, UTCDateTime, utcnow


class NodeCertificate(Base):
    __tablename__ = "node_certificates"

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64), index=True)
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
