"""Bodies of deploy, rollback, deployments, and the heartbeat's acks."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from edgefn.controlplane.auth.schemas import StrictModel

Strategy = Literal["pull", "canary", "gradual"]


class DeployIn(StrictModel):
    version: str = Field(min_length=1, max_length=100)
    target_pop: list[str] | None = Field(None, max_length=1000)
    strategy: Strategy = "pull"


class RollbackIn(StrictModel):
    version: str | None = Field(None, min_length=1, max_length=100)


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


class Ack(StrictModel):
    id: int
    state: Literal["cached", "error"]
    message: str | None = Field(None, max_length=1000)
