"""The samples table: what one node reported of one function version within one
time bucket, as the difference from its report before."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.controlplane.db import Base, UTCDateTime


class VersionSample(Base):
    __tablename__ = "version_samples"
    # One row per node, so that the nodes' heartbeats never write the same row (each
    # node's are serialized on its own row of `nodes`); readers sum over nodes.
    function_id: Mapped[str] = mapped_column(
        ForeignKey("functions.id", ondelete="CASCADE"), primary_key=True
    )
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), primary_key=True)
    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    # The bucket's cumulative latency histogram over `contract.LATENCY_BOUNDS`.
    latency: Mapped[list[int]] = mapped_column(JSON, default=list)

    __table_args__ = (Index("ix_version_samples_at", "at"),)
