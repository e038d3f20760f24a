"""Deploys and rollbacks, their rollout across nodes, and the two calls any
transport (HTTP heartbeat now, gRPC later) uses: `pending_instructions` and
`ack_instruction`.

Strategies, all recorded on the deployment:
- pull: every target node gets its instruction at once.
- canary: one node first (targets sorted by pop, then id); the rest once it acks
  `cached`. An `error` ack fails the deployment and skips the rest.
- gradual: a canary node, then waves of a quarter of the targets (at least one),
  each sent when every node of the previous wave acked `cached`.
A deployment is `in_progress` until every node acked (`succeeded`) or one acked an
error (`failed`); a newer deployment of the same function makes it `superseded`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from edgefn.contract import AckState, Instruction, InstructionType, ResourceCaps
from edgefn.controlplane.artifacts import ArtifactStore
from edgefn.controlplane.audit import service as audit
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.db import utcnow
from edgefn.controlplane.deployments import outbox
from edgefn.controlplane.deployments.models import (
    Deployment,
    DeploymentKind,
    DeploymentNode,
    DeploymentState,
    NodeRolloutState,
    OutboxInstruction,
    OutboxState,
)
from edgefn.controlplane.deployments.schemas import AckIn, DeploymentNodeOut, DeploymentOut
from edgefn.controlplane.errors import Conflict, NotFound
from edgefn.controlplane.functions.models import Function, FunctionVersion
from edgefn.controlplane.functions.service import check_caps, get_function
from edgefn.controlplane.nodes.models import Node
from edgefn.controlplane.selector import parse_selector
from edgefn.controlplane.stream.messages import instruction_to_proto

log = logging.getLogger("edgefn.controlplane.deployments")



def plan_waves(strategy: str, nodes: list[Node]) -> list[list[Node]]:
    if not nodes or strategy == "pull":
        return [nodes] if nodes else []
    waves = [nodes[:1]]
    rest = nodes[1:]
    if strategy == "canary":
        return waves + ([rest] if rest else [])
    size = max(1, math.ceil(len(nodes) / 4))
    return waves + [rest[i : i + size] for i in range(0, len(rest), size)]


def select_targets(session: Session, fn: Function, target_pop: list[str] | None) -> list[Node]:
    nodes = list(session.scalars(select(Node).order_by(Node.pop_id, Node.id)))
    if target_pop is not None:
        wanted = set(target_pop)
        return [n for n in nodes if n.pop_id in wanted]
    if fn.pop_selector is None:
        return nodes
    selector = parse_selector(fn.pop_selector)
    return [n for n in nodes if selector.matches(outbox.node_labels(n))]


def _version(session: Session, fn: Function, version: str) -> FunctionVersion:
    row = session.scalar(
        select(FunctionVersion).where(
            FunctionVersion.function_id == fn.id, FunctionVersion.version == version
        )
    )
    if row is None:
        raise NotFound(f"function {fn.id} has no version {version}")
    return row


def _supersede_running(session: Session, fn: Function) -> None:
    running = session.scalars(
        select(Deployment).where(
            Deployment.function_id == fn.id, Deployment.state == DeploymentState.IN_PROGRESS
        )
    )
    for dep in running:
        dep.state = DeploymentState.SUPERSEDED
        dep.updated_at = utcnow()
        for dn in session.scalars(
            select(DeploymentNode).where(
                DeploymentNode.deployment_id == dep.id,
                DeploymentNode.state == NodeRolloutState.WAITING,
            )
        ):
            dn.state = NodeRolloutState.SKIPPED


def _start(
    session: Session,
    who: Principal,
    fn: Function,
    version: FunctionVersion,
    nodes: list[Node],
    *,
    strategy: str,
    kind: DeploymentKind,
    target_pop: list[str] | None,
) -> Deployment:
    _supersede_running(session, fn)
    dep = Deployment(
        function_id=fn.id,
        version=version.version,
        previous_version=fn.active_version,
        kind=kind,
        strategy=strategy,
        target_pop=target_pop,
        state=DeploymentState.IN_PROGRESS if nodes else DeploymentState.SUCCEEDED,
        created_by=who.actor,
    )
    session.add(dep)
    session.flush()
    for wave, members in enumerate(plan_waves(strategy, nodes)):
        for node in members:
            session.add(
                DeploymentNode(
                    deployment_id=dep.id,
                    node_id=node.id,
                    wave=wave,
                    state=NodeRolloutState.PENDING if wave == 0 else NodeRolloutState.WAITING,
                )
            )
            if wave == 0:
                outbox.supersede_deploys(session, node.id, fn.id)
                outbox.enqueue_deploy(session, node, fn, version, dep.id)
    fn.active_version = version.version
    fn.updated_at = utcnow()
    audit.record(
        session,
        who,
        f"function.{kind}",
        target_type="function",
        target_id=fn.id,
        project_id=fn.project_id,
        details={
            "deployment_id": dep.id,
            "version": version.version,
            "previous_version": dep.previous_version,
            "strategy": strategy,
            "nodes": [n.id for n in nodes],
        },
    )
    session.commit()
    return dep


def deploy(
    session: Session,
    who: Principal,
    function_id: str,
    *,
    version: str,
    target_pop: list[str] | None,
    strategy: str,
    caps: ResourceCaps,
) -> Deployment:
    fn = get_function(session, who, function_id, minimum="developer")
    check_caps(caps, fn)
    row = _version(session, fn, version)
    nodes = select_targets(session, fn, target_pop)
    return _start(session, who, fn, row, nodes, strategy=strategy, kind=DeploymentKind.DEPLOY,
                  target_pop=target_pop)


def rollback(
    session: Session,
    who: Principal,
    function_id: str,
    *,
    version: str | None,
    caps: ResourceCaps,
) -> Deployment:
    """Deploy an earlier version (default: the one active before the current) to the
    nodes of the current deployment, all at once."""
    fn = get_function(session, who, function_id, minimum="developer")
    check_caps(caps, fn)
    current = session.scalar(
        select(Deployment)
        .where(Deployment.function_id == fn.id)
        .order_by(Deployment.created_at.desc(), Deployment.id.desc())
        .limit(1)
    )
    target = version or (current.previous_version if current else None)
    if target is None:
        raise Conflict(f"function {fn.id} has no earlier version to roll back to")
    row = _version(session, fn, target)
    if current is not None:
        node_ids = select(DeploymentNode.node_id).where(DeploymentNode.deployment_id == current.id)
        nodes = list(
            session.scalars(
                select(Node).where(Node.id.in_(node_ids)).order_by(Node.pop_id, Node.id)
            )
        )
    else:
        nodes = select_targets(session, fn, None)
    return _start(session, who, fn, row, nodes, strategy="pull", kind=DeploymentKind.ROLLBACK,
                  target_pop=current.target_pop if current else None)


def describe(session: Session, dep: Deployment) -> DeploymentOut:
    nodes = session.scalars(
        select(DeploymentNode)
        .where(DeploymentNode.deployment_id == dep.id)
        .order_by(DeploymentNode.wave, DeploymentNode.node_id)
    )
    return DeploymentOut(
        id=dep.id,
        deployment_id=dep.id,
        function_id=dep.function_id,
        version=dep.version,
        previous_version=dep.previous_version,
        kind=dep.kind,
        strategy=dep.strategy,
        state=dep.state,
        created_at=dep.created_at,
        nodes=[
            DeploymentNodeOut(node_id=n.node_id, state=n.state, message=n.message) for n in nodes
        ],
    )


def function_deployments(session: Session, who: Principal, function_id: str) -> Select[Any]:
    """A function's deployments, newest first (404 for a function the caller cannot see)."""
    fn = get_function(session, who, function_id)
    return (
        select(Deployment)
        .where(Deployment.function_id == fn.id)
        .order_by(Deployment.created_at.desc(), Deployment.id.desc())
    )


def get_deployment(session: Session, who: Principal, deployment_id: str) -> Deployment:
    dep = session.get(Deployment, deployment_id)
    if dep is None:
        raise NotFound(f"no deployment {deployment_id}")
    try:
        get_function(session, who, dep.function_id)
    except NotFound as exc:
        raise NotFound(f"no deployment {deployment_id}") from exc
    return dep


# ---- transport-neutral node calls ------------------------------------------------


def pending_instructions(
    session: Session, node_id: str, *, store: ArtifactStore, url_ttl_s: int
) -> list[Instruction]:
    """Every instruction the node has not acked, oldest first; handed out again until
    acked (at-least-once: the node deduplicates by id).

    A row that cannot be read as an instruction (fields missing or of the wrong type:
    written by hand or by an older release) is never sent: it is marked failed, as if
    the node had acked it `error`, and logged, so the node's stream stays up and the
    instructions after it flow. The checks are the contract's model and the protobuf
    encoding, the stricter of the two transports, so what the HTTP heartbeat hands out
    a stream could send too.
    """
    out: list[Instruction] = []
    failed = False
    for row in outbox.pending_rows(session, node_id):
        try:
            instruction = outbox.render(row, store, url_ttl_s)
            instruction_to_proto(instruction)
        except (outbox.Undecodable, KeyError, TypeError, ValueError, AttributeError) as exc:
            _fail_undecodable(session, row, exc)
            failed = True
            continue
        out.append(instruction)
    if failed:
        session.commit()
    return out


def _fail_undecodable(session: Session, row: OutboxInstruction, exc: Exception) -> None:
    # One line: the message is shown on the deployment and in `edgefn` listings.
    reason = " ".join(f"undecodable {row.type!r} instruction: {type(exc).__name__}: {exc}".split())
    log.error("outbox instruction %s for node %s skipped, never sent: %s",
              row.id, row.node_id, reason)
    # Recorded as the node's error ack would be: a deploy's deployment fails.
    ack = AckIn.model_construct(id=row.id, state=AckState.ERROR, message=reason[:1000])
    ack_instruction(session, row.node_id, ack)
    row.state = OutboxState.FAILED


def _advance(session: Session, dep: Deployment) -> None:
    members = list(
        session.scalars(
            select(DeploymentNode)
            .where(DeploymentNode.deployment_id == dep.id)
            .execution_options(populate_existing=True)
        )
    )
    if any(m.state == NodeRolloutState.ERROR for m in members):
        dep.state = DeploymentState.FAILED
        for m in members:
            if m.state == NodeRolloutState.WAITING:
                m.state = NodeRolloutState.SKIPPED
        return
    if all(m.state == NodeRolloutState.CACHED for m in members):
        dep.state = DeploymentState.SUCCEEDED
        return
    waiting = sorted({m.wave for m in members if m.state == NodeRolloutState.WAITING})
    if not waiting or any(m.state == NodeRolloutState.PENDING for m in members):
        return
    fn = session.get(Function, dep.function_id)
    if fn is None:
        return
    version = _version(session, fn, dep.version)
    for m in members:
        if m.wave == waiting[0]:
            node = session.get(Node, m.node_id)
            if node is not None:
                m.state = NodeRolloutState.PENDING
                outbox.supersede_deploys(session, node.id, fn.id)
                outbox.enqueue_deploy(session, node, fn, version, dep.id)


def _locked(session: Session, deployment_id: str) -> Deployment | None:
    """The deployment, its row locked until the caller commits (PostgreSQL; SQLite
    transactions are serialized already)."""
    return session.get(
        Deployment, deployment_id, with_for_update=True, populate_existing=True
    )


def advance_stalled(session: Session) -> None:
    """Move on every rollout that no ack will move: one whose pending nodes were
    deleted before they acked. A duty of the maintenance lease (`leases.duties`);
    the caller commits."""
    running = select(Deployment.id).where(Deployment.state == DeploymentState.IN_PROGRESS)
    ids = list(session.scalars(running))
    for deployment_id in ids:
        dep = _locked(session, deployment_id)
        if dep is not None and dep.state == DeploymentState.IN_PROGRESS:
            _advance(session, dep)
    session.flush()


def ack_instruction(session: Session, node_id: str, ack: AckIn) -> None:
    """Record a node's answer to one instruction; unknown or repeated acks are ignored
    so a node may resend them. The caller commits."""
    row = session.get(OutboxInstruction, ack.id)
    if row is None or row.node_id != node_id or row.state == OutboxState.ACKED:
        return
    dep = None
    if row.deployment_id is not None and row.type == InstructionType.DEPLOY:
        # Acks of one deployment are applied one at a time, whichever replica or
        # thread takes them: each then sees the others' members, so the ack that
        # completes a wave is the one that sends the next (exactly once). The
        # deployment is locked before the instruction's row, the order a new deploy
        # takes them in (superseding the running one, then its pending rows), so
        # that the two never wait for each other.
        dep = _locked(session, row.deployment_id)
        row = session.get(OutboxInstruction, ack.id, populate_existing=True)
        if row is None or row.state == OutboxState.ACKED:
            return
    row.state = OutboxState.ACKED
    row.ack_state = ack.state
    row.ack_message = ack.message
    row.acked_at = utcnow()
    if row.deployment_id is None or row.type != InstructionType.DEPLOY:
        return
    member = session.get(DeploymentNode, (row.deployment_id, node_id), populate_existing=True)
    if member is None or dep is None or member.state not in (
        NodeRolloutState.PENDING, NodeRolloutState.WAITING
    ):
        return
    member.state = ack.state
    member.message = ack.message
    member.updated_at = utcnow()
    dep.updated_at = utcnow()
    if dep.state == DeploymentState.IN_PROGRESS:
        session.flush()
        _advance(session, dep)
