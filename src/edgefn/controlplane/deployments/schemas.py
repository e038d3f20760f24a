"""Bodies of deploy, rollback, deployments, and the heartbeat's acks."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from edgefn.contract import AckState, JsonInt, TrafficSplit
from edgefn.contract.split import Percent
from edgefn.controlplane.auth.schemas import StrictModel
from edgefn.controlplane.fields import INT32_MAX, Line, Text, Version

Strategy = Literal["pull", "canary", "gradual"]


class Gates(StrictModel):
    """How a canary, gradual or split rollout is watched (docs/rollouts.md): each wave
    (a split's: each share) bakes `bake_s`; with at least `min_requests` to the new
    version, an error rate over the previous version's plus
    `max_error_rate_increase`, or a p99 over `max_p99_ratio` times the previous one's
    (and over `p99_floor_s`), rolls it back; otherwise the next wave of `wave_percent`
    of the targets (a split's next share) goes out, unless `manual`."""

    bake_s: float = Field(60.0, ge=0, le=86400)
    min_requests: int = Field(20, ge=1, le=10**9)
    max_error_rate_increase: float = Field(0.02, ge=0, le=1)
    max_p99_ratio: float = Field(2.0, ge=1, le=1000)
    p99_floor_s: float = Field(0.01, ge=0, le=3600)
    wave_percent: int = Field(25, ge=1, le=100)
    manual: bool = False


class DeploySplit(TrafficSplit):
    """A deploy's split: the node's `TrafficSplit`, and for a gated one the shares
    each promotion moves it to (`steps`; `rollouts.shares` reads them). Only
    `percent` and `key` are sent to the nodes."""

    # Read, not refused: whatever the list, the shares rise and end at 100, so that
    # every body the schema allows is a rollout (no 400 its schema does not state).
    steps: list[Percent] | None = Field(None, min_length=1, max_length=10)


class DeployIn(StrictModel):
    version: Version
    target_pop: list[Annotated[Line, Field(min_length=1, max_length=100)]] | None = Field(
        None, max_length=1000
    )
    strategy: Strategy = "pull"
    # canary and gradual: watch each wave with these gates (`{}`: the defaults);
    # without them each wave follows the previous one's acks.
    gates: Gates | None = None
    # Share the version's traffic with the one before it on every target node
    # (docs/edge.md, Traffic splitting); with `gates`, each share bakes and is judged
    # before the next (docs/rollouts.md).
    split: DeploySplit | None = None


class RollbackIn(StrictModel):
    version: Version | None = None


class DeploymentNodeOut(BaseModel):
    node_id: str
    state: str
    message: str | None = None


class RolloutNodeOut(BaseModel):
    node_id: str
    wave: int
    state: str
    # The node's last reported figures of the new and of the previous version.
    new: dict[str, Any] | None
    previous: dict[str, Any] | None


class RolloutOut(BaseModel):
    state: str
    # A split's: the step of its share (`percent`), of `waves` steps.
    wave: int
    waves: int
    percent: int | None = None
    gates: dict[str, Any]
    bake_started_at: dt.datetime | None
    reason: str | None
    rollback_id: str | None
    # Every gate's decision with the figures behind it, oldest first.
    decisions: list[dict[str, Any]]
    nodes: list[RolloutNodeOut]


class DeploymentOut(BaseModel):
    id: str
    deployment_id: str
    function_id: str
    version: str
    previous_version: str | None
    kind: str
    strategy: str
    state: str
    created_at: dt.datetime
    nodes: list[DeploymentNodeOut]
    split: DeploySplit | None = None
    rollout: RolloutOut | None = None


class AckIn(StrictModel):
    """A node's answer to one instruction, as it reaches the control plane (an HTTP
    heartbeat's `acks`, or a DeploymentStatus on the stream)."""

    # An outbox row's id: an INTEGER column.
    id: JsonInt = Field(ge=1, le=INT32_MAX)
    state: AckState
    message: Text | None = Field(None, max_length=1000)
