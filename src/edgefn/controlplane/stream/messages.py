"""Conversions between the session's messages (`session`: the contract's instructions,
the heartbeat schemas) and the EdgeControl protobuf messages; the one place on the
control plane that knows both shapes. The messages name their fields as the contract's
models do, so an instruction converts field by field without listing them
(tests/contract/test_instructions.py checks that the names agree)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from edgefn.contract import ConfigInstruction, Instruction, InstructionType
from edgefn.controlplane.deployments.schemas import AckIn
from edgefn.controlplane.logs.hub import LogLine
from edgefn.controlplane.nodes.schemas import FunctionState, HeartbeatIn
from edgefn.controlplane.stream.events import (
    Ack,
    Beat,
    HeartbeatAnswer,
    Hello,
    Logs,
    Metrics,
    NodeEvent,
    Outgoing,
    ack_in,
    validated,
)
from edgefn.proto import edge_control_pb2 as pb

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


def to_proto(out: Outgoing) -> pb.ControlMessage:
    """What the session sends, as a ControlMessage."""
    if isinstance(out, HeartbeatAnswer):
        return pb.ControlMessage(
            heartbeat_ack=pb.HeartbeatAck(heartbeat_interval_s=out.interval_s))
    return instruction_to_proto(out)


def ack_of(status: pb.DeploymentStatus) -> AckIn:
    """A DeploymentStatus as the ack `ack_instruction` takes."""
    return ack_in(status.ack_id, status.state, status.message)


def functions_of(statuses: Iterable[pb.FunctionStatus]) -> list[FunctionState]:
    return [
        validated(
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
    body: HeartbeatIn = validated(
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


def event_of(node_id: str, message: pb.EdgeMessage) -> NodeEvent | None:
    """An EdgeMessage of node `node_id`'s stream as the session's event; None for one
    without a payload this release knows."""
    said = message.node_id
    kind = message.WhichOneof("payload")
    if kind == "hello":
        hello = validated(HeartbeatIn, node_id=node_id, status="online",
                          functions=functions_of(message.hello.functions),
                          engine_tags=list(message.hello.engine_tags))
        return Hello(said, hello)
    if kind == "heartbeat":
        return Beat(said, heartbeat_of(node_id, message.heartbeat))
    if kind == "deployment_status":
        return Ack(said, ack_of(message.deployment_status))
    if kind == "logs":
        batch = message.logs
        return Logs(said, [LogLine(t.function_id, t.project_id, t.line) for t in batch.lines],
                    batch.dropped)
    if kind == "metrics":
        report = message.metrics
        return Metrics(said, validated(HeartbeatIn, node_id=node_id, cpu=report.cpu_percent,
                                       mem_bytes=report.mem_bytes,
                                       functions=functions_of(report.functions)))
    return None


async def events_of(node_id: str, messages: AsyncIterator[pb.EdgeMessage]) -> AsyncIterator[
    NodeEvent
]:
    async for message in messages:
        event = event_of(node_id, message)
        if event is not None:
            yield event


def versions_of(stats: pb.VersionStats) -> dict[str, Any]:
    return {"function_id": stats.function_id, "version": stats.version, "count": stats.count,
            "errors": dict(stats.errors), "latency": list(stats.latency)}
