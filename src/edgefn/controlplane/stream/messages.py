"""Conversions between the contract's instructions / the heartbeat schemas and the
EdgeControl protobuf messages; the one place on the control plane that knows both
shapes. The messages name their fields as the contract's models do, so an
instruction converts field by field without listing them
(tests/contract/test_instructions.py checks that the names agree)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from edgefn.contract import ConfigInstruction, Instruction, InstructionType
from edgefn.controlplane.deployments.schemas import AckIn
from edgefn.controlplane.errors import ValidationFailed
from edgefn.controlplane.nodes.schemas import FunctionState, HeartbeatIn
from edgefn.proto import edge_control_pb2 as pb

# AckIn.message's limit: a node's long error text is cut, not refused, so one
# verbose failure cannot end its stream.
_ACK_MESSAGE_MAX = 1000
# Each kind's message, under the ControlMessage field of the kind's name.
MESSAGES: Mapping[str, Any] = {
    InstructionType.DEPLOY: pb.DeployInstruction,
    InstructionType.UNDEPLOY: pb.UndeployInstruction,
    InstructionType.CONFIG: pb.ConfigUpdate,
}


def _wire(value: Any) -> Any:
    """A field's value as a protobuf constructor takes it: records as dicts, tuples as
    lists; None is a field left out."""
    if isinstance(value, BaseModel):
        return {k: _wire(v) for k, v in value if v is not None}
    if isinstance(value, tuple):
        return [_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    return value


def instruction_to_proto(instruction: Instruction) -> pb.ControlMessage:
    """One instruction as a ControlMessage (ack_id = its id); a ValueError or
    TypeError for one the protobuf encoding cannot carry."""
    message = MESSAGES.get(instruction.type)
    if message is None:
        raise ValueError(f"unknown instruction type {instruction.type!r}")
    kind = str(instruction.type)
    fields = _wire(instruction)
    del fields["id"], fields["type"]
    if isinstance(instruction, ConfigInstruction):
        fields["quotas"] = [{"project_id": pid, **q} for pid, q in fields["quotas"].items()]
    return pb.ControlMessage(ack_id=instruction.id, **{kind: message(**fields)})


def _validated(model: Any, **values: Any) -> Any:
    try:
        return model(**values)
    except ValidationError as exc:
        raise ValidationFailed(f"{model.__name__}: {exc.errors()[0]['msg']}") from exc


def ack_of(status: pb.DeploymentStatus) -> AckIn:
    """A DeploymentStatus as the ack `ack_instruction` takes."""
    ack: AckIn = _validated(
        AckIn,
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
        versions=[versions_of(v) for v in beat.versions],
    )
    return body


def versions_of(stats: pb.VersionStats) -> dict[str, Any]:
    return {"function_id": stats.function_id, "version": stats.version, "count": stats.count,
            "errors": dict(stats.errors), "latency": list(stats.latency)}


def hello_as_heartbeat(node_id: str, hello: pb.Hello) -> HeartbeatIn:
    """A Hello marks the node online like a heartbeat with what it already runs."""
    body: HeartbeatIn = _validated(
        HeartbeatIn, node_id=node_id, status="online", functions=functions_of(hello.functions)
    )
    return body
