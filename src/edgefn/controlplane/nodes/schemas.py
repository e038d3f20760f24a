"""Bodies of node registration, listing, and heartbeats."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgefn.controlplane.auth.schemas import StrictModel
from edgefn.controlplane.deployments.schemas import Ack

LabelValue = str | int | float | bool


class NodeIn(StrictModel):
    id: str | None = Field(
        None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="defaults to a new UUID"
    )
    pop_id: str = Field(min_length=1, max_length=100)
    ip: str | None = Field(None, max_length=64)
    labels: dict[str, LabelValue] = Field(default_factory=dict)


class NodeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    pop_id: str
    ip: str | None
    labels: dict[str, Any]
    status: str
    last_heartbeat: dt.datetime | None
    cpu: float | None
    mem_bytes: int | None
    functions: list[dict[str, Any]]
    created_at: dt.datetime


class NodeCreated(NodeOut):
    token: str = Field(description="The node token; shown only in this response.")


class FunctionState(BaseModel):
    # Nodes may report more than we read (counters, latency); keep it, don't refuse it.
    model_config = ConfigDict(extra="allow")
    id: str
    version: str | None = None
    state: str


class HeartbeatIn(StrictModel):
    node_id: str
    status: Literal["online", "degraded", "offline"] = "online"
    cpu: float | None = Field(None, ge=0)
    mem_bytes: int | None = Field(None, ge=0)
    functions: list[FunctionState] = Field(default_factory=list)
    acks: list[Ack] = Field(default_factory=list)


class HeartbeatOut(BaseModel):
    instructions: list[dict[str, Any]]
    heartbeat_interval_s: float


class ArtifactGrant(BaseModel):
    """A fresh download URL of an artifact deployed to the node that asked."""

    function_id: str
    version: str
    sha256: str
    artifact_url: str
    expires_in: int = Field(description="Seconds the URL stays valid.")
