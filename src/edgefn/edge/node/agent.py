"""The edge node's link to the control plane: a gRPC stream, with HTTP heartbeats as fallback.

The agent runs in the node's main process on a thread with its own event loop.
While the stream is up, instructions arrive the moment the control plane records
them, and each is acknowledged on the stream once applied. While it is down, the
agent reconnects with exponential backoff and jitter (capped at 30 s) and sends
heartbeats by HTTP, whose answers carry the pending instructions, so a node
behind a proxy that blocks gRPC still converges. Acks that could not be sent are
kept and go out with the next message, on whichever channel is up.

It also keeps the node's artifacts whole: at start it verifies every cached
artifact the state names, then checks every few seconds that none went missing
(a worker deletes a corrupt one when it finds it), and fetches what is gone
through a fresh URL that the control plane signs for this node
(`GET /api/v1/nodes/{id}/artifacts/{function}/{version}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import grpc
import httpx
import psutil
from google.protobuf.message import Message

from edgefn import __version__
from edgefn.edge.errors import ArtifactError
from edgefn.edge.node.controller import Ack, Instruction, NodeController
from edgefn.proto import edge_control_pb2 as pb
from edgefn.proto import edge_control_pb2_grpc as pb_grpc

log = logging.getLogger("edgefn.edge.node.agent")

BACKOFF_START_S = 0.2
BACKOFF_CAP_S = 30.0
# How often the agent checks that every artifact of the state is still in the cache.
REPAIR_INTERVAL_S = 2.0


def instruction_from_proto(msg: pb.ControlMessage) -> Instruction:
    kind = msg.WhichOneof("payload")
    if kind == "deploy":
        d = msg.deploy
        return Instruction(
            id=msg.ack_id, type="deploy", function_id=d.function_id,
            project_id=d.project_id, version=d.version,
            artifact_url=d.artifact_url, sha256=d.sha256, abi=d.abi,
            memory_pages=d.memory_pages or None, max_execution_ms=d.max_execution_ms or None,
            max_response_bytes=d.max_response_bytes or None, env=dict(d.env),
            routes=tuple(_route_dict(r) for r in d.routes), deployment_id=d.deployment_id,
            policy=_present_fields(d.policy),
        )
    if kind == "undeploy":
        return Instruction(id=msg.ack_id, type="undeploy", function_id=msg.undeploy.function_id,
                           deployment_id=msg.undeploy.deployment_id)
    if kind == "config":
        return Instruction(id=msg.ack_id, type="config",
                           routes=tuple(_route_dict(r) for r in msg.config.routes),
                           quotas={q.project_id: _quota_dict(q) for q in msg.config.quotas})
    raise ValueError(f"not an instruction: {kind}")


def _route_dict(r: pb.Route) -> dict[str, Any]:
    return {"id": r.id, "host": r.host, "path": r.path, "methods": list(r.methods),
            "priority": r.priority, "function_id": r.function_id, "project_id": r.project_id}


def _quota_dict(q: pb.ProjectQuota) -> dict[str, Any]:
    fields = _present_fields(q)
    fields.pop("project_id", None)
    return fields


def _present_fields(msg: Message) -> dict[str, Any]:
    """The fields `msg` carries, nested messages as dicts: a scalar with presence
    that was left out is absent here, so the spec gives it its default."""
    out: dict[str, Any] = {}
    for fd, value in msg.ListFields():
        if fd.is_repeated:
            out[fd.name] = list(value)
        elif fd.type == fd.TYPE_MESSAGE:
            out[fd.name] = _present_fields(value)
        else:
            out[fd.name] = value
    return out


def backoff_delays(start: float = BACKOFF_START_S, cap: float = BACKOFF_CAP_S) -> Any:
    """Exponential backoff with full jitter: uniform(0, min(cap, start * 2**n))."""
    n = 0
    while True:
        yield random.uniform(0, min(cap, start * 2**n))
        n += 1


class Agent:
    def __init__(
        self,
        controller: NodeController,
        *,
        node_id: str,
        token: str,
        cp_url: str,
        grpc_url: str,
        pop_id: str = "",
        labels: dict[str, str] | None = None,
        heartbeat_interval_s: float = 30.0,
        repair_interval_s: float = REPAIR_INTERVAL_S,
    ) -> None:
        self.controller = controller
        self.node_id = node_id
        self.cp_url = cp_url.rstrip("/")
        self.grpc_url = grpc_url
        self.pop_id = pop_id
        self.labels = labels or {}
        self.heartbeat_interval_s = heartbeat_interval_s
        self.repair_interval_s = repair_interval_s
        self._metadata = (("authorization", f"Bearer {token}"), ("x-edgefn-node-id", node_id))
        self._token = token
        self._unsent: list[Ack] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="edgefn-agent", daemon=True)
        self._stopping: asyncio.Event | None = None
        self.stream_connected = threading.Event()
        self._proc = psutil.Process()
        if self.cp_url:
            controller.fresh_url = self.fresh_artifact_url

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        stream = asyncio.create_task(self._stream_forever())
        http = asyncio.create_task(self._http_heartbeats())
        repair = asyncio.create_task(self._repair_forever())
        await self._stopping.wait()
        for task in (stream, http, repair):
            task.cancel()
        for task in (stream, http, repair):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- the stream -----------------------------------------------------------
    async def _stream_forever(self) -> None:
        delays = backoff_delays()
        while True:
            try:
                await self._stream_once()
                delays = backoff_delays()  # a clean end: the CP closed it; start over
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    log.error("control plane refused this node: %s", exc.details())
                else:
                    log.info("control stream down: %s", code.name)
            except Exception:
                log.exception("control stream failed")
            self.stream_connected.clear()
            delay = next(delays)
            await asyncio.sleep(delay)

    async def _stream_once(self) -> None:
        outbox: asyncio.Queue[pb.EdgeMessage] = asyncio.Queue()
        for ack in self._take_unsent():
            await outbox.put(self._status_message(ack))
        async with grpc.aio.insecure_channel(self.grpc_url) as channel:
            stub = pb_grpc.EdgeControlStub(channel)
            call = stub.StreamControl(self._requests(outbox), metadata=self._metadata)
            beats = asyncio.create_task(self._stream_heartbeats(outbox))
            try:
                async for msg in call:
                    self.stream_connected.set()
                    kind = msg.WhichOneof("payload")
                    if kind == "heartbeat_ack":
                        if msg.heartbeat_ack.heartbeat_interval_s > 0:
                            self.heartbeat_interval_s = msg.heartbeat_ack.heartbeat_interval_s
                        continue
                    ack = await self._apply(msg.ack_id, partial(instruction_from_proto, msg))
                    await outbox.put(self._status_message(ack))
            finally:
                beats.cancel()
                # Whatever did not leave with the stream goes with the next message.
                while not outbox.empty():
                    item = outbox.get_nowait()
                    if item.WhichOneof("payload") == "deployment_status":
                        s = item.deployment_status
                        self._unsent.append(Ack(s.ack_id, s.state, s.message))

    async def _requests(self, outbox: asyncio.Queue[pb.EdgeMessage]) -> AsyncIterator[
        pb.EdgeMessage
    ]:
        yield pb.EdgeMessage(node_id=self.node_id, hello=pb.Hello(
            pop_id=self.pop_id, labels=self.labels, agent_version=__version__,
            functions=self._function_status()))
        yield pb.EdgeMessage(node_id=self.node_id, heartbeat=self._heartbeat_proto())
        while True:
            yield await outbox.get()

    async def _stream_heartbeats(self, outbox: asyncio.Queue[pb.EdgeMessage]) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            await outbox.put(pb.EdgeMessage(node_id=self.node_id,
                                            heartbeat=self._heartbeat_proto()))

    # -- the HTTP fallback ----------------------------------------------------
    async def _http_heartbeats(self) -> None:
        # Give the stream a moment first: when it connects, heartbeats go over it.
        await asyncio.sleep(min(2.0, self.heartbeat_interval_s))
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                if not self.stream_connected.is_set() and self.cp_url:
                    try:
                        await self._http_heartbeat(client)
                    except (httpx.HTTPError, ValueError) as exc:
                        log.info("heartbeat to %s failed: %s", self.cp_url, exc)
                await asyncio.sleep(self.heartbeat_interval_s)

    async def _http_heartbeat(self, client: httpx.AsyncClient) -> None:
        acks = self._take_unsent()
        body = {**self._heartbeat_json(), "acks": [a.to_json() for a in acks]}
        try:
            resp = await client.post(
                f"{self.cp_url}/api/v1/nodes/{self.node_id}/heartbeat",
                json=body, headers={"authorization": f"Bearer {self._token}"},
            )
        except httpx.HTTPError:
            self._unsent = acks + self._unsent
            raise
        if resp.status_code != 200:
            self._unsent = acks + self._unsent
            raise ValueError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        answer = resp.json()
        if answer.get("heartbeat_interval_s"):
            self.heartbeat_interval_s = float(answer["heartbeat_interval_s"])
        for data in answer.get("instructions", []):
            ack_id = data.get("id") if isinstance(data, dict) else None
            if not isinstance(ack_id, int):
                log.warning("an instruction without an integer id was ignored")
                continue
            self._unsent.append(await self._apply(ack_id, partial(Instruction.from_json, data)))

    # -- artifacts ------------------------------------------------------------
    def fresh_artifact_url(self, function_id: str, version: str) -> str:
        """A newly signed URL of an artifact deployed to this node (`FreshUrl`)."""
        url = f"{self.cp_url}/api/v1/nodes/{self.node_id}/artifacts/{function_id}/{version}"
        try:
            resp = httpx.get(url, headers={"authorization": f"Bearer {self._token}"},
                             timeout=10)
        except httpx.HTTPError as exc:
            raise ArtifactError(f"no fresh artifact URL: {exc}") from exc
        if resp.status_code != 200:
            raise ArtifactError(
                f"no fresh artifact URL: HTTP {resp.status_code} {resp.text[:200]}")
        try:
            return str(resp.json()["artifact_url"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"no fresh artifact URL in the answer: {exc}") from exc

    async def _repair_forever(self) -> None:
        verify = True  # the first pass reads every artifact; later ones only look
        while True:
            try:
                await asyncio.to_thread(self.controller.repair, verify=verify)
                verify = False
            except Exception:
                log.exception("checking the artifact cache failed")
            await asyncio.sleep(self.repair_interval_s)

    # -- shared ---------------------------------------------------------------
    async def _apply(self, ack_id: int, decode: Callable[[], Instruction]) -> Ack:
        """Decode and apply one instruction. One that cannot be read is acked as an
        error like one that fails (the controller acks those), so a bad instruction
        never ends the stream or the heartbeat loop, and the next one still applies."""
        try:
            instr = decode()
        except Exception as exc:
            log.warning("instruction %d cannot be read: %s", ack_id, exc)
            return Ack(ack_id, "error", f"unreadable instruction: {exc}")
        ack = await asyncio.to_thread(self.controller.apply, instr)
        log.info("instruction %d %s %s@%s: %s %s", instr.id, instr.type, instr.function_id,
                 instr.version, ack.state, ack.message)
        return ack

    def _take_unsent(self) -> list[Ack]:
        acks, self._unsent = self._unsent, []
        return acks

    def _status_message(self, ack: Ack) -> pb.EdgeMessage:
        return pb.EdgeMessage(node_id=self.node_id, deployment_status=pb.DeploymentStatus(
            ack_id=ack.id, function_id=ack.function_id, version=ack.version, state=ack.state,
            message=ack.message))

    def _usage(self) -> tuple[float, int]:
        try:
            procs = [self._proc, *self._proc.children(recursive=True)]
            mem = sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            mem = 0
        return psutil.cpu_percent(interval=None), mem

    def _function_status(self) -> list[pb.FunctionStatus]:
        return [pb.FunctionStatus(function_id=s["id"], version=s["version"], state=s["state"])
                for s in self.controller.statuses()]

    def _heartbeat_proto(self) -> pb.HeartbeatRequest:
        cpu, mem = self._usage()
        return pb.HeartbeatRequest(node_id=self.node_id, status="online", cpu_percent=cpu,
                                   mem_bytes=mem, functions=self._function_status())

    def _heartbeat_json(self) -> dict[str, Any]:
        cpu, mem = self._usage()
        return {"node_id": self.node_id, "status": "online", "cpu": cpu, "mem_bytes": mem,
                "functions": self.controller.statuses()}
