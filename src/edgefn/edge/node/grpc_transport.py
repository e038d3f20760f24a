"""The control stream over gRPC (EdgeControl.StreamControl): the node's token and id
in the call's metadata, its client certificate in the TLS handshake. The one place on
the node that knows the protobuf messages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import grpc
from google.protobuf.message import Message

from edgefn.contract import Instruction, InstructionAck, InstructionType, VersionStats
from edgefn.edge.node.credentials import NodeCertificate
from edgefn.edge.node.transport import (
    Beat,
    HeartbeatAnswer,
    Hello,
    Incoming,
    LogBatch,
    Outgoing,
    Pushed,
    StreamError,
    StreamRefused,
)
from edgefn.proto import edge_control_pb2 as pb
from edgefn.proto import edge_control_pb2_grpc as pb_grpc

_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
# The status grpc.aio gives a call whose write failed in the core (the CP had already
# ended the call): a local stand-in, replaced by the CP's status once grpc has read it.
_WRITE_FAILED = (grpc.StatusCode.INTERNAL, "Internal error from Core")
_STATUS_WAIT_S = 5.0


def instruction_from_proto(msg: pb.ControlMessage) -> Instruction:
    """A ControlMessage as the contract's instruction; the one place on the node that
    knows both shapes. The messages name their fields as the models do, so fields are
    read by name (a scalar left out, or zero where it has no presence, is absent and
    takes the model's default)."""
    kind = msg.WhichOneof("payload")
    if kind not in (InstructionType.DEPLOY, InstructionType.UNDEPLOY, InstructionType.CONFIG):
        raise ValueError(f"not an instruction: {kind}")
    fields = _present_fields(getattr(msg, kind))
    if kind == InstructionType.CONFIG:
        fields["quotas"] = {q.pop("project_id", ""): q for q in fields.get("quotas", ())}
    return Instruction.from_json({**fields, "id": msg.ack_id, "type": kind})


def _present_fields(msg: Message) -> dict[str, Any]:
    """The fields `msg` carries, nested messages as dicts: a scalar with presence
    that was left out is absent here, so the model gives it its default."""
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            out[fd.name] = dict(value)
        elif fd.is_repeated and fd.type == fd.TYPE_MESSAGE:
            out[fd.name] = [_present_fields(v) for v in value]
        elif fd.is_repeated:
            out[fd.name] = list(value)
        elif fd.type == fd.TYPE_MESSAGE:
            out[fd.name] = _present_fields(value)
        else:
            out[fd.name] = value
    return out


def _status(ack: InstructionAck) -> pb.DeploymentStatus:
    return pb.DeploymentStatus(ack_id=ack.id, function_id=ack.function_id, version=ack.version,
                               state=ack.state, message=ack.message)


def _functions(statuses: list[dict[str, str]]) -> list[pb.FunctionStatus]:
    return [pb.FunctionStatus(function_id=s["id"], version=s["version"], state=s["state"])
            for s in statuses]


def to_proto(node_id: str, message: Outgoing) -> pb.EdgeMessage:
    """What the agent sends, as an EdgeMessage."""
    if isinstance(message, Hello):
        return pb.EdgeMessage(node_id=node_id, hello=pb.Hello(
            pop_id=message.pop_id, labels=message.labels, agent_version=message.agent_version,
            functions=_functions(message.functions), engine_tags=message.engine_tags))
    if isinstance(message, Beat):
        return pb.EdgeMessage(node_id=node_id, heartbeat=pb.HeartbeatRequest(
            node_id=message.node_id, status=message.status, cpu_percent=message.cpu,
            mem_bytes=message.mem_bytes, functions=_functions(message.functions),
            acks=[_status(a) for a in message.acks],
            versions=[_version_stats(v) for v in message.versions]))
    if isinstance(message, LogBatch):
        return pb.EdgeMessage(node_id=node_id, logs=pb.LogBatch(
            lines=[pb.LogLine(function_id=t.function_id, project_id=t.project_id, line=t.line)
                   for t in message.lines], dropped=message.dropped))
    return pb.EdgeMessage(node_id=node_id, deployment_status=_status(message))


def _version_stats(stats: VersionStats) -> pb.VersionStats:
    return pb.VersionStats(function_id=stats.function_id, version=stats.version,
                           count=stats.count, errors=stats.errors, latency=stats.latency)


def _at_hand(awaitable: Any) -> Any:
    """The value of a coroutine that returns without waiting (a done call's status)."""
    try:
        awaitable.send(None)
    except StopIteration as stop:
        return stop.value
    awaitable.close()
    raise RuntimeError("the call's status is not at hand")


class _Status:
    """The status the CP ended a call with. When a write raced the CP's refusal, grpc
    gives the call a local INTERNAL status of its own, before or after the CP's, which
    it may thus replace: so each status is kept as the call takes it, and the CP's is
    the one reported. What the node reports must not depend on which came first."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._peer: tuple[grpc.StatusCode, str] | None = None
        call.add_done_callback(self._taken)

    def _taken(self, call: Any) -> None:
        status = _at_hand(call.code()), _at_hand(call.details())
        if status != _WRITE_FAILED:
            self._peer = status

    async def error(self) -> StreamError:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STATUS_WAIT_S
        while True:
            code, details = self._peer or (await self._call.code(), await self._call.details())
            if (code, details) != _WRITE_FAILED or loop.time() >= deadline:
                break
            await asyncio.sleep(0.01)
        kind = StreamRefused if code in _REFUSED else StreamError
        return kind(f"{code.name}: {details}")


def tls_name(target: str, cp_host: str | None = None) -> str | None:
    """The name a control plane's certificate is checked against, where gRPC would
    take a wrong one: the authority of an address list (`ipv4:a:1,b:2`, `ipv6:...`,
    every replica of a control plane) is the whole list, which no certificate names.
    Every replica's certificate names the control plane's public host (`cp_host`),
    which is used; without it, the first address's host. None: gRPC's own choice."""
    scheme, _, addresses = target.partition(":")
    if scheme not in ("ipv4", "ipv6") or not addresses:
        return None
    if cp_host:
        return cp_host
    first = addresses.split(",", 1)[0]
    if first.startswith("["):
        return first[1:].split("]", 1)[0]
    return first.rsplit(":", 1)[0] if first.count(":") == 1 else first


class GrpcTransport:
    def __init__(self, target: str, *, node_id: str, token: str,
                 tls: NodeCertificate | None = None, cp_host: str | None = None) -> None:
        self.target = target
        self.node_id = node_id
        self._metadata = (("authorization", f"Bearer {token}"), ("x-edgefn-node-id", node_id))
        self._tls = tls
        name = tls_name(target, cp_host)
        self._options = [("grpc.ssl_target_name_override", name)] if name else []

    def _channel(self) -> grpc.aio.Channel:
        if self._tls is None:
            return grpc.aio.insecure_channel(self.target)
        # Made at each connection: it presents the current (maybe renewed) certificate.
        return grpc.aio.secure_channel(self.target, self._tls.channel_credentials(),
                                       options=self._options)

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[_GrpcConnection]:
        async with self._channel() as channel:
            call = pb_grpc.EdgeControlStub(channel).StreamControl(metadata=self._metadata)
            try:
                yield _GrpcConnection(call, self.node_id)
            finally:
                call.cancel()


class _GrpcConnection:
    def __init__(self, call: Any, node_id: str) -> None:
        self._call = call
        self._node_id = node_id
        self._status = _Status(call)

    async def send(self, message: Outgoing) -> None:
        try:
            await self._call.write(to_proto(self._node_id, message))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            # A write racing the CP's refusal fails with a status of its own; what the
            # CP ended the call with is the call's.
            raise await self._status.error() from exc

    async def receive(self) -> AsyncIterator[Incoming]:
        try:
            while True:
                msg = await self._call.read()
                if msg is grpc.aio.EOF:
                    return
                if msg.WhichOneof("payload") == "heartbeat_ack":
                    yield HeartbeatAnswer(msg.heartbeat_ack.heartbeat_interval_s)
                else:
                    yield Pushed(msg.ack_id, partial(instruction_from_proto, msg))
        except grpc.aio.AioRpcError as exc:
            raise await self._status.error() from exc
