"""The EdgeControl service on grpc.aio, in the CP's event loop: every call is
authenticated with the node token, database work runs on worker threads through
the same services as the HTTP API, and each stream pushes the node's outbox."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from sqlalchemy.orm import Session

from edgefn.contract import Instruction
from edgefn.controlplane import db
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.auth.service import authenticate
from edgefn.controlplane.deployments import service as deployments
from edgefn.controlplane.deployments.schemas import AckIn
from edgefn.controlplane.deps import CPContext
from edgefn.controlplane.errors import BadRequest, CPError, Forbidden, Unauthorized
from edgefn.controlplane.nodes import service as nodes
from edgefn.controlplane.nodes.models import Node
from edgefn.controlplane.pki import service as pki
from edgefn.controlplane.pki.tls import NodeTLS
from edgefn.controlplane.stream.messages import (
    ack_of,
    functions_of,
    heartbeat_of,
    hello_as_heartbeat,
    instruction_to_proto,
)
from edgefn.proto import edge_control_pb2 as pb
from edgefn.proto import edge_control_pb2_grpc as pb_grpc

log = logging.getLogger("edgefn.controlplane.stream")
T = TypeVar("T")
NODE_ID_METADATA = "x-edgefn-node-id"

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
}


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: Exception) -> NoReturn:
    """End the call with the status matching a CPError; anything else is INTERNAL
    without details, as the HTTP API answers 500."""
    if isinstance(exc, CPError):
        code, message = _CODES.get(exc.status, grpc.StatusCode.INTERNAL), exc.message
    else:
        log.error("EdgeControl call failed", exc_info=exc)
        code, message = grpc.StatusCode.INTERNAL, "internal error"
    await context.abort(code, message)
    raise AssertionError("context.abort returned")  # it always raises


class EdgeControlService(pb_grpc.EdgeControlServicer):
    def __init__(self, ctx: CPContext) -> None:
        self._ctx = ctx

    async def _db(self, work: Callable[[Session], T]) -> T:
        """Run `work` with its own session on a worker thread (the services are sync)."""

        def run() -> T:
            with db.session_scope(self._ctx.sessions) as session:
                return work(session)

        return await asyncio.to_thread(run)

    async def _authorize(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        metadata = dict(context.invocation_metadata() or ())
        scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("missing bearer token in the authorization metadata")
        node_id = metadata.get(NODE_ID_METADATA)
        if not node_id:
            raise BadRequest(f"missing {NODE_ID_METADATA} metadata")
        creds = self._ctx.creds
        who = await self._db(lambda s: authenticate(s, creds, token.strip(), request_id=None))
        if who.kind != "node":
            raise Forbidden("EdgeControl takes node tokens only")
        if who.id != node_id:
            raise Forbidden(f"the token is not node {node_id}'s")
        await self._db(self._peer_check(who.id, context))
        return who

    def _peer_check(
        self, node_id: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Callable[[Session], None]:
        """With node mTLS on, the client certificate of the call must be the node's,
        neither revoked nor expired (the handshake checked it is the CA's)."""
        if not self._ctx.settings.node_mtls:
            return lambda s: _node_exists(s, node_id)
        certs = (context.auth_context() or {}).get("x509_pem_cert") or [None]
        serial = pki.peer_serial(node_id, certs[0])
        return lambda s: pki.check_serial(s, node_id, serial)

    def _pending(
        self, node_id: str, peer_check: Callable[[Session], None]
    ) -> Callable[[Session], list[Instruction]]:
        store, ttl = self._ctx.store, self._ctx.settings.download_url_ttl_s

        def work(session: Session) -> list[Instruction]:
            # Looked at again on every pass, so a stream ends once its node is deleted.
            peer_check(session)
            return deployments.pending_instructions(session, node_id, store=store, url_ttl_s=ttl)

        return work

    # ---- unary -------------------------------------------------------------------

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HeartbeatResponse:
        try:
            who = await self._authorize(context)
            body = heartbeat_of(who.id, request)
            store, ttl = self._ctx.store, self._ctx.settings.download_url_ttl_s
            instructions = await self._db(
                lambda s: nodes.heartbeat(s, who, who.id, body, store=store, url_ttl_s=ttl)
            )
        except Exception as exc:
            await _abort(context, exc)
        return pb.HeartbeatResponse(
            instructions=[instruction_to_proto(i) for i in instructions],
            heartbeat_interval_s=self._ctx.settings.heartbeat_interval_s,
        )

    # ---- stream ------------------------------------------------------------------

    async def StreamControl(
        self,
        request_iterator: AsyncIterator[pb.EdgeMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ControlMessage]:
        notifier = self._ctx.notifier
        try:
            who = await self._authorize(context)
            messages = aiter(request_iterator)
            first = await anext(messages, None)
            if first is None:
                return
            if first.WhichOneof("payload") != "hello":
                raise BadRequest("the first message of a stream must be a Hello")
            await self._handle(who, first)
            log.info("node %s connected its control stream", who.id)
            pending_work = self._pending(who.id, self._peer_check(who.id, context))
            with notifier.subscribe(who.id) as wake:
                replies: asyncio.Queue[pb.ControlMessage] = asyncio.Queue()
                reader = asyncio.create_task(self._read(who, messages, replies, wake))
                try:
                    sent: set[int] = set()
                    while not notifier.closed:
                        # Cleared before looking, so a commit during the look wakes us again.
                        wake.clear()
                        while not replies.empty():
                            yield replies.get_nowait()
                        if reader.done():
                            reader.result()  # re-raises what ended the reader
                            break
                        pending = await self._db(pending_work)
                        for instruction in pending:
                            if instruction.id not in sent:
                                yield instruction_to_proto(instruction)
                        # Sent once per stream; a reconnect sends every pending one again.
                        sent = {i.id for i in pending}
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wake.wait(), self._ctx.settings.stream_recheck_s)
                finally:
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader
            log.info("node %s control stream ended", who.id)
        except Exception as exc:
            await _abort(context, exc)

    async def _read(
        self,
        who: Principal,
        messages: AsyncIterator[pb.EdgeMessage],
        replies: asyncio.Queue[pb.ControlMessage],
        wake: asyncio.Event,
    ) -> None:
        try:
            async for message in messages:
                reply = await self._handle(who, message)
                if reply is not None:
                    replies.put_nowait(reply)
                    wake.set()
        finally:
            wake.set()  # the writer notices the reader ended

    async def _handle(self, who: Principal, message: pb.EdgeMessage) -> pb.ControlMessage | None:
        """Apply one message from the node; return what to answer, if anything."""
        if message.node_id and message.node_id != who.id:
            raise BadRequest(f"message for node {message.node_id!r} on {who.id!r}'s stream")
        kind = message.WhichOneof("payload")
        if kind == "hello":
            hello = hello_as_heartbeat(who.id, message.hello)
            await self._db(lambda s: nodes.record_heartbeat(s, who, who.id, hello))
        elif kind == "heartbeat":
            beat = heartbeat_of(who.id, message.heartbeat)
            await self._db(lambda s: nodes.record_heartbeat(s, who, who.id, beat))
            interval = self._ctx.settings.heartbeat_interval_s
            return pb.ControlMessage(heartbeat_ack=pb.HeartbeatAck(heartbeat_interval_s=interval))
        elif kind == "deployment_status":
            await self._db(_acker(who.id, ack_of(message.deployment_status)))
        elif kind == "metrics":
            report = message.metrics
            functions = functions_of(report.functions)
            await self._db(
                lambda s: nodes.record_metrics(
                    s,
                    who,
                    who.id,
                    cpu=report.cpu_percent,
                    mem_bytes=report.mem_bytes,
                    functions=functions,
                )
            )
        return None


def _node_exists(session: Session, node_id: str) -> None:
    if session.get(Node, node_id) is None:
        raise Unauthorized(f"node {node_id} was deleted")


def _acker(node_id: str, ack: AckIn) -> Callable[[Session], None]:
    def work(session: Session) -> None:
        deployments.ack_instruction(session, node_id, ack)
        session.commit()

    return work


class ControlServer:
    """The running gRPC server; `port` is the bound one (useful with port 0)."""

    def __init__(self, server: grpc.aio.Server, port: int, ctx: CPContext) -> None:
        self._server = server
        self._ctx = ctx
        self.port = port

    @classmethod
    async def start(
        cls, ctx: CPContext, *, host: str, port: int, tls: NodeTLS | None = None
    ) -> ControlServer:
        """Serve EdgeControl on `host:port` in the running event loop; over TLS when
        `tls` is given, requiring node client certificates when it has a client CA."""
        server = grpc.aio.server()
        pb_grpc.add_EdgeControlServicer_to_server(EdgeControlService(ctx), server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if tls is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, tls.grpc_credentials())
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from exc
        await server.start()
        log.info("EdgeControl gRPC listening on %s:%d", host, bound)
        return cls(server, bound, ctx)

    async def stop(self, grace: float = 5.0) -> None:
        """End every stream (nodes reconnect, possibly to another replica), then stop."""
        self._ctx.notifier.close()
        await self._server.stop(grace)
