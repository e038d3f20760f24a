"""Bodies of deploy, rollback, deployments, and the heartbeat's acks."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from edgefn.contract import AckState, JsonInt, TrafficSplit
from edgefn.controlplane.auth.schemas import StrictModel
from edgefn.controlplane.fields import INT32_MAX, Line, Text, Version

Strategy = Literal["pull", "canary", "gradual"]


class DeployIn(StrictModel):
    version: Version
    target_pop: list[Annotated[Line, Field(min_length=1, max_length=100)]] | None = Field(
        None, max_length=1000
    )
    strategy: Strategy = "pull"
    # Share the version's traffic with the one before it on every target node
    # (docs/edge.md, Traffic splitting).
    split: TrafficSplit | None = None


class RollbackIn(StrictModel):
    version: Version | None = None


class DeploymentNodeOut(BaseModel):
    node_id: str
    state: str
    message: str | None = None


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


class AckIn(StrictModel):
    """A node's answer to one instruction, as it reaches the control plane (an HTTP
    heartbeat's `acks`, or a DeploymentStatus on the stream)."""

    # An outbox row's id: an INTEGER column.
    id: JsonInt = Field(ge=1, le=INT32_MAX)
    state: AckState
    message: Text | None = Field(None, max_length=1000)
