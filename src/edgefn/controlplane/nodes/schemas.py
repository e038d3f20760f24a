"""Bodies of node registration, listing, and heartbeats."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

from edgefn.contract import VersionStats, json_integer
from edgefn.controlplane.auth.schemas import StrictModel
from edgefn.controlplane.deployments.schemas import AckIn
from edgefn.controlplane.fields import JSON_INT_MAX, ONLY_PATTERN_KEYS, Id, Line, Scalar, pattern

# A label's name is a NAME of the pop_selector grammar, so a selector can test it.
LabelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=pattern(
            r"^[A-Za-z_][A-Za-z0-9_./-]*$", "a selector name (`[A-Za-z_][A-Za-z0-9_./-]*`)"
        ),
    ),
]
# What a node may report about a function beyond id, version and state (counters).
Extra = Scalar | None
MemBytes = Annotated[int, Field(ge=0, le=JSON_INT_MAX), BeforeValidator(json_integer)]
MAX_FUNCTIONS = 10_000
# A PEM CSR of an EC or RSA (up to 8192 bits) key.
Csr = Annotated[str, Field(min_length=1, max_length=16_384)]
_MAX_FIELDS = 20
MAX_ENGINE_TAGS = 8
EngineTag = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]


class NodeIn(StrictModel):
    id: str | None = Field(
        None,
        pattern=pattern(r"^[a-z0-9][a-z0-9-]{0,62}$", "1..63 lower-case letters, digits and `-`"),
        description="defaults to a new UUID",
    )
    pop_id: Line = Field(min_length=1, max_length=100)
    ip: Line | None = Field(None, max_length=64)
    labels: dict[LabelName, Scalar] = Field(
        default_factory=dict, max_length=100, json_schema_extra=ONLY_PATTERN_KEYS
    )
    csr: Csr | None = Field(
        None, description="The node's certificate signing request (PEM): the answer "
        "carries a client certificate for the node id on its key."
    )


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
    engine_tags: list[str] | None = Field(
        None, description="The engine tags the node loads compiled code of "
        "(docs/engines.md, Precompiled artifacts); null until it reports them.")
    created_at: dt.datetime


class NodeCreated(NodeOut):
    token: str = Field(description="The node token; shown only in this response.")
    certificate: str | None = Field(
        None, description="The node's client certificate (PEM), when a csr was sent."
    )
    ca_certificate: str | None = Field(
        None, description="The node CA (PEM): what the node trusts the CP's ports with."
    )


class CertificateIn(StrictModel):
    csr: Csr


class CertificateOut(BaseModel):
    certificate: str = Field(description="The node's client certificate (PEM).")
    ca_certificate: str = Field(description="The node CA (PEM).")
    serial: str
    not_after: dt.datetime


class FunctionState(BaseModel):
    # Nodes may report more than we read (counters, latency); keep it, don't
    # refuse it, as long as it is a few scalars the API can show again.
    model_config = ConfigDict(
        extra="allow", allow_inf_nan=False, json_schema_extra={"maxProperties": _MAX_FIELDS}
    )
    __pydantic_extra__: dict[str, Extra] = Field(init=False)
    id: Line = Field(min_length=1, max_length=100)
    version: Line | None = Field(None, max_length=100)
    state: Line = Field(max_length=32)

    @model_validator(mode="before")
    @classmethod
    def _few_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) > _MAX_FIELDS:
            raise ValueError(f"at most {_MAX_FIELDS} fields")
        return data


class HeartbeatIn(StrictModel):
    node_id: Id
    status: Literal["online", "degraded", "offline"] = "online"
    cpu: Annotated[float, Strict()] | None = Field(None, ge=0, le=1e6)
    mem_bytes: (
        Annotated[int, Field(ge=0, le=JSON_INT_MAX), BeforeValidator(json_integer)] | None
    ) = None
    functions: list[FunctionState] = Field(default_factory=list, max_length=MAX_FUNCTIONS)
    acks: list[AckIn] = Field(default_factory=list, max_length=MAX_FUNCTIONS)
    # Invocation figures per function version, for rollouts' health gates.
    versions: list[VersionStats] = Field(default_factory=list, max_length=MAX_FUNCTIONS)
    # The engine tags the node loads precompiled code of; None: not said (kept as it was).
    engine_tags: list[EngineTag] | None = Field(None, max_length=MAX_ENGINE_TAGS)


class HeartbeatOut(BaseModel):
    instructions: list[dict[str, Any]]
    heartbeat_interval_s: float


class ArtifactGrant(BaseModel):
    """A fresh download URL of an artifact deployed to the node that asked."""

    function_id: str
    version: str
    sha256: str
    artifact_url: str
    # The version's data archive (docs/wagi.md), fresh too; null without one.
    data_url: str | None = None
    expires_in: int = Field(description="Seconds the URL stays valid.")
