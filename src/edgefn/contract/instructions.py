"""The instructions the control plane queues for a node and the node's answer to each.

One model per kind, policy nested and routes typed. Their JSON form (the model's
dump) is what the outbox stores and the HTTP heartbeat hands out: flat, the policy's
fields beside the others (docs/api.md, Instructions), so nodes and control planes of
different releases keep reading each other. The gRPC form is converted in exactly two
places: `controlplane/stream/messages.py` and `edge/node/grpc_transport.py`; the WebSocket
stream carries the JSON form.

Every kind has the one JSON shape, null where a kind has no such field. Reading is
lenient where releases differ: a null field is a field left out, a policy
left out is every policy field at its default (which denies), and keys a reader does
not know are ignored. An instruction of an unknown type reads as the bare
`Instruction`, which a node answers with an error ack.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import (
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from edgefn.contract._base import Record
from edgefn.contract.data import DataArchive
from edgefn.contract.limits import (
    DEFAULT_MAX_EXECUTION_MS,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MEMORY_PAGES,
    ExecutionMs,
    MemoryPages,
    QuotaSpec,
    ResponseBytes,
)
from edgefn.contract.policy import POLICY_FIELDS, FunctionPolicy
from edgefn.contract.routes import RouteSpec
from edgefn.contract.split import TrafficSplit


class InstructionType(StrEnum):
    DEPLOY = "deploy"
    UNDEPLOY = "undeploy"
    CONFIG = "config"


class AckState(StrEnum):
    """How a node answers an instruction: applied (`cached`) or not (`error`)."""

    CACHED = "cached"
    ERROR = "error"


class LoadState(StrEnum):
    """What a node reports of each function it was told to run (its heartbeat's
    `functions`): being fetched and compiled, ready, or refused."""

    LOADING = "loading"
    CACHED = "cached"
    ERROR = "error"


class TraceContext(Record):
    """The W3C trace context (`traceparent`, `tracestate` header values) of the
    control-plane span that queued an instruction: a node that traces makes its
    spans of applying it children of that span; one that does not ignores it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    traceparent: str = Field(max_length=512)
    tracestate: str = Field(default="", max_length=512)


class PrecompiledCode(Record):
    """The version compiled ahead for one engine tag (docs/engines.md, Precompiled
    artifacts): a node whose engine has this tag may load it, after checking its
    sha256, instead of compiling the `.wasm`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    engine_tag: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    # Minted when the instruction is handed out, like `artifact_url`.
    url: str = Field(min_length=1, max_length=4096)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Instruction(Record):
    """What every instruction has: `id`, its outbox row (the ack id; 0 before it is
    stored), `type`, and the trace it belongs to, if any."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    KINDS: ClassVar[dict[str, type[Instruction]]] = {}

    id: int = 0
    type: str
    trace_context: TraceContext | None = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        kind = cls.model_fields["type"].default
        if isinstance(kind, InstructionType):
            Instruction.KINDS[kind] = cls

    @model_validator(mode="before")
    @classmethod
    def _nulls_left_out(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @model_serializer(mode="wrap")
    def _json_form(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Every kind in the one shape of docs/api.md: a deploy's keys, the policy's
        fields flat among them, null (`env` and `routes` empty) where a kind has none.
        `trace_context` is the exception: left out unless the instruction is traced."""
        out: dict[str, Any] = handler(self)
        if out.get("trace_context") is None:
            out.pop("trace_context", None)
        policy = out.pop("policy", None)
        head = {k: out.pop(k) for k in ("id", "type") if k in out}
        return {**head, **_BLANK, **out, **(policy or {})}

    @classmethod
    def from_json(cls, data: Any) -> Instruction:
        """The instruction `data` (its JSON form) holds, of the model its `type` names."""
        if not isinstance(data, dict):
            raise ValueError(f"an instruction is an object, not a {type(data).__name__}")
        kind = cls.KINDS.get(str(data.get("type")), Instruction)
        return kind.model_validate(data)


class DeployInstruction(Instruction):
    """Run this version of a function with these settings, serving these routes."""

    type: Literal[InstructionType.DEPLOY] = InstructionType.DEPLOY
    function_id: str
    # The function's project: its tenant for routes, quotas, logs and metrics.
    project_id: str = ""
    version: str
    # Minted when the instruction is handed out (a signed URL expires).
    artifact_url: str = ""
    sha256: str
    abi: str = ""
    # The export a WAGI program's routes call; "" the ABI's default (docs/wagi.md).
    entrypoint: str = ""
    memory_pages: MemoryPages = DEFAULT_MEMORY_PAGES
    max_execution_ms: ExecutionMs = DEFAULT_MAX_EXECUTION_MS
    max_response_bytes: ResponseBytes = DEFAULT_MAX_RESPONSE_BYTES
    env: dict[str, str] = {}
    routes: tuple[RouteSpec, ...] = ()
    deployment_id: str | None = None
    # None: the instruction carries no policy (a control plane older than policies),
    # which a node reads as every field at its default.
    policy: FunctionPolicy | None = None
    # None: no split, the version serves every request (nodes of releases before
    # splits ignore the field, and serve it so).
    split: TrafficSplit | None = None
    # The version compiled ahead, for the node's engine tags; empty: the node compiles
    # the `.wasm` (as nodes of releases before precompiled artifacts always do).
    precompiled: tuple[PrecompiledCode, ...] = ()
    # The version's data archive, mounted read-only (docs/wagi.md, Volumes); None:
    # no files (as nodes of releases before data archives read every deploy).
    data: DataArchive | None = None

    def precompiled_for(self, tag: str) -> PrecompiledCode | None:
        """The code compiled for an engine of `tag`, if the instruction carries any."""
        return next((p for p in self.precompiled if tag and p.engine_tag == tag), None)

    @model_validator(mode="before")
    @classmethod
    def _nest_policy(cls, data: Any) -> Any:
        """The JSON form holds the policy's fields flat; a dict with `policy` is nested."""
        if not isinstance(data, dict) or "policy" in data:
            return data
        policy = {k: data[k] for k in POLICY_FIELDS if data.get(k) is not None}
        rest = {k: v for k, v in data.items() if k not in POLICY_FIELDS}
        return {**rest, "policy": policy or None}


# What the JSON form of an instruction holds where its kind has no such field.
_BLANK: dict[str, Any] = {
    **dict.fromkeys(k for k in DeployInstruction.model_fields
                    if k not in ("id", "type", "policy", "trace_context")),
    **dict.fromkeys(POLICY_FIELDS),
    "env": {},
    "routes": [],
    "precompiled": [],
}


class UndeployInstruction(Instruction):
    """Stop running the function and drop its routes."""

    type: Literal[InstructionType.UNDEPLOY] = InstructionType.UNDEPLOY
    function_id: str
    deployment_id: str | None = None


class ConfigInstruction(Instruction):
    """The node's whole route table and every quota the admin set; replaces both."""

    type: Literal[InstructionType.CONFIG] = InstructionType.CONFIG
    routes: tuple[RouteSpec, ...] = ()
    # By project id; a project left out gets the node's defaults.
    quotas: dict[str, QuotaSpec] = {}


@dataclass(frozen=True)
class InstructionAck:
    """A node's answer to instruction `id`; `message` says why when it is an error."""

    id: int
    state: AckState
    message: str = ""
    function_id: str = ""
    version: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "state": str(self.state)}
        if self.message:
            out["message"] = self.message
        return out
