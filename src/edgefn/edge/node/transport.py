"""What the agent's control stream needs of a transport, and the messages it carries
in neither transport's shape. `grpc_transport` (EdgeControl over HTTP/2) and
`websocket_transport` (JSON frames over a WebSocket, for networks that block HTTP/2)
implement it; the agent's session (reconnection, heartbeats, acks) is written once
against it.

    StreamError             the stream could not be opened, or was lost
    └── StreamRefused       the control plane refused this node (token, certificate)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgefn.contract import Instruction, InstructionAck, VersionStats
from edgefn.edge.node.logship import Tagged


@dataclass(frozen=True)
class Hello:
    """The first message on a stream: who the node is and what it already runs."""

    pop_id: str
    labels: dict[str, str]
    agent_version: str
    functions: list[dict[str, str]]
    # What the node loads precompiled code of (docs/engines.md, Precompiled artifacts).
    engine_tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Beat:
    """A heartbeat: liveness, load and function states (the HTTP heartbeat's body)."""

    node_id: str
    cpu: float
    mem_bytes: int
    functions: list[dict[str, str]]
    status: str = "online"
    acks: list[InstructionAck] = field(default_factory=list)
    # Per-version invocation figures, for the control plane's health gates.
    versions: list[VersionStats] = field(default_factory=list)
    # Said again on every JSON heartbeat: a node on the HTTP fallback sends no Hello.
    engine_tags: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "status": self.status, "cpu": self.cpu,
                "mem_bytes": self.mem_bytes, "functions": self.functions,
                "acks": [a.to_json() for a in self.acks],
                "versions": [v.model_dump() for v in self.versions],
                "engine_tags": self.engine_tags}


@dataclass(frozen=True)
class LogBatch:
    """Functions' log lines (`logship.Tagged`), and how many were dropped before them."""

    lines: list[Tagged]
    dropped: int = 0


Outgoing = Hello | Beat | InstructionAck | LogBatch


@dataclass(frozen=True)
class Pushed:
    """An instruction; decoded when it is applied, so one that cannot be read is
    acked as an error like one that fails."""

    ack_id: int
    decode: Callable[[], Instruction]


@dataclass(frozen=True)
class HeartbeatAnswer:
    interval_s: float


Incoming = Pushed | HeartbeatAnswer


class StreamError(Exception):
    pass


class StreamRefused(StreamError):
    pass


class Connection(Protocol):
    async def send(self, message: Outgoing) -> None:
        """Raises StreamError once the stream is gone."""

    def receive(self) -> AsyncIterator[Incoming]:
        """What the control plane sends, until it ends the stream; StreamError
        when the stream is lost or refused."""


class Transport(Protocol):
    def connect(self) -> AbstractAsyncContextManager[Connection]:
        """An open stream, closed on leaving; StreamError if it cannot be opened."""
