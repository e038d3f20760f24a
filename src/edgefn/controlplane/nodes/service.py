"""Node registration (issuing the node token), heartbeats, liveness (a node silent
for three heartbeat intervals is marked offline), and fresh artifact URLs for what
was deployed to a node."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session

from edgefn.contract import Instruction, InstructionType
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
from edgefn.controlplane.deployments import outbox, rollouts
from edgefn.controlplane.deployments import service as deployments
from edgefn.controlplane.deployments.models import OutboxInstruction, OutboxState
from edgefn.controlplane.errors import BadRequest, Conflict, Forbidden, NotFound
from edgefn.controlplane.functions.models import FunctionVersion
from edgefn.controlplane.nodes.models import Node
from edgefn.controlplane.nodes.schemas import (
    ArtifactGrant,
    CertificateOut,
    FunctionState,
    HeartbeatIn,
    NodeIn,
)
from edgefn.controlplane.pki import service as pki
from edgefn.controlplane.pki.ca import CertificateAuthority, Issued
from edgefn.controlplane.series import service as series

MISSED_BEATS_OFFLINE = 3


def register_node(
    session: Session,
    who: Principal,
    body: NodeIn,
    *,
    ca: CertificateAuthority | None = None,
    cert_ttl_s: int = 0,
) -> tuple[Node, str, Issued | None]:
    """The node, its token, and its client certificate when the body has a CSR."""
    require_admin(who)
    node_id = body.id or new_id()
    if session.get(Node, node_id) is not None:
        raise Conflict(f"node {node_id} exists")
    issued = None
    if body.csr is not None:
        issued = pki.issue(session, _need_ca(ca), node_id, body.csr, ttl_s=cert_ttl_s)
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
        details={"pop_id": body.pop_id, "labels": dict(body.labels),
                 **({"certificate_serial": issued.serial} if issued else {})},
    )
    session.commit()
    return node, token, issued


def issue_certificate(
    session: Session,
    who: Principal,
    node_id: str,
    csr: str,
    *,
    ca: CertificateAuthority | None,
    cert_ttl_s: int,
) -> CertificateOut:
    """A new client certificate for the node: the node renewing its own (with its
    current certificate, checked by the caller), or an admin re-issuing one for a node
    whose certificate expired or was lost. Earlier ones stay valid until they expire."""
    if who.kind == "node":
        _own_node(session, who, node_id)
    else:
        require_admin(who)
        if session.get(Node, node_id) is None:
            raise NotFound(f"no node {node_id}")
    authority = _need_ca(ca)
    issued = pki.issue(session, authority, node_id, csr, ttl_s=cert_ttl_s)
    audit.record(session, who, "node.certificate", target_type="node", target_id=node_id,
                 details={"serial": issued.serial})
    session.commit()
    return CertificateOut(certificate=issued.pem, ca_certificate=authority.pem.decode(),
                          serial=issued.serial, not_after=issued.not_after)


def _need_ca(ca: CertificateAuthority | None) -> CertificateAuthority:
    if ca is None:
        raise BadRequest("this control plane issues no node certificates (node mTLS is off "
                         "and no node CA was given)")
    return ca


def delete_node(session: Session, who: Principal, node_id: str) -> None:
    require_admin(who)
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound(f"no node {node_id}")
    audit.record(session, who, "node.delete", target_type="node", target_id=node.id)
    # Its open stream notices at its next look at the outbox and is closed.
    pki.revoke_node(session, node_id)
    session.delete(node)
    session.commit()


def mark_stale(session: Session, *, interval_s: float, now: dt.datetime | None = None) -> int:
    """Mark offline every node whose last heartbeat is older than three intervals.
    The caller commits (a duty: under the maintenance lease, `leases.duties`)."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=interval_s * MISSED_BEATS_OFFLINE)
    result = session.execute(
        update(Node)
        .where(Node.status != "offline", Node.last_heartbeat.is_not(None))
        .where(Node.last_heartbeat < cutoff)
        .values(status="offline")
    )
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
) -> list[Instruction]:
    """Record the heartbeat, then answer with every instruction still pending."""
    record_heartbeat(session, who, node_id, body)
    return deployments.pending_instructions(session, node_id, store=store, url_ttl_s=url_ttl_s)


def record_heartbeat(session: Session, who: Principal, node_id: str, body: HeartbeatIn) -> None:
    """Liveness, load, function states and acks of one node, committed."""
    if body.node_id != node_id:
        raise BadRequest(f"body node_id {body.node_id!r} differs from the path's {node_id!r}")
    node = _own_node(session, who, node_id)
    node.last_heartbeat = now = utcnow()
    node.status = body.status
    node.cpu = body.cpu
    node.mem_bytes = body.mem_bytes
    node.functions = [f.model_dump() for f in body.functions]
    if body.versions:
        series.record(session, node_id, rollouts.node_stats(node), body.versions, now)
        node.version_stats = {v.key: v.model_dump() for v in body.versions}
    if body.engine_tags is not None and body.engine_tags != node.engine_tags:
        node.engine_tags = list(body.engine_tags)
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


def artifact_grant(
    session: Session,
    who: Principal,
    node_id: str,
    function_id: str,
    version: str,
    *,
    store: ArtifactStore,
    url_ttl_s: int,
) -> ArtifactGrant:
    """A freshly signed URL of `function_id@version`, for the node it was deployed to.

    A node may fetch again only what it was sent: the version was in a deploy
    instruction for this node, not undeployed from it since. Anything else is 404,
    whether or not it exists, so a node learns nothing of other tenants' functions.
    """
    _own_node(session, who, node_id)
    missing = NotFound(f"no artifact {function_id}@{version} is deployed to node {node_id}")
    if not deployed_to(session, node_id, function_id, version):
        raise missing
    row = session.scalar(
        select(FunctionVersion).where(
            FunctionVersion.function_id == function_id, FunctionVersion.version == version
        )
    )
    if row is None:  # deleted since it was deployed
        raise missing
    return ArtifactGrant(
        function_id=function_id,
        version=version,
        sha256=row.sha256,
        artifact_url=store.presign_get(row.artifact_key, url_ttl_s),
        data_url=store.presign_get(row.data_key, url_ttl_s) if row.data_key else None,
        expires_in=url_ttl_s,
    )


def deployed_to(session: Session, node_id: str, function_id: str, version: str) -> bool:
    """Whether a deploy of `function_id@version` was queued for the node after the
    function's last undeploy there. Any such deploy counts, acked or not: the node
    may have applied it before a newer one superseded it."""
    rows = session.scalars(
        select(OutboxInstruction)
        .where(
            OutboxInstruction.node_id == node_id,
            OutboxInstruction.type.in_((InstructionType.DEPLOY, InstructionType.UNDEPLOY)),
            OutboxInstruction.payload["function_id"].as_string() == function_id,
            # Never sent: the node cannot have applied it.
            OutboxInstruction.state != OutboxState.FAILED,
        )
        .order_by(OutboxInstruction.id.desc())
    )
    for row in rows:
        if row.type == InstructionType.UNDEPLOY:
            return False
        if row.payload.get("version") == version:
            return True
    return False


def _own_node(session: Session, who: Principal, node_id: str) -> Node:
    if who.kind != "node" or who.id != node_id:
        raise Forbidden("a node token may only act for its own node")
    node = session.get(Node, node_id)
    if node is None:  # deleted after the token was checked
        raise NotFound(f"no node {node_id}")
    return node
