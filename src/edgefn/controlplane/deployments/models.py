"""Tables of deployments: the deployment, its per-node state, and the outbox."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from edgefn.controlplane.db import Base, UTCDateTime, new_id, utcnow


class DeploymentKind(StrEnum):
    DEPLOY = "deploy"
    ROLLBACK = "rollback"


class DeploymentState(StrEnum):
    """A deployment's course: running until every target acked `cached` (succeeded), one
    acked `error` (failed), or a newer deployment of the function took over (superseded)."""

    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SUPERSEDED = "superseded"


class NodeRolloutState(StrEnum):
    """Where a deployment stands on one of its nodes: instruction queued (pending), its
    wave not started (waiting), the node's ack (cached, error), or never sent because
    the deployment ended first (skipped)."""

    PENDING = "pending"
    WAITING = "waiting"
    CACHED = "cached"
    ERROR = "error"
    SKIPPED = "skipped"


class RolloutState(StrEnum):
    """A gated rollout's course (`rollouts`): a wave sent, waiting for its acks
    (pending for the first, promoting for later ones); a wave serving, watched for one
    bake window (baking); every wave serving (done); returning its nodes to the
    previous version (rolling_back) after a failed gate (rolled_back) or an
    operator's abort (aborted)."""

    PENDING = "pending"
    BAKING = "baking"
    PROMOTING = "promoting"
    DONE = "done"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


class OutboxState(StrEnum):
    """An outbox row's delivery: handed out until acked; superseded by a newer
    instruction before the node acked it (never sent again); failed when the row could
    not be read as an instruction (never sent; its ack_message says why)."""

    PENDING = "pending"
    ACKED = "acked"
    SUPERSEDED = "superseded"
    FAILED = "failed"


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    function_id: Mapped[str] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(100))
    previous_version: Mapped[str | None] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))  # DeploymentKind
    strategy: Mapped[str] = mapped_column(String(16))
    # The deploy's `target_pop`; None: every node the function's selector matches.
    # A node registered later gets the function only if this targets it.
    target_pop: Mapped[list[str] | None] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(100))
    # The deploy's traffic split (`schemas.DeploySplit`: percent, key, steps), if any.
    split: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A gated rollout (canary, gradual, split): its RolloutState, the wave it is in (a
    # split's: the step of its share), its gates (`rollouts.Gates`), when the current
    # wave's bake began, every gate's figures, why it was rolled back, and the
    # deployment that rolled it back.
    rollout_state: Mapped[str | None] = mapped_column(String(16))
    wave: Mapped[int] = mapped_column(Integer, default=0)
    gates: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    bake_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    decisions: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(String(1000))
    rollback_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DeploymentNode(Base):
    __tablename__ = "deployment_nodes"

    deployment_id: Mapped[str] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    # Wave 0 is sent at once; later waves wait for the one before (canary, gradual).
    wave: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(String(1000))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OutboxInstruction(Base):
    """One instruction for one node; its id is the ack id the node sends back."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_node_state", "node_id", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    deployment_id: Mapped[str | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL")
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING)
    ack_state: Mapped[str | None] = mapped_column(String(16))
    ack_message: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    acked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
