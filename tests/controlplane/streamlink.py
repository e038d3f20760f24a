"""A node's control stream for tests, on either transport, through the node's own
transports (`edge/node/grpc_transport.py`, `edge/node/websocket_transport.py`): what
the distribution suite drives, so that one test runs on gRPC and on WebSocket.

`Streams(cp, transport)` reaches a CP built by `cp_factory`: gRPC on its gRPC port;
WebSocket on the node HTTPS listener under node mTLS, else on a plain HTTP server
started on the loop the CP's lifespan runs on (where its notifier wakes streams).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import uvicorn

from edgefn.contract import Instruction, InstructionAck
from edgefn.edge.node.credentials import NodeCertificate
from edgefn.edge.node.grpc_transport import GrpcTransport
from edgefn.edge.node.transport import (
    Beat,
    Connection,
    HeartbeatAnswer,
    Hello,
    Incoming,
    StreamError,
    StreamRefused,
    Transport,
)
from edgefn.edge.node.websocket_transport import WebSocketTransport
from tests.controlplane.conftest import CP

WAIT_S = 10.0  # a ceiling against hangs, not a latency check
TRANSPORTS = ["grpc", "websocket"]


class Streams:
    """Where nodes of `cp` open their streams over `transport`."""

    def __init__(self, cp: CP, transport: str) -> None:
        self.cp, self.transport = cp, transport
        self._server: uvicorn.Server | None = None

    @property
    def app(self) -> Any:
        return self.cp.client.app

    def url(self) -> str:
        """The node URL an agent is given (`--cp-url`)."""
        listener = self.app.state.node_listener
        if listener is not None:
            return f"https://127.0.0.1:{listener.port}"
        if self._server is None:
            self._server = self.cp.client.portal.call(_serve_plain, self.app)  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self._server.servers[0].sockets[0].getsockname()[1]}"

    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.app.state.grpc.port}"

    def of(self, node: dict[str, Any], tls: NodeCertificate | None = None) -> Transport:
        if self.transport == "websocket":
            return WebSocketTransport(self.url(), node_id=node["id"], token=node["token"],
                                      tls=tls)
        return GrpcTransport(self.grpc_target(), node_id=node["id"], token=node["token"], tls=tls)

    def link(self, node: dict[str, Any], tls: NodeCertificate | None = None) -> NodeLink:
        return NodeLink(self.of(node, tls), node)

    def close(self) -> None:
        server, portal = self._server, self.cp.client.portal
        if server is not None and portal is not None:
            with contextlib.suppress(RuntimeError):
                portal.call(server.shutdown)


async def _serve_plain(app: Any) -> uvicorn.Server:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None,
                            ws="websockets-sansio")
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    return server


class NodeLink:
    """One open stream of one node."""

    def __init__(self, transport: Transport, node: dict[str, Any]) -> None:
        self.transport, self.node = transport, node
        self._opened: AbstractAsyncContextManager[Connection] | None = None
        self.conn: Connection | None = None
        self._incoming: AsyncIterator[Incoming] | None = None

    async def open(self) -> NodeLink:
        self._opened = self.transport.connect()
        self.conn = await self._opened.__aenter__()
        self._incoming = aiter(self.conn.receive())
        await self.conn.send(Hello(self.node["pop_id"], {}, "test", []))
        return self

    async def next(self) -> Instruction | HeartbeatAnswer | None:
        """The next message, decoded; None once the CP ended the stream cleanly
        (StreamError when it ended it for a reason)."""
        assert self._incoming is not None
        message = await asyncio.wait_for(anext(self._incoming, None), WAIT_S)
        if message is None or isinstance(message, HeartbeatAnswer):
            return message
        return message.decode()

    async def recv(self) -> Instruction | HeartbeatAnswer:
        message = await self.next()
        assert message is not None, "the CP ended the stream"
        return message

    async def recv_kind(self, kind: str) -> Any:
        message = await self.recv()
        got = "heartbeat_ack" if isinstance(message, HeartbeatAnswer) else message.type
        assert got == kind, message
        return message

    async def ack(self, message: Instruction, state: str = "cached", text: str = "") -> None:
        assert self.conn is not None
        await self.conn.send(InstructionAck(message.id, state, text,  # type: ignore[arg-type]
                                            getattr(message, "function_id", ""),
                                            getattr(message, "version", "")))

    async def heartbeat(self) -> HeartbeatAnswer:
        """A stream heartbeat; returns its answer (after any push queued first)."""
        assert self.conn is not None
        await self.conn.send(Beat(self.node["id"], 1.0, 1 << 20, []))
        while True:
            message = await self.recv()
            if isinstance(message, HeartbeatAnswer):
                return message

    async def ended(self) -> StreamError | None:
        """Read until the CP ends the stream: None when it ended it cleanly, else the
        error it ended it with."""
        try:
            while await self.next() is not None:
                pass
        except StreamError as exc:
            return exc
        return None

    async def close(self) -> None:
        if self._opened is not None:
            with contextlib.suppress(StreamError):
                await self._opened.__aexit__(None, None, None)
            self._opened = None


async def outcome(link: NodeLink) -> StreamError | None:
    """Open the stream and read until it ends: how it ended (an error opening it too)."""
    try:
        await link.open()
        return await link.ended()
    except StreamError as exc:
        return exc
    finally:
        await link.close()


# How each transport says the CP refused the node: gRPC's status, or the HTTP status
# of the refused upgrade (401, 403) or of the close code (4401, 4403).
_REFUSALS = {"grpc": {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"},
             "websocket": {401: "401", 403: "403"}}


def refused(error: StreamError | None, transport: str, status: int) -> bool:
    """Whether the stream ended with the CP refusing the node with `status`."""
    return isinstance(error, StreamRefused) and _REFUSALS[transport][status] in str(error)


def failed_at_handshake(error: StreamError | None, transport: str) -> bool:
    """Whether the stream never opened (no TLS handshake), rather than being refused."""
    if error is None or isinstance(error, StreamRefused):
        return False
    return transport != "grpc" or "UNAVAILABLE" in str(error)
