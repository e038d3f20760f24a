"""Conversions between the outbox's JSON instructions / the heartbeat schemas and
the EdgeControl protobuf messages; the one place that knows both shapes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from edgefn.controlplane.deployments.schemas import Ack
from edgefn.controlplane.errors import ValidationFailed
from edgefn.controlplane.nodes.schemas import FunctionState, HeartbeatIn
from edgefn.edge.spec import POLICY_FIELDS
from edgefn.proto import edge_control_pb2 as pb

# Ack.message's limit: a node's long error text is cut, not refused, so one
# verbose failure cannot end its stream.
_ACK_MESSAGE_MAX = 1000


def _routes(entries: Iterable[Mapping[str, Any]]) -> list[pb.Route]:
    return [
        pb.Route(
            id=r["id"],
            host=r["host"],
            path=r["path"],
            methods=list(r["methods"]),
            priority=r["priority"],
            function_id=r["function_id"],
            project_id=r.get("project_id") or "",
        )
        for r in entries
    ]


def _policy(instruction: Mapping[str, Any]) -> pb.FunctionPolicy | None:
    """The instruction's policy fields; None for one queued before it had them,
    which the node reads as every field at its default."""
    values = {k: instruction[k] for k in POLICY_FIELDS if instruction.get(k) is not None}
    return pb.FunctionPolicy(**values) if values else None


def instruction_to_proto(instruction: Mapping[str, Any]) -> pb.ControlMessage:
    """One instruction of `pending_instructions` as a ControlMessage (ack_id = its id)."""
    kind = instruction["type"]
    ack_id = int(instruction["id"])
    if kind == "deploy":
        return pb.ControlMessage(
            ack_id=ack_id,
            deploy=pb.DeployInstruction(
                function_id=instruction["function_id"],
                project_id=instruction.get("project_id") or "",
                version=instruction["version"],
                artifact_url=instruction["artifact_url"] or "",
                sha256=instruction["sha256"],
                abi=instruction["abi"] or "",
                memory_pages=instruction["memory_pages"],
                max_execution_ms=instruction["max_execution_ms"],
                max_response_bytes=instruction["max_response_bytes"],
                env=dict(instruction["env"] or {}),
                routes=_routes(instruction["routes"] or ()),
                deployment_id=instruction["deployment_id"] or "",
                policy=_policy(instruction),
            ),
        )
    if kind == "undeploy":
        return pb.ControlMessage(
            ack_id=ack_id,
            undeploy=pb.UndeployInstruction(
                function_id=instruction["function_id"],
                deployment_id=instruction["deployment_id"] or "",
            ),
        )
    if kind == "config":
        quotas = [
            pb.ProjectQuota(project_id=pid, **{k: v for k, v in q.items() if v is not None})
            for pid, q in (instruction.get("quotas") or {}).items()
        ]
        return pb.ControlMessage(ack_id=ack_id, config=pb.ConfigUpdate(
            routes=_routes(instruction["routes"] or ()), quotas=quotas))
    raise ValueError(f"unknown instruction type {kind!r}")


def _validated(model: Any, **values: Any) -> Any:
    try:
        return model(**values)
    except ValidationError as exc:
        raise ValidationFailed(f"{model.__name__}: {exc.errors()[0]['msg']}") from exc


def ack_of(status: pb.DeploymentStatus) -> Ack:
    """A DeploymentStatus as the ack `ack_instruction` takes."""
    ack: Ack = _validated(
        Ack,
        id=status.ack_id,
        state=status.state,
        message=status.message[:_ACK_MESSAGE_MAX] or None,
    )
    return ack


def functions_of(statuses: Iterable[pb.FunctionStatus]) -> list[FunctionState]:
    return [
        _validated(
            FunctionState,
            id=f.function_id,
            version=f.version or None,
            state=f.state,
            invocation_count=f.invocation_count,
            avg_latency_ms=f.avg_latency_ms,
        )
        for f in statuses
    ]


def heartbeat_of(node_id: str, beat: pb.HeartbeatRequest) -> HeartbeatIn:
    """A HeartbeatRequest as the HTTP heartbeat's body; its node_id may be left empty."""
    body: HeartbeatIn = _validated(
        HeartbeatIn,
        node_id=beat.node_id or node_id,
        status=beat.status or "online",
        cpu=beat.cpu_percent,
        mem_bytes=beat.mem_bytes,
        functions=functions_of(beat.functions),
        acks=[ack_of(a) for a in beat.acks],
    )
    return body


def hello_as_heartbeat(node_id: str, hello: pb.Hello) -> HeartbeatIn:
    """A Hello marks the node online like a heartbeat with what it already runs."""
    body: HeartbeatIn = _validated(
        HeartbeatIn, node_id=node_id, status="online", functions=functions_of(hello.functions)
    )
    return body
