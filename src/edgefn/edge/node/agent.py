"""The edge node's link to the control plane: a control stream, with HTTP heartbeats as fallback.

The agent runs in the node's main process on a thread with its own event loop.
While the stream is up, instructions arrive the moment the control plane records
them, and each is acknowledged on the stream once applied. While it is down, the
agent reconnects with exponential backoff and jitter (capped at 30 s) and sends
heartbeats by HTTP, whose answers carry the pending instructions, so a node
behind a proxy that blocks the stream still converges. Acks that could not be sent
are kept and go out with the next message, on whichever channel is up. The stream
is written once against `transport.Transport`: gRPC (`grpc_transport`, the default)
or a WebSocket (`websocket_transport`, for networks that block HTTP/2).

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
from collections.abc import Callable
from functools import partial
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import psutil

from edgefn import __version__
from edgefn.contract import Instruction, InstructionAck, VersionStats
from edgefn.edge.errors import ArtifactError
from edgefn.edge.node.controller import NodeController
from edgefn.edge.node.credentials import NodeCertificate
from edgefn.edge.node.grpc_transport import GrpcTransport
from edgefn.edge.node.health import VersionFigures
from edgefn.edge.node.logship import FORWARD_INTERVAL_S, LogInbox
from edgefn.edge.node.transport import (
    Beat,
    Connection,
    HeartbeatAnswer,
    Hello,
    LogBatch,
    Outgoing,
    StreamError,
    StreamRefused,
    Transport,
)
from edgefn.edge.node.websocket_transport import WebSocketTransport

log = logging.getLogger("edgefn.edge.node.agent")

BACKOFF_START_S = 0.2
BACKOFF_CAP_S = 30.0
# How often the agent checks that every artifact of the state is still in the cache.
REPAIR_INTERVAL_S = 2.0
# A client certificate is renewed once this share of its lifetime has passed,
# looked at every RENEW_CHECK_S.
RENEW_FRACTION = 2 / 3
RENEW_CHECK_S = 60.0


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
        grpc_url: str = "",
        transport: Literal["grpc", "websocket"] = "grpc",
        pop_id: str = "",
        labels: dict[str, str] | None = None,
        heartbeat_interval_s: float = 30.0,
        repair_interval_s: float = REPAIR_INTERVAL_S,
        tls: NodeCertificate | None = None,
        renew_fraction: float = RENEW_FRACTION,
        renew_check_s: float = RENEW_CHECK_S,
        figures: VersionFigures | None = None,
        logs: LogInbox | None = None,
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
        self._token = token
        self.transport: Transport = (
            WebSocketTransport(self.cp_url, node_id=node_id, token=token, tls=tls)
            if transport == "websocket"
            else GrpcTransport(grpc_url, node_id=node_id, token=token, tls=tls,
                               cp_host=urlsplit(self.cp_url).hostname if self.cp_url else None)
        )
        self._unsent: list[InstructionAck] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="edgefn-agent", daemon=True)
        self._stopping: asyncio.Event | None = None
        self.stream_connected = threading.Event()
        self._proc = psutil.Process()
        self.figures = figures
        # Functions' log lines from the workers, sent on the stream (logship).
        self.logs = logs
        self._logs_in_flight = False
        if self.cp_url:
            controller.fresh_url = self.fresh_artifact_url
            controller.fresh_data_url = self.fresh_data_url

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=5)
        if self.logs is not None:
            self.logs.close()

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
            except StreamRefused as exc:
                log.error("control plane refused this node: %s", exc)
            except StreamError as exc:
                log.info("control stream down: %s", exc)
            except Exception:
                log.exception("control stream failed")
            self.stream_connected.clear()
            delay = next(delays)
            await asyncio.sleep(delay)

    async def _stream_once(self) -> None:
        outbox: asyncio.Queue[Outgoing] = asyncio.Queue()
        first: list[Outgoing] = [self._hello(), self._beat(), *self._take_unsent()]
        for message in first:
            outbox.put_nowait(message)
        async with self.transport.connect() as conn:
            writer = asyncio.create_task(self._write(conn, outbox))
            beats = asyncio.create_task(self._stream_heartbeats(outbox))
            ship = asyncio.create_task(self._ship_logs(outbox))
            try:
                async for received in conn.receive():
                    self.stream_connected.set()
                    if isinstance(received, HeartbeatAnswer):
                        if received.interval_s > 0:
                            self.heartbeat_interval_s = received.interval_s
                        continue
                    outbox.put_nowait(await self._apply(received.ack_id, received.decode))
            finally:
                self._logs_in_flight = False
                for task in (ship, beats, writer):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                # Whatever did not leave with the stream goes with the next message.
                while not outbox.empty():
                    item = outbox.get_nowait()
                    if isinstance(item, InstructionAck):
                        self._unsent.append(item)

    async def _write(self, conn: Connection, outbox: asyncio.Queue[Outgoing]) -> None:
        while True:
            message = await outbox.get()
            try:
                await conn.send(message)
                if isinstance(message, LogBatch):
                    self._logs_in_flight = False
            except BaseException:
                if isinstance(message, InstructionAck):
                    self._unsent.append(message)
                raise

    async def _ship_logs(self, outbox: asyncio.Queue[Outgoing]) -> None:
        """A batch of the workers' log lines every FORWARD_INTERVAL_S, one at a time: while
        one waits to be written, lines stay in the bounded inbox (the oldest dropped)."""
        if self.logs is None:
            return
        while True:
            await asyncio.sleep(FORWARD_INTERVAL_S)
            if self._logs_in_flight:
                continue
            lines, dropped = self.logs.take()
            if lines or dropped:
                self._logs_in_flight = True
                outbox.put_nowait(LogBatch(lines, dropped))

    async def _stream_heartbeats(self, outbox: asyncio.Queue[Outgoing]) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            outbox.put_nowait(self._beat())

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
        body = self._beat(acks).to_json()
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
        return self._fresh(function_id, version, "artifact_url")

    def fresh_data_url(self, function_id: str, version: str) -> str:
        """A newly signed URL of the data archive of a version deployed to this node."""
        return self._fresh(function_id, version, "data_url")

    def _fresh(self, function_id: str, version: str, field: str) -> str:
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
            value = resp.json()[field]
        except (ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"no fresh {field} in the answer: {exc}") from exc
        if not isinstance(value, str) or not value:
            raise ArtifactError(f"no fresh {field} in the answer")
        return value

    async def _repair_forever(self) -> None:
        verify = True  # the first pass reads every artifact; later ones only look
        while True:
            try:
                await asyncio.to_thread(self.controller.repair, verify=verify)
                verify = False
            except Exception:
                log.exception("checking the artifact cache failed")
            await asyncio.sleep(self.repair_interval_s)

    # -- the client certificate ---------------------------------------------
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

    def _usage(self) -> tuple[float, int]:
        try:
            procs = [self._proc, *self._proc.children(recursive=True)]
            mem = sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            mem = 0
        return psutil.cpu_percent(interval=None), mem

    def _hello(self) -> Hello:
        return Hello(self.pop_id, self.labels, __version__, self.controller.statuses(),
                     engine_tags=self.controller.engine_tags())

    def _beat(self, acks: list[InstructionAck] | None = None) -> Beat:
        cpu, mem = self._usage()
        return Beat(self.node_id, cpu, mem, self.controller.statuses(), acks=acks or [],
                    versions=self._versions(), engine_tags=self.controller.engine_tags())

    def _versions(self) -> list[VersionStats]:
        if self.figures is None:
            return []
        try:
            return self.figures.report(self.controller.served())
        except Exception:  # the heartbeat goes without figures rather than not at all
            log.exception("reading invocation figures failed")
            return []
