"""The node HTTPS listener: the CP's node-facing HTTP calls (heartbeats, fresh
artifact URLs, secret values, certificate renewal) and the WebSocket control stream
on a port of their own that requires a client certificate of the node CA, served by
the same application as the API.

uvicorn does not hand the peer's certificate to the application, so this listener
runs its HTTP/1.1 protocol with one hook: each connection passes its verified
client certificate to the application in the ASGI TLS extension
(`scope["extensions"]["tls"]["client_cert_chain"]`), where `deps` reads it, and so
does the WebSocket protocol a connection upgrades to. The public API port never sets
that extension, so no client there passes as a node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

log = logging.getLogger("edgefn.controlplane.nodes")

# What the listener serves; anything else is 404 here (the API has its own port).
NODE_PATHS = re.compile(r"/api/v1/nodes/[^/]+/(heartbeat|certificate|secrets|artifacts/.+)")
NODE_SOCKETS = re.compile(r"/api/v1/nodes/[^/]+/stream")


def client_cert_of(scope: Scope) -> str | None:
    """The PEM client certificate of the connection, on the node listener only."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    return str(chain[0]) if chain else None


def _with_client_cert(app: ASGIApp, pem: str | None) -> ASGIApp:
    async def node_app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not NODE_SOCKETS.fullmatch(scope["path"]):
            await send({"type": "websocket.close", "code": 1008})  # refuses the upgrade
            return
        if scope["type"] == "http" and not NODE_PATHS.fullmatch(scope["path"]):
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body":
                        b'{"error": {"code": "not_found", "message": "not a node call"}}'})
            return
        extensions = dict(scope.get("extensions") or {})
        extensions["tls"] = {"client_cert_chain": [pem] if pem else [],
                             "server_cert": None}
        await app({**scope, "extensions": extensions}, receive, send)

    return node_app


class _ClientCertProtocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        pem = ssl.DER_cert_to_PEM_cert(der) if der else None
        self.app = _with_client_cert(self.config.loaded_app, pem)
        if self.ws_protocol_class is not None:
            self.ws_protocol_class = partial(  # type: ignore[assignment]
                _upgraded, self.ws_protocol_class, self.app)


def _upgraded(protocol: Callable[..., Any], app: ASGIApp, **kwargs: Any) -> Any:
    """The WebSocket protocol a connection upgrades to, serving the app that holds
    the connection's certificate (uvicorn would give it the bare app)."""
    upgraded = protocol(**kwargs)
    upgraded.app = app
    return upgraded


class NodeListener:
    """The running listener; `port` is the bound one (useful with port 0)."""

    def __init__(self, server: asyncio.Server, state: ServerState, port: int) -> None:
        self._server = server
        self._state = state
        self.port = port

    @classmethod
    async def start(cls, app: Any, *, host: str, port: int,
                    context: ssl.SSLContext) -> NodeListener:
        config = uvicorn.Config(app, host=host, port=port, lifespan="off", http="h11",
                                ws="websockets-sansio",
                                proxy_headers=False, log_config=None, access_log=False)
        config.load()
        state = ServerState()

        def protocol() -> asyncio.Protocol:
            return _ClientCertProtocol(config=config, server_state=state, app_state={})

        loop = asyncio.get_running_loop()
        server = await loop.create_server(protocol, host=host, port=port, ssl=context)
        bound = int(server.sockets[0].getsockname()[1])
        log.info("node HTTPS listening on %s:%d (client certificates required)", host, bound)
        return cls(server, state, bound)

    async def stop(self, grace: float = 5.0) -> None:
        self._server.close()
        for connection in list(self._state.connections):
            connection.shutdown()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), grace)
