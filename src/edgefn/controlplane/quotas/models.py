"""The quotas the admin set for a project; a project without a row, or a column left
NULL, gets each node's default (the seed's: 100 concurrent, 10,000 a minute, 1 CPU
hour a day)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Float, ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.contract import QuotaSpec
from edgefn.controlplane.db import Base, UTCDateTime, utcnow


class ProjectQuota(Base):
    __tablename__ = "project_quotas"

    project_id: Mapped[str] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    max_concurrency: Mapped[int | None] = mapped_column(BigInteger(), nullable=True)
    invocations_per_minute: Mapped[int | None] = mapped_column(BigInteger(), nullable=True)
    cpu_seconds_per_day: Mapped[float | None] = mapped_column(Float(), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def spec(self) -> QuotaSpec:
        """The row as the edge reads it (the API shows and the config instruction carries it)."""
        return QuotaSpec(
            max_concurrency=self.max_concurrency,
            invocations_per_minute=self.invocations_per_minute,
            cpu_seconds_per_day=self.cpu_seconds_per_day,
        )
