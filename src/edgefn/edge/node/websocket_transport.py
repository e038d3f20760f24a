"""The control stream over a WebSocket, for networks that block HTTP/2 to the control
plane: `GET {cp_url}/api/v1/nodes/{id}/stream` upgraded (wss:// on the node HTTPS
port under mutual TLS, where the client certificate is verified as for heartbeats),
the token in the `Authorization` header. Frames are JSON objects in the shapes the
HTTP heartbeat already speaks (docs/api.md, The WebSocket stream); the one place on
the node that knows them."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from edgefn import __version__
from edgefn.contract import Instruction
from edgefn.edge.node import transport as t
from edgefn.edge.node.credentials import NodeCertificate

log = logging.getLogger("edgefn.edge.node.agent")
# The control plane's answers refusing the node: before the upgrade (HTTP status) or
# after it (close code 4000 + the status).
_REFUSED_STATUS = (401, 403)
_REFUSED_CLOSE = (4401, 4403)
# Closes that end the stream cleanly, as gRPC's OK does: normal, the CP going away
# (shutdown), or its server restarting; the node reconnects with a fresh backoff.
_CLEAN_CLOSE = (1000, 1001, 1012)


def stream_url(cp_url: str, node_id: str) -> str:
    """The WebSocket URL of a node's stream at the control plane's node URL."""
    base = cp_url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            return f"{ws}{base.removeprefix(http)}/api/v1/nodes/{node_id}/stream"
    raise ValueError(f"the control plane URL is http:// or https://, not {cp_url!r}")


def encode(node_id: str, message: t.Outgoing) -> str:
    """One frame for the control plane."""
    frame: dict[str, Any]
    if isinstance(message, t.Hello):
        frame = {"type": "hello", "node_id": node_id, "pop_id": message.pop_id,
                 "labels": message.labels, "agent_version": message.agent_version,
                 "functions": message.functions, "engine_tags": message.engine_tags}
    elif isinstance(message, t.Beat):
        frame = {"type": "heartbeat", **message.to_json()}
    elif isinstance(message, t.LogBatch):
        frame = {"type": "logs", "node_id": node_id, "dropped": message.dropped,
                 "lines": [tag._asdict() for tag in message.lines]}
    else:
        frame = {"type": "ack", "node_id": node_id, **message.to_json()}
    return json.dumps(frame)


def decode(text: str | bytes) -> t.Incoming | None:
    """A frame from the control plane; None for one this release does not know."""
    frame = json.loads(text)
    kind = frame.get("type") if isinstance(frame, dict) else None
    if kind == "heartbeat_ack":
        return t.HeartbeatAnswer(float(frame.get("heartbeat_interval_s") or 0))
    if kind == "instruction":
        data = frame.get("instruction")
        ack_id = data.get("id") if isinstance(data, dict) else None
        if isinstance(ack_id, int):
            return t.Pushed(ack_id, partial(Instruction.from_json, data))
        log.warning("an instruction without an integer id was ignored")
    return None


class WebSocketTransport:
    def __init__(self, cp_url: str, *, node_id: str, token: str,
                 tls: NodeCertificate | None = None) -> None:
        self.url = stream_url(cp_url, node_id)
        self.node_id = node_id
        self._headers = {"authorization": f"Bearer {token}",
                         "user-agent": f"edgefn-agent/{__version__}"}
        self._tls = tls

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[_WebSocketConnection]:
        # At each connection: it presents the current (maybe renewed) certificate.
        ssl = self._tls.ssl_context() if self._tls and self.url.startswith("wss:") else None
        try:
            ws = await connect(self.url, additional_headers=self._headers, ssl=ssl,
                               user_agent_header=None, max_size=None)
        except InvalidStatus as exc:
            response = exc.response
            body = response.body.decode(errors="replace")[:200] if response.body else ""
            kind = t.StreamRefused if response.status_code in _REFUSED_STATUS else t.StreamError
            raise kind(f"HTTP {response.status_code}: {body}") from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise t.StreamError(f"{type(exc).__name__}: {exc}") from exc
        try:
            yield _WebSocketConnection(ws, self.node_id)
        finally:
            await ws.close()


def _closed(exc: ConnectionClosed) -> t.StreamError:
    close = exc.rcvd
    code, reason = (close.code, close.reason) if close is not None else (1006, "")
    kind = t.StreamRefused if code in _REFUSED_CLOSE else t.StreamError
    return kind(f"closed {code}: {reason}")


class _WebSocketConnection:
    def __init__(self, ws: ClientConnection, node_id: str) -> None:
        self._ws = ws
        self._node_id = node_id

    async def send(self, message: t.Outgoing) -> None:
        try:
            await self._ws.send(encode(self._node_id, message))
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def receive(self) -> AsyncIterator[t.Incoming]:
        while True:
            try:
                text = await self._ws.recv()
            except ConnectionClosed as exc:
                close = exc.rcvd
                if close is not None and close.code in _CLEAN_CLOSE:
                    return
                raise _closed(exc) from exc
            try:
                message = decode(text)
            except ValueError as exc:
                raise t.StreamError(f"a frame that is not JSON: {exc}") from exc
            if message is not None:
                yield message
