"""The leases table: one row per lease, naming its holder and when it lapses."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.controlplane.db import Base, UTCDateTime


class Lease(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The replica id of the holder; "" before anyone took it.
    holder: Mapped[str] = mapped_column(String(200))
    # By the database's clock: replicas never compare their own clocks.
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    acquired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
