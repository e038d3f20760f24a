"""Applying control-plane instructions to the node's desired state, idempotently.

An instruction (from the gRPC stream or a heartbeat answer) becomes a new
`NodeState` written atomically to disk, which the workers load. A deploy is
applied only once its artifact is in the disk cache with the right sha256 and
compiles; otherwise the previous version keeps serving and the ack says why.
Applying the same instruction twice changes nothing the second time.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgefn.edge.cache import ArtifactCache
from edgefn.edge.errors import EdgeError
from edgefn.edge.spec import (
    POLICY_FIELDS,
    FunctionSpec,
    NodeState,
    QuotaSpec,
    RouteSpec,
    read_state,
    write_state,
)
from edgefn.sandbox.engine import Engine
from edgefn.sandbox.errors import InvalidModule

log = logging.getLogger("edgefn.edge.agent")


@dataclass(frozen=True)
class Instruction:
    """One instruction in the JSON shape of docs/api.md (the gRPC form converts to it)."""

    id: int
    type: str
    function_id: str = ""
    project_id: str = ""
    version: str = ""
    artifact_url: str = ""
    sha256: str = ""
    abi: str = ""
    memory_pages: int | None = None
    max_execution_ms: int | None = None
    max_response_bytes: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    routes: tuple[dict[str, Any], ...] = ()
    deployment_id: str = ""
    # The `FunctionPolicy` fields the instruction carries; one it leaves out (as
    # an older control plane does) keeps its default, which denies.
    policy: dict[str, Any] = field(default_factory=dict)
    # config: the project quotas the admin set, by project id (`QuotaSpec` fields).
    quotas: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Instruction:
        return cls(
            id=int(data["id"]),
            type=str(data["type"]),
            function_id=data.get("function_id") or "",
            project_id=data.get("project_id") or "",
            version=data.get("version") or "",
            artifact_url=data.get("artifact_url") or "",
            sha256=data.get("sha256") or "",
            abi=data.get("abi") or "",
            memory_pages=data.get("memory_pages"),
            max_execution_ms=data.get("max_execution_ms"),
            max_response_bytes=data.get("max_response_bytes"),
            env=dict(data.get("env") or {}),
            routes=tuple(data.get("routes") or ()),
            deployment_id=data.get("deployment_id") or "",
            policy={k: data[k] for k in POLICY_FIELDS if data.get(k) is not None},
            quotas=dict(data.get("quotas") or {}),
        )


@dataclass(frozen=True)
class Ack:
    id: int
    state: str  # cached | error
    message: str = ""
    function_id: str = ""
    version: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "state": self.state}
        if self.message:
            out["message"] = self.message
        return out


def _route(data: dict[str, Any]) -> RouteSpec:
    return RouteSpec(
        id=str(data.get("id") or ""),
        host=data.get("host") or "*",
        path=data["path"],
        methods=tuple(data.get("methods") or ()),
        priority=int(data.get("priority") or 0),
        function_id=str(data.get("function_id") or ""),
        project_id=str(data.get("project_id") or ""),
    )


class NodeController:
    """Owns the node state file; thread-safe, one instruction at a time."""

    def __init__(self, state_path: Path, cache: ArtifactCache, engine: Engine | None) -> None:
        self.state_path = state_path
        self.cache = cache
        self.engine = engine
        self._lock = threading.Lock()
        self.state = read_state(state_path) if state_path.exists() else NodeState()
        self.function_states: dict[str, tuple[str, str]] = {
            fn.id: (fn.version, "cached") for fn in self.state.functions
        }

    def apply(self, instr: Instruction) -> Ack:
        with self._lock:
            try:
                if instr.type == "deploy":
                    self._deploy(instr)
                elif instr.type == "undeploy":
                    self._undeploy(instr)
                elif instr.type == "config":
                    self._config(instr)
                else:
                    return Ack(instr.id, "error", f"unknown instruction type {instr.type!r}")
            except (EdgeError, InvalidModule, ValidationError, ValueError, KeyError) as exc:
                log.warning("instruction %s (%s %s@%s) failed: %s", instr.id, instr.type,
                            instr.function_id, instr.version, exc)
                if instr.type == "deploy":
                    self.function_states[instr.function_id] = (instr.version, "error")
                return Ack(instr.id, "error", str(exc), instr.function_id, instr.version)
            return Ack(instr.id, "cached", "", instr.function_id, instr.version)

    def _deploy(self, instr: Instruction) -> None:
        current = {fn.id: fn for fn in self.state.functions}
        existing = current.get(instr.function_id)
        limits: dict[str, Any] = {
            k: v for k, v in (
                ("memory_pages", instr.memory_pages),
                ("max_execution_ms", instr.max_execution_ms),
                ("max_response_bytes", instr.max_response_bytes),
            ) if v is not None
        }
        spec = FunctionSpec(
            id=instr.function_id,
            name=instr.function_id,
            project_id=instr.project_id,
            version=instr.version,
            abi=instr.abi if instr.abi in ("edge-v1", "wagi") else "",
            artifact_url=instr.artifact_url,
            sha256=instr.sha256,
            env=instr.env,
            **limits,
            **instr.policy,
        )
        self.function_states[spec.id] = (spec.version, "loading")
        # The artifact first: a bad one must never replace a good version.
        pinned = [(f.id, f.version) for f in self.state.functions]
        wasm = self.cache.ensure(spec.id, spec.version, spec.sha256, spec.artifact_url,
                                 pinned=pinned)
        if self.engine is not None:
            # Compile here, once per node: the workers then load machine code from disk.
            self.engine.compile(wasm, spec.limits, spec.wasi).close()
        current[spec.id] = spec
        table = list(self.state.route_table)
        if instr.routes:
            table = [r for r in table if r.function_id != spec.id]
            table += [_route({**r, "function_id": r.get("function_id") or spec.id,
                              "project_id": r.get("project_id") or spec.project_id})
                      for r in instr.routes]
        unavailable = dict(self.state.unavailable)
        unavailable.pop(spec.id, None)
        if existing == spec and tuple(table) == self.state.route_table:
            self.function_states[spec.id] = (spec.version, "cached")
            return
        self._write(functions=tuple(current.values()), route_table=tuple(table),
                    unavailable=unavailable)
        self.function_states[spec.id] = (spec.version, "cached")

    def _undeploy(self, instr: Instruction) -> None:
        functions = tuple(f for f in self.state.functions if f.id != instr.function_id)
        table = tuple(r for r in self.state.route_table if r.function_id != instr.function_id)
        self.function_states.pop(instr.function_id, None)
        if functions != self.state.functions or table != self.state.route_table:
            self._write(functions=functions, route_table=table)

    def _config(self, instr: Instruction) -> None:
        table = tuple(_route(r) for r in instr.routes)
        quotas = {pid: QuotaSpec.model_validate(q) for pid, q in instr.quotas.items()}
        if table != self.state.route_table or quotas != self.state.quotas:
            self._write(route_table=table, quotas=quotas)

    def _write(self, **changes: Any) -> None:
        state = self.state.model_copy(
            update={**changes, "generation": self.state.generation + 1}
        )
        # Validate the whole state before anything reaches the disk.
        state = NodeState.model_validate(state.model_dump())
        write_state(self.state_path, state)
        self.state = state

    def statuses(self) -> list[dict[str, str]]:
        return [{"id": fid, "version": v, "state": s}
                for fid, (v, s) in sorted(self.function_states.items())]
