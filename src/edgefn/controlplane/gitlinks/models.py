"""Tables of git links: one link per function, and the push deliveries it was sent."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.controlplane.db import Base, UTCDateTime, new_id, utcnow


class GitLink(Base):
    __tablename__ = "git_links"

    function_id: Mapped[str] = mapped_column(
        ForeignKey("functions.id", ondelete="CASCADE"), primary_key=True
    )
    project_id: Mapped[str] = mapped_column(String(36))
    repository: Mapped[str] = mapped_column(String(1000))
    # The URL as pushes are matched by (`builder.git.repository_key`).
    repository_key: Mapped[str] = mapped_column(String(1000), index=True)
    branch: Mapped[str] = mapped_column(String(255))
    subdirectory: Mapped[str] = mapped_column(String(500))
    language: Mapped[str] = mapped_column(String(32))
    auto_deploy: Mapped[bool] = mapped_column(Boolean, default=False)
    # The webhook secret, sealed by the secret store like a project's secrets
    # (`secret_name` is its name there); never returned by the API.
    secret_backend: Mapped[str] = mapped_column(String(16))
    secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Who linked it: builds and deploys a push triggers act in their name.
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def secret_name(self) -> str:
        # Not a valid project secret name (those are identifiers), so no clash.
        return f"git-webhook:{self.function_id}"


class GitDelivery(Base):
    """A push delivery a function acted on, kept so a redelivery is not built twice."""

    __tablename__ = "git_deliveries"
    __table_args__ = (
        UniqueConstraint("function_id", "delivery_id", name="uq_git_deliveries_delivery"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    function_id: Mapped[str] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    delivery_id: Mapped[str] = mapped_column(String(100))
    commit: Mapped[str] = mapped_column(String(64))
    build_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
