"""Tables of the registry: functions and their immutable versions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.contract import DataArchive, FunctionPolicy
from edgefn.controlplane.db import Base, UTCDateTime, new_id, utcnow


class Function(Base):
    __tablename__ = "functions"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_functions_project_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(100))
    entrypoint: Mapped[str] = mapped_column(String(100))
    runtime: Mapped[str] = mapped_column(String(16))
    max_execution_ms: Mapped[int] = mapped_column(Integer)
    memory_pages: Mapped[int] = mapped_column(Integer)
    max_response_bytes: Mapped[int] = mapped_column(Integer)
    pop_selector: Mapped[str | None] = mapped_column(String(500))
    env: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # A `FunctionPolicy` (kv, http_fetch, isolation, instances, request size) as
    # JSON: validated and read as one unit by the contract's model, never queried by
    # field. `{}` (rows older than revision 0002) means every field at its default.
    policy: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, server_default=text("'{}'")
    )
    active_version: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def function_policy(self) -> FunctionPolicy:
        """The stored policy with every field it leaves out at its default."""
        return FunctionPolicy.model_validate(self.policy or {})


class FunctionVersion(Base):
    """Never updated: a version is its bytes, and the bytes do not change."""

    __tablename__ = "function_versions"
    __table_args__ = (
        UniqueConstraint("function_id", "version", name="uq_function_versions_version"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    function_id: Mapped[str] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    artifact_key: Mapped[str] = mapped_column(String(300))
    artifact_url: Mapped[str] = mapped_column(String(1000))
    abi: Mapped[str] = mapped_column(String(16))
    # The version's data archive (docs/wagi.md, Volumes): its store key, sha256, size
    # and mount map (guest path -> directory inside it); all NULL without one.
    data_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    data_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    data_size: Mapped[int | None] = mapped_column(BigInteger(), nullable=True)
    data_mounts: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def data_archive(self, url: str = "") -> DataArchive | None:
        """The data archive as a deploy carries it (`url` minted by the caller)."""
        if self.data_key is None or self.data_sha256 is None:
            return None
        return DataArchive(url=url, sha256=self.data_sha256, size=self.data_size or 0,
                           mounts=dict(self.data_mounts or {}))
