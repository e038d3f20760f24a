"""The WebSocket transport of a node's control session (`session.NodeSession`), for
nodes whose network blocks HTTP/2 to the control plane: `GET /api/v1/nodes/{id}/stream`
upgraded, on the node HTTPS listener under node mTLS (which verifies the client
certificate as for heartbeats) and on the API port otherwise.

Frames are text, one JSON object each, with a `type`; their bodies are the JSON forms
the HTTP heartbeat already speaks (docs/api.md, The WebSocket stream): an instruction
is its outbox JSON, a heartbeat the heartbeat body, an ack an entry of its `acks`. A
refused upgrade is answered as the heartbeat would be (401, 403, 400 with the error
body); a stream ended by the CP is closed with 4000 + the HTTP status of the reason,
1001 at shutdown, 1009 for a frame over the JSON body limit, 1011 on a fault.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketState

from edgefn.controlplane.deps import CPContext
from edgefn.controlplane.errors import BadRequest, CPError
from edgefn.controlplane.logs.hub import LogLine
from edgefn.controlplane.nodes.listener import client_cert_of
from edgefn.controlplane.nodes.schemas import HeartbeatIn
from edgefn.controlplane.stream import events as ev
from edgefn.controlplane.stream.session import NodeSession, authorize

log = logging.getLogger("edgefn.controlplane.stream")
router = APIRouter(tags=["nodes"])

GOING_AWAY = 1001
TOO_BIG = 1009
INTERNAL = 1011
# A stream the CP ends for a reason of its own: 4000 + the HTTP status (4400, 4401, 4403).
CLOSE_BASE = 4000
_REASON_MAX = 120  # a close frame's reason holds 123 bytes


def encode(out: ev.Outgoing) -> str:
    """One frame for the node."""
    if isinstance(out, ev.HeartbeatAnswer):
        return json.dumps({"type": "heartbeat_ack", "heartbeat_interval_s": out.interval_s})
    return json.dumps({"type": "instruction", "instruction": out.model_dump(mode="json")})


def decode(node_id: str, text: str) -> ev.NodeEvent | None:
    """A frame from node `node_id` as the session's event; None for a type this
    release does not know (ignored, as a newer node may send it)."""
    try:
        frame = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"a frame is one JSON object: {exc}") from exc
    if not isinstance(frame, dict):
        raise BadRequest("a frame is one JSON object")
    kind, said = frame.pop("type", None), frame.pop("node_id", None) or ""
    if not isinstance(said, str):
        raise BadRequest("node_id is a string")
    if kind == "hello":
        hello = ev.validated(HeartbeatIn, node_id=node_id, functions=frame.get("functions") or [],
                             engine_tags=frame.get("engine_tags"))
        return ev.Hello(said, hello)
    if kind == "heartbeat":
        return ev.Beat(said, ev.validated(HeartbeatIn, **frame, node_id=said or node_id))
    if kind == "ack":
        return ev.Ack(said, ev.ack_in(frame.get("id"), frame.get("state"), frame.get("message")))
    if kind == "logs":
        return ev.Logs(said, _log_lines(frame.get("lines")), _count(frame.get("dropped")))
    if kind == "metrics":
        report = ev.validated(HeartbeatIn, node_id=node_id, cpu=frame.get("cpu"),
                              mem_bytes=frame.get("mem_bytes"),
                              functions=frame.get("functions") or [])
        return ev.Metrics(said, report)
    return None


def _log_lines(value: Any) -> list[LogLine]:
    if not isinstance(value, list):
        raise BadRequest("lines is a list")
    lines = []
    for item in value:
        if not isinstance(item, dict) or not all(
                isinstance(item.get(k), str) for k in LogLine._fields):
            raise BadRequest("a log line is {function_id, project_id, line}, all strings")
        lines.append(LogLine(item["function_id"], item["project_id"], item["line"]))
    return lines


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


async def _events(websocket: WebSocket, node_id: str, limit: int) -> AsyncIterator[ev.NodeEvent]:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            raise BadRequest("frames are text")
        if len(text) > limit:
            raise _TooBig(f"a frame is over the limit of {limit} bytes")
        event = decode(node_id, text)
        if event is not None:
            yield event


class _TooBig(BadRequest):
    pass


def _error_body(exc: CPError) -> dict[str, Any]:
    return {"error": {"code": exc.code, "message": exc.message}}


@router.websocket("/nodes/{node_id}/stream")
async def node_stream(websocket: WebSocket, node_id: str) -> None:
    ctx: CPContext = websocket.app.state.cp
    try:
        who, peer_check = await authorize(ctx, websocket.headers.get("authorization", ""),
                                          node_id, client_cert_of(websocket.scope))
    except CPError as exc:
        # Refused before the upgrade, with the status a heartbeat would get.
        await websocket.send_denial_response(
            JSONResponse(_error_body(exc), status_code=exc.status, headers=exc.headers))
        return
    await websocket.accept()
    session = NodeSession(ctx, who, peer_check)
    events = _events(websocket, who.id, ctx.settings.max_json_body_bytes)
    code, reason = GOING_AWAY, "the control plane is going away"
    try:
        async for out in session.serve(events):
            await websocket.send_text(encode(out))
    except (WebSocketDisconnect, OSError):
        return  # the node went away
    except _TooBig as exc:
        code, reason = TOO_BIG, exc.message
    except CPError as exc:
        code = CLOSE_BASE + exc.status if exc.status < 500 else INTERNAL
        reason = exc.message
    except Exception:
        log.exception("the control stream of node %s failed", who.id)
        code, reason = INTERNAL, "internal error"
    if websocket.application_state == WebSocketState.CONNECTED:
        # The node may have gone first.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.close(code, reason.encode()[:_REASON_MAX].decode(errors="ignore"))
