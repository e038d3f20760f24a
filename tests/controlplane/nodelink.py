"""A node's side of EdgeControl for tests: a real grpc.aio client on loopback that
opens the stream, says Hello, reads pushes and answers them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from edgefn.proto import edge_control_pb2 as pb
from edgefn.proto import edge_control_pb2_grpc as pb_grpc

WAIT_S = 10.0  # a ceiling against hangs, not a latency check


def metadata(token: str | None, node_id: str | None) -> list[tuple[str, str]]:
    pairs = []
    if token is not None:
        pairs.append(("authorization", f"Bearer {token}"))
    if node_id is not None:
        pairs.append(("x-edgefn-node-id", node_id))
    return pairs


class NodeLink:
    """One open StreamControl call of one node."""

    def __init__(
        self, target: str, node: dict[str, Any], credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.node = node
        self.channel = (
            grpc.aio.insecure_channel(target)
            if credentials is None
            else grpc.aio.secure_channel(target, credentials)
        )
        self.stub = pb_grpc.EdgeControlStub(self.channel)
        self.call: Any = None

    async def open(self, **hello: Any) -> NodeLink:
        self.call = self.stub.StreamControl(metadata=metadata(self.node["token"], self.node["id"]))
        await self.send(hello=pb.Hello(pop_id=self.node["pop_id"], **hello))
        return self

    async def send(self, **payload: Any) -> None:
        await self.call.write(pb.EdgeMessage(node_id=self.node["id"], **payload))

    async def recv(self) -> pb.ControlMessage:
        message = await asyncio.wait_for(self.call.read(), WAIT_S)
        assert message is not grpc.aio.EOF, "the CP ended the stream"
        return message  # type: ignore[no-any-return]

    async def recv_kind(self, kind: str) -> pb.ControlMessage:
        message = await self.recv()
        assert message.WhichOneof("payload") == kind, message
        return message

    async def ack(self, message: pb.ControlMessage, state: str = "cached", text: str = "") -> None:
        status = pb.DeploymentStatus(ack_id=message.ack_id, state=state, message=text)
        if message.WhichOneof("payload") == "deploy":
            status.function_id = message.deploy.function_id
            status.version = message.deploy.version
        await self.send(deployment_status=status)

    async def heartbeat(self, **fields: Any) -> pb.ControlMessage:
        """A stream heartbeat; returns its heartbeat_ack (after any push queued first)."""
        await self.send(heartbeat=pb.HeartbeatRequest(node_id=self.node["id"], **fields))
        while True:
            message = await self.recv()
            if message.WhichOneof("payload") == "heartbeat_ack":
                return message

    async def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
        await self.channel.close()


class AckingNode:
    """A node on its own thread and loop that acks every instruction `cached`, the
    way an edge agent that caches everything would."""

    def __init__(self, target: str, node: dict[str, Any]) -> None:
        self.target, self.node = target, node
        self.received: list[pb.ControlMessage] = []
        self.ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._run(),))
        self._stop: asyncio.Event | None = None

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        link = await NodeLink(self.target, self.node).open()
        self.ready.set()
        reader = asyncio.ensure_future(self._ack_all(link))
        await self._stop.wait()
        reader.cancel()
        await link.close()

    async def _ack_all(self, link: NodeLink) -> None:
        while True:
            message = await link.call.read()
            if message is grpc.aio.EOF:
                return
            self.received.append(message)
            if message.ack_id:
                await link.ack(message)

    @contextmanager
    def running(self) -> Iterator[AckingNode]:
        self._thread.start()
        assert self.ready.wait(WAIT_S), "the node did not connect"
        try:
            yield self
        finally:
            stop = self._stop
            assert stop is not None
            self._loop.call_soon_threadsafe(stop.set)
            self._thread.join(WAIT_S)
            self._loop.close()
