"""What an edge node runs: function specs (`function.json`) and the node state.

A `function.json` in a functions directory and a deploy instruction from the
control plane both become a `FunctionSpec`, the contract's policy with the node's
view of one function version flattened beside it (the workers read
`spec.memory_pages`, `spec.kv`); the node's whole desired state is a `NodeState`,
persisted as JSON so the node restarts from disk alone.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from edgefn.atomicfile import write_atomic
from edgefn.contract import (
    DataArchive,
    DeployInstruction,
    ExecutionMs,
    FunctionPolicy,
    MemoryPages,
    QuotaSpec,
    ResponseBytes,
    RouteSpec,
    TrafficSplit,
)
from edgefn.contract._base import Record
from edgefn.sandbox.engine import (
    DEFAULT_MAX_EXECUTION_MS,
    DEFAULT_MAX_HTTP_RESPONSES,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MEMORY_PAGES,
    Limits,
    WasiOptions,
)

# The spec and the state, and the contract's records they are made of.
__all__ = [
    "FunctionSpec",
    "NodeState",
    "QuotaSpec",
    "RouteSpec",
    "SpecKey",
    "SplitState",
    "load_function_dir",
    "read_state",
    "write_state",
]

# What identifies a loaded function: (id, version, sha256, digest of its settings).
SpecKey = tuple[str, str, str, str]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
ABIS = ("edge-v1", "wagi")


class FunctionSpec(FunctionPolicy):
    """One deployable function version and everything the node needs to run it
    (its policy fields are inherited from `FunctionPolicy`)."""

    id: str
    name: str = ""
    # The tenant whose routes, quotas, logs and metrics this function counts in;
    # "" for a function served from a local directory without one.
    project_id: str = ""
    version: str = "0.0.0"
    entrypoint: str = "handle"
    abi: Literal["edge-v1", "wagi", ""] = ""
    artifact: str = ""
    artifact_url: str = ""
    sha256: str = ""
    memory_pages: MemoryPages = DEFAULT_MEMORY_PAGES
    max_execution_ms: ExecutionMs = DEFAULT_MAX_EXECUTION_MS
    max_response_bytes: ResponseBytes = DEFAULT_MAX_RESPONSE_BYTES
    pop_selector: str = ""
    env: dict[str, str] = Field(default_factory=dict)
    # Host directory mounted read-only at /config (a path on this node).
    config_dir: str | None = None
    # WAGI: read-only volumes, guest path -> host directory (paths on this node): from
    # a functions directory or a module map, or, for a deploy, the directories of its
    # data archive the node unpacked itself. An instruction never names one.
    volumes: dict[str, str] = Field(default_factory=dict)
    # The deploy's data archive (docs/wagi.md, Volumes), whose directories the node
    # unpacks and puts in `volumes`.
    data: DataArchive | None = None
    # WAGI's `http_max_concurrency`: responses of `wasi_experimental_http` one
    # invocation may hold open at once; None: the node's default.
    http_max_concurrency: int | None = Field(default=None, ge=1, le=1024)
    routes: tuple[RouteSpec, ...] = ()

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.fullmatch(v):
            raise ValueError(f"invalid function id {v!r}")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        v = v.lower()
        if v and not _SHA256.fullmatch(v):
            raise ValueError("sha256 must be 64 hex digits")
        return v

    @classmethod
    def of(cls, instr: DeployInstruction) -> FunctionSpec:
        """The function a deploy instruction asks the node to run (its routes go to the
        node's route table, not to the spec)."""
        return cls(
            **dict(instr.policy or FunctionPolicy()),
            id=instr.function_id,
            name=instr.function_id,
            project_id=instr.project_id,
            version=instr.version,
            abi=instr.abi if instr.abi in ABIS else "",
            entrypoint=instr.entrypoint or "handle",
            artifact_url=instr.artifact_url,
            sha256=instr.sha256,
            env=instr.env,
            memory_pages=instr.memory_pages,
            max_execution_ms=instr.max_execution_ms,
            max_response_bytes=instr.max_response_bytes,
            data=instr.data,
        )

    @property
    def limits(self) -> Limits:
        return Limits(
            memory_pages=self.memory_pages,
            max_execution_ms=self.max_execution_ms,
            max_response_bytes=self.max_response_bytes,
            max_http_responses=self.http_max_concurrency or DEFAULT_MAX_HTTP_RESPONSES,
        )

    @property
    def wasi(self) -> WasiOptions:
        return WasiOptions(env=tuple(sorted(self.env.items())), config_dir=self.config_dir,
                           volumes=tuple(sorted(self.volumes.items())))

    @property
    def key(self) -> SpecKey:
        """What identifies a loaded function: its module (id, version, sha256) and a
        digest of every setting it runs with, so the same version deployed again
        with a new policy, env or limit is loaded afresh. Routes are left out: they
        do not change how it runs. A few microseconds (a serialization): callers
        compute it once per state, never per request."""
        settings = self.model_dump_json(exclude={"routes"}).encode()
        return (self.id, self.version, self.sha256, hashlib.sha256(settings).hexdigest())


class SplitState(TrafficSplit):
    """A function's traffic split on the node: `percent` of its requests to the version
    in `NodeState.functions`, the others to `previous`, the version before it."""

    previous: FunctionSpec


class NodeState(Record):
    """The node's desired state: functions with their local artifacts, and routes."""

    generation: int = 0
    functions: tuple[FunctionSpec, ...] = ()
    # The node's route table from the control plane (each route names its function);
    # functions from a local directory carry their own routes instead.
    route_table: tuple[RouteSpec, ...] = ()
    # Functions known to the node but not runnable (yet): routes to them answer 503.
    unavailable: dict[str, str] = Field(default_factory=dict)
    # Quotas the control plane set, by project id; other projects get the node's defaults.
    quotas: dict[str, QuotaSpec] = Field(default_factory=dict)
    # Functions whose traffic is split with their previous version, by function id.
    splits: dict[str, SplitState] = Field(default_factory=dict)

    def specs(self) -> list[FunctionSpec]:
        """Every version the node runs: the functions, and the previous versions their
        splits keep serving."""
        return [*self.functions, *(s.previous for s in self.splits.values())]

    def routes(self) -> list[RouteSpec]:
        out = list(self.route_table)
        for fn in self.functions:
            for r in fn.routes:
                # A function's own routes are its project's, whatever they say.
                update = {"function_id": r.function_id or fn.id, "project_id": fn.project_id}
                out.append(r.model_copy(update=update))
        return out


def load_function_dir(path: Path) -> FunctionSpec:
    """Read `function.json` from a function's folder; the artifact path becomes absolute."""
    manifest = path / "function.json"
    try:
        raw = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{manifest}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{manifest}: expected a JSON object")
    artifact = raw.get("artifact") or next((p.name for p in sorted(path.glob("*.wasm"))), "")
    if not artifact:
        raise ValueError(f"{path}: no artifact named and no .wasm file found")
    raw["artifact"] = str((path / artifact).resolve())
    # A volume's relative host directory is the function folder's.
    if isinstance(raw.get("volumes"), dict):
        raw["volumes"] = {guest: str((path / host).resolve()) if isinstance(host, str) else host
                          for guest, host in raw["volumes"].items()}
    raw.setdefault("id", path.name)
    raw.setdefault("name", raw["id"])
    return FunctionSpec.model_validate(raw)


def write_state(path: Path, state: NodeState) -> None:
    """Atomic replace: readers see the old file or the new one, never half of one."""
    write_atomic(path, [state.model_dump_json(indent=1).encode()])


def read_state(path: Path) -> NodeState:
    return NodeState.model_validate_json(path.read_bytes())
