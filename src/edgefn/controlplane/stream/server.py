"""The EdgeControl service on grpc.aio, in the CP's event loop: the gRPC transport
of a node's control session (`session.NodeSession`). It reads the node's token and id
from the call's metadata and its certificate from the TLS handshake, converts messages
(`messages`), and ends a call with the status of the error that ended it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc

from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.deps import CPContext
from edgefn.controlplane.errors import CPError
from edgefn.controlplane.nodes import service as nodes
from edgefn.controlplane.pki.tls import NodeTLS
from edgefn.controlplane.stream.messages import (
    events_of,
    heartbeat_of,
    instruction_to_proto,
    to_proto,
)
from edgefn.controlplane.stream.session import NodeSession, PeerCheck, authorize, run_db
from edgefn.proto import edge_control_pb2 as pb
from edgefn.proto import edge_control_pb2_grpc as pb_grpc

log = logging.getLogger("edgefn.controlplane.stream")
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

    async def _authorize(
        self, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[Principal, PeerCheck]:
        metadata = dict(context.invocation_metadata() or ())
        certs = (context.auth_context() or {}).get("x509_pem_cert") or [None]
        return await authorize(self._ctx, str(metadata.get("authorization", "")),
                               metadata.get(NODE_ID_METADATA), certs[0])

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.HeartbeatResponse:
        """The unary alternative: the heartbeat's answer carries the pending instructions."""
        try:
            who, _ = await self._authorize(context)
            body = heartbeat_of(who.id, request)
            store, ttl = self._ctx.store, self._ctx.settings.download_url_ttl_s
            instructions = await run_db(
                self._ctx,
                lambda s: nodes.heartbeat(s, who, who.id, body, store=store, url_ttl_s=ttl),
            )
        except Exception as exc:
            await _abort(context, exc)
        return pb.HeartbeatResponse(
            instructions=[instruction_to_proto(i) for i in instructions],
            heartbeat_interval_s=self._ctx.settings.heartbeat_interval_s,
        )

    async def StreamControl(
        self,
        request_iterator: AsyncIterator[pb.EdgeMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ControlMessage]:
        try:
            who, peer_check = await self._authorize(context)
            session = NodeSession(self._ctx, who, peer_check)
            async for out in session.serve(events_of(who.id, request_iterator)):
                yield to_proto(out)
        except Exception as exc:
            await _abort(context, exc)


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
