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

With a client certificate (mutual TLS), every connection to the control plane
presents it, and the agent renews it once `renew_fraction` of its lifetime has
passed: a new key and CSR, sent over an authenticated call; the open stream goes
on, and the next connection uses the new certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import grpc
import httpx
import psutil
from google.protobuf.message import Message

from edgefn import __version__
from edgefn.contract import AckState, Instruction, InstructionAck, InstructionType, VersionStats
from edgefn.edge.errors import ArtifactError
from edgefn.edge.node.controller import NodeController
from edgefn.edge.node.credentials import NodeCertificate
from edgefn.edge.node.health import VersionFigures
from edgefn.proto import edge_control_pb2 as pb
from edgefn.proto import edge_control_pb2_grpc as pb_grpc

log = logging.getLogger("edgefn.edge.node.agent")

BACKOFF_START_S = 0.2
BACKOFF_CAP_S = 30.0
# How often the agent checks that every artifact of the state is still in the cache.
REPAIR_INTERVAL_S = 2.0
# A client certificate is renewed once this share of its lifetime has passed,
# looked at every RENEW_CHECK_S.
RENEW_FRACTION = 2 / 3
RENEW_CHECK_S = 60.0


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
        tls: NodeCertificate | None = None,
        renew_fraction: float = RENEW_FRACTION,
        renew_check_s: float = RENEW_CHECK_S,
        figures: VersionFigures | None = None,
    ) -> None:
        self.controller = controller
        self.node_id = node_id
        self.cp_url = cp_url.rstrip("/")
        self.grpc_url = grpc_url
        self.pop_id = pop_id
        self.labels = labels or {}
        self.heartbeat_interval_s = heartbeat_interval_s
        self.repair_interval_s = repair_interval_s
        self.tls = tls
        self.renew_fraction = renew_fraction
        self.renew_check_s = renew_check_s
        self._metadata = (("authorization", f"Bearer {token}"), ("x-edgefn-node-id", node_id))
        self._token = token
        self._unsent: list[InstructionAck] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="edgefn-agent", daemon=True)
        self._stopping: asyncio.Event | None = None
        self.stream_connected = threading.Event()
        self._proc = psutil.Process()
        self.figures = figures
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
        renew = asyncio.create_task(self._renew_forever())
        await self._stopping.wait()
        for task in (stream, http, repair, renew):
            task.cancel()
        for task in (stream, http, repair, renew):
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
        async with self._channel() as channel:
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
                        self._unsent.append(
                            InstructionAck(s.ack_id, AckState(s.state), s.message))

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
        while True:
            if not self.stream_connected.is_set() and self.cp_url:
                try:
                    # A client per beat: it presents the current certificate.
                    async with httpx.AsyncClient(timeout=10, verify=self._verify()) as client:
                        await self._http_heartbeat(client)
                except (httpx.HTTPError, ValueError, OSError) as exc:
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
                             timeout=10, verify=self._verify())
        except (httpx.HTTPError, OSError) as exc:
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

    # -- channels and the client certificate ----------------------------------
    def _channel(self) -> grpc.aio.Channel:
        if self.tls is None:
            return grpc.aio.insecure_channel(self.grpc_url)
        return grpc.aio.secure_channel(self.grpc_url, self.tls.channel_credentials())

    def _verify(self) -> ssl.SSLContext | bool:
        """What httpx checks the CP with, presenting the node's certificate if any."""
        return self.tls.ssl_context() if self.tls is not None else True

    async def _renew_forever(self) -> None:
        tls = self.tls
        if tls is None or not tls.has_client_cert or not self.cp_url:
            return
        while True:
            try:
                if tls.renewal_due(self.renew_fraction):
                    await asyncio.to_thread(self.renew_certificate)
            except Exception as exc:  # tried again at the next check, until it expires
                log.warning("renewing the client certificate failed: %s", exc)
            await asyncio.sleep(self.renew_check_s)

    def renew_certificate(self) -> None:
        """A new key and certificate, from a CSR sent with the current ones."""
        assert self.tls is not None
        key, csr = self.tls.new_request(self.node_id)
        resp = httpx.post(f"{self.cp_url}/api/v1/nodes/{self.node_id}/certificate",
                          json={"csr": csr}, timeout=10, verify=self._verify(),
                          headers={"authorization": f"Bearer {self._token}"})
        if resp.status_code != 200:
            raise ValueError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        answer = resp.json()
        self.tls.install(key, str(answer["certificate"]))
        log.info("client certificate renewed: serial %s, valid until %s",
                 answer.get("serial"), answer.get("not_after"))

    # -- shared ---------------------------------------------------------------
    async def _apply(self, ack_id: int, decode: Callable[[], Instruction]) -> InstructionAck:
        """Decode and apply one instruction (`NodeController.receive`) off the loop."""
        ack = await asyncio.to_thread(self.controller.receive, ack_id, decode)
        log.info("instruction %d %s@%s: %s %s", ack.id, ack.function_id, ack.version,
                 ack.state, ack.message)
        return ack

    def _take_unsent(self) -> list[InstructionAck]:
        acks, self._unsent = self._unsent, []
        return acks

    def _status_message(self, ack: InstructionAck) -> pb.EdgeMessage:
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
                                   mem_bytes=mem, functions=self._function_status(),
                                   versions=[version_stats_proto(v) for v in self._versions()])

    def _heartbeat_json(self) -> dict[str, Any]:
        cpu, mem = self._usage()
        return {"node_id": self.node_id, "status": "online", "cpu": cpu, "mem_bytes": mem,
                "functions": self.controller.statuses(),
                "versions": [v.model_dump() for v in self._versions()]}

    def _versions(self) -> list[VersionStats]:
        if self.figures is None:
            return []
        try:
            return self.figures.report(self.controller.statuses())
        except Exception:  # the heartbeat goes without figures rather than not at all
            log.exception("reading invocation figures failed")
            return []


def version_stats_proto(stats: VersionStats) -> pb.VersionStats:
    return pb.VersionStats(function_id=stats.function_id, version=stats.version,
                           count=stats.count, errors=stats.errors, latency=stats.latency)
