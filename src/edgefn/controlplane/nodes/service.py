"""Node registration (issuing the node token), heartbeats, and liveness: a node
silent for three heartbeat intervals is marked offline."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from edgefn.controlplane.artifacts import ArtifactStore
from edgefn.controlplane.audit import service as audit
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.auth.service import (
    NODE_TOKEN_PREFIX,
    new_secret_token,
    require_admin,
    token_digest,
)
from edgefn.controlplane.db import new_id, utcnow
from edgefn.controlplane.deployments import outbox
from edgefn.controlplane.deployments import service as deployments
from edgefn.controlplane.errors import BadRequest, Conflict, Forbidden, NotFound
from edgefn.controlplane.nodes.models import Node
from edgefn.controlplane.nodes.schemas import FunctionState, HeartbeatIn, NodeIn

MISSED_BEATS_OFFLINE = 3


def register_node(session: Session, who: Principal, body: NodeIn) -> tuple[Node, str]:
    require_admin(who)
    node_id = body.id or new_id()
    if session.get(Node, node_id) is not None:
        raise Conflict(f"node {node_id} exists")
    token = new_secret_token(NODE_TOKEN_PREFIX)
    node = Node(
        id=node_id,
        pop_id=body.pop_id,
        ip=body.ip,
        labels=dict(body.labels),
        token_hash=token_digest(token),
        status="registered",
        functions=[],
    )
    session.add(node)
    session.flush()
    outbox.enqueue_initial(session, node)
    audit.record(
        session,
        who,
        "node.create",
        target_type="node",
        target_id=node.id,
        details={"pop_id": body.pop_id, "labels": dict(body.labels)},
    )
    session.commit()
    return node, token


def delete_node(session: Session, who: Principal, node_id: str) -> None:
    require_admin(who)
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound(f"no node {node_id}")
    audit.record(session, who, "node.delete", target_type="node", target_id=node.id)
    session.delete(node)
    session.commit()


def mark_stale(session: Session, *, interval_s: float, now: dt.datetime | None = None) -> int:
    """Mark offline every node whose last heartbeat is older than three intervals."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=interval_s * MISSED_BEATS_OFFLINE)
    result = session.execute(
        update(Node)
        .where(Node.status != "offline", Node.last_heartbeat.is_not(None))
        .where(Node.last_heartbeat < cutoff)
        .values(status="offline")
    )
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


def all_nodes() -> Select[Node]:
    return select(Node).order_by(Node.pop_id, Node.id)


def heartbeat(
    session: Session,
    who: Principal,
    node_id: str,
    body: HeartbeatIn,
    *,
    store: ArtifactStore,
    url_ttl_s: int,
) -> list[dict[str, Any]]:
    """Record the heartbeat, then answer with every instruction still pending."""
    record_heartbeat(session, who, node_id, body)
    return deployments.pending_instructions(session, node_id, store=store, url_ttl_s=url_ttl_s)


def record_heartbeat(session: Session, who: Principal, node_id: str, body: HeartbeatIn) -> None:
    """Liveness, load, function states and acks of one node, committed."""
    if body.node_id != node_id:
        raise BadRequest(f"body node_id {body.node_id!r} differs from the path's {node_id!r}")
    node = _own_node(session, who, node_id)
    node.last_heartbeat = utcnow()
    node.status = body.status
    node.cpu = body.cpu
    node.mem_bytes = body.mem_bytes
    node.functions = [f.model_dump() for f in body.functions]
    for ack in body.acks:
        deployments.ack_instruction(session, node_id, ack)
    session.commit()


def record_metrics(
    session: Session,
    who: Principal,
    node_id: str,
    *,
    cpu: float | None,
    mem_bytes: int | None,
    functions: list[FunctionState],
) -> None:
    """Load and function states between heartbeats; proof of life, but the status
    stays what the last heartbeat said."""
    node = _own_node(session, who, node_id)
    node.last_heartbeat = utcnow()
    node.cpu = cpu
    node.mem_bytes = mem_bytes
    node.functions = [f.model_dump() for f in functions]
    session.commit()


def _own_node(session: Session, who: Principal, node_id: str) -> Node:
    if who.kind != "node" or who.id != node_id:
        raise Forbidden("a node token may only send its own node's heartbeats")
    node = session.get(Node, node_id)
    if node is None:  # deleted after the token was checked
        raise NotFound(f"no node {node_id}")
    return node
