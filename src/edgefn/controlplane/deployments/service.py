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

A canary or gradual deploy that names `gates` is a gated rollout (`RolloutState`):
each wave bakes once its nodes acked, and the `rollout_gates` duty, on the replica
holding the maintenance lease, judges it from the nodes' reported figures
(`rollouts.judge`): the next wave, a rollback deployment to the previous version,
or a wait for more requests. Its state is in the deployment's row, so whichever
replica holds the lease next resumes it.

A split deploy that names `gates` is one too, its waves being shares of the traffic
rather than sets of nodes: every target gets the split at once, bakes, and a
promotion sends every node the next share (`rollouts.shares`; at 100 a plain deploy
of the new version, which ends the split). The same gates, rollback and steering
apply.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from edgefn.contract import (
    AckState,
    Instruction,
    InstructionType,
    ResourceCaps,
    TraceContext,
    TrafficSplit,
)
from edgefn.controlplane import telemetry
from edgefn.controlplane.artifacts import ArtifactStore
from edgefn.controlplane.audit import service as audit
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.db import utcnow
from edgefn.controlplane.deployments import outbox, rollouts
from edgefn.controlplane.deployments.models import (
    Deployment,
    DeploymentKind,
    DeploymentNode,
    DeploymentState,
    NodeRolloutState,
    OutboxInstruction,
    OutboxState,
    RolloutState,
)
from edgefn.controlplane.deployments.schemas import (
    AckIn,
    DeploymentNodeOut,
    DeploymentOut,
    DeploySplit,
    Gates,
    RolloutNodeOut,
    RolloutOut,
)
from edgefn.controlplane.errors import Conflict, NotFound
from edgefn.controlplane.functions.models import Function, FunctionVersion
from edgefn.controlplane.functions.service import check_caps, get_function
from edgefn.controlplane.nodes.models import Node
from edgefn.controlplane.precompiled import service as precompiled
from edgefn.controlplane.selector import parse_selector
from edgefn.controlplane.stream.messages import instruction_to_proto

log = logging.getLogger("edgefn.controlplane.deployments")



def plan_waves(strategy: str, nodes: list[Node], percent: int = 25) -> list[list[Node]]:
    if not nodes or strategy == "pull":
        return [nodes] if nodes else []
    waves = [nodes[:1]]
    rest = nodes[1:]
    if strategy == "canary":
        return waves + ([rest] if rest else [])
    size = max(1, math.ceil(len(nodes) * percent / 100))
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
        if dep.rollout_state in _LIVE:
            dep.rollout_state = RolloutState.ABORTED
            dep.reason = "superseded by a newer deployment"
        for dn in session.scalars(
            select(DeploymentNode).where(
                DeploymentNode.deployment_id == dep.id,
                DeploymentNode.state == NodeRolloutState.WAITING,
            )
        ):
            dn.state = NodeRolloutState.SKIPPED


def _begin(
    session: Session,
    who: Principal,
    fn: Function,
    version: FunctionVersion,
    nodes: list[Node],
    *,
    strategy: str,
    kind: DeploymentKind,
    target_pop: list[str] | None,
    gates: Gates | None,
    details: dict[str, Any] | None,
    split: DeploySplit | None = None,
) -> Deployment:
    _supersede_running(session, fn)
    # Only a deploy that asks for gates is watched; canary and gradual without them
    # move on at each wave's acks, a split without them stays at its share.
    gated = (strategy != "pull" or split is not None) and bool(nodes) and gates is not None
    dep = Deployment(
        function_id=fn.id,
        version=version.version,
        previous_version=fn.active_version,
        kind=kind,
        strategy=strategy,
        target_pop=target_pop,
        state=DeploymentState.IN_PROGRESS if nodes else DeploymentState.SUCCEEDED,
        created_by=who.actor,
        rollout_state=RolloutState.PENDING if gated else None,
        wave=0,
        gates=gates.model_dump() if gated and gates is not None else None,
        decisions=[] if gated else None,
        split=split.model_dump() if split is not None else None,
    )
    session.add(dep)
    session.flush()
    first = rollouts.split_at(dep, 0)
    percent = gates.wave_percent if gates is not None else 25
    for wave, members in enumerate(plan_waves(strategy, nodes, percent)):
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
                outbox.enqueue_deploy(session, node, fn, version, dep.id, split=first)
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
            "split": split.model_dump() if split is not None else None,
            "nodes": [n.id for n in nodes],
            **(details or {}),
        },
    )
    return dep


@telemetry.traced("deployments.deploy")
def deploy(
    session: Session,
    who: Principal,
    function_id: str,
    *,
    version: str,
    target_pop: list[str] | None,
    strategy: str,
    caps: ResourceCaps,
    gates: Gates | None = None,
    split: DeploySplit | None = None,
) -> Deployment:
    fn = get_function(session, who, function_id, minimum="developer")
    check_caps(caps, fn)
    row = _version(session, fn, version)
    nodes = select_targets(session, fn, target_pop)
    if split is not None:
        # A split is itself the canary, on every target at once: later waves would
        # be sent without it. Its gates, if any, judge each share instead.
        strategy = "pull"
        if gates is not None and fn.active_version in (None, version):
            # The nodes would split with whatever they ran before, which the
            # deployment cannot name: nothing to judge against, nothing to go back to.
            raise Conflict(f"a gated split needs a version other than the active one "
                           f"({fn.active_version or 'none'}) to share the traffic with")
    dep = _begin(session, who, fn, row, nodes, strategy=strategy, kind=DeploymentKind.DEPLOY,
                 target_pop=target_pop, gates=gates, details=None, split=split)
    session.commit()
    return dep


@telemetry.traced("deployments.rollback")
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
    dep = _begin(session, who, fn, _version(session, fn, target), _nodes_of(session, fn, current),
                 strategy="pull", kind=DeploymentKind.ROLLBACK,
                 target_pop=current.target_pop if current else None, gates=None, details=None)
    session.commit()
    return dep


def _nodes_of(session: Session, fn: Function, dep: Deployment | None) -> list[Node]:
    if dep is None:
        return select_targets(session, fn, None)
    node_ids = select(DeploymentNode.node_id).where(DeploymentNode.deployment_id == dep.id)
    return list(
        session.scalars(select(Node).where(Node.id.in_(node_ids)).order_by(Node.pop_id, Node.id))
    )


def describe(session: Session, dep: Deployment) -> DeploymentOut:
    members = list(session.scalars(
        select(DeploymentNode)
        .where(DeploymentNode.deployment_id == dep.id)
        .order_by(DeploymentNode.wave, DeploymentNode.node_id)
    ))
    rollout = None
    if dep.rollout_state is not None:
        shares = rollouts.shares(dep)
        rollout = RolloutOut(
            state=dep.rollout_state,
            wave=dep.wave,
            waves=len(shares) or max((m.wave for m in members), default=0) + 1,
            percent=shares[dep.wave] if dep.wave < len(shares) else None,
            gates=rollouts.gates_of(dep).model_dump(),
            bake_started_at=dep.bake_started_at,
            reason=dep.reason,
            rollback_id=dep.rollback_id,
            decisions=dep.decisions or [],
            nodes=_rollout_nodes(session, dep, members),
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
            DeploymentNodeOut(node_id=n.node_id, state=n.state, message=n.message)
            for n in members
        ],
        split=rollouts.split_of(dep),
        rollout=rollout,
    )


def _rollout_nodes(
    session: Session, dep: Deployment, members: list[DeploymentNode]
) -> list[RolloutNodeOut]:
    out = []
    for m in members:
        node = session.get(Node, m.node_id)
        stats = rollouts.node_stats(node) if node is not None else {}
        new = stats.get(f"{dep.function_id}@{dep.version}")
        old = stats.get(f"{dep.function_id}@{dep.previous_version}")
        out.append(RolloutNodeOut(
            node_id=m.node_id, wave=m.wave, state=m.state,
            new=rollouts.summary(new), previous=rollouts.summary(old)))
    return out


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
    node = session.get(Node, node_id)
    for row in outbox.pending_rows(session, node_id):
        try:
            instruction = outbox.render(row, store, url_ttl_s, _precompiled(session, node, row))
            instruction_to_proto(instruction)
        except (outbox.Undecodable, KeyError, TypeError, ValueError, AttributeError) as exc:
            _fail_undecodable(session, row, exc)
            failed = True
            continue
        out.append(instruction)
    if failed:
        session.commit()
    return out


def _precompiled(
    session: Session, node: Node | None, row: OutboxInstruction
) -> list[dict[str, str]] | None:
    """The precompiled code a deploy row is sent with: what is ready, when it is
    handed out, for the tags the node reports (none before it reports any)."""
    payload = row.payload
    if (row.type != InstructionType.DEPLOY or node is None or not node.engine_tags
            or not isinstance(payload, dict)):
        return None
    return precompiled.for_node(session, node, str(payload.get("function_id")),
                                str(payload.get("version")))


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
    # Every ack of a deployment comes here, one at a time: counting its members by
    # state keeps an ack's cost flat, where reading them all made N acks cost N².
    members_of = DeploymentNode.deployment_id == dep.id
    counts = {
        str(state): count for state, count in session.execute(
            select(DeploymentNode.state, func.count()).where(members_of)
            .group_by(DeploymentNode.state)
        )
    }
    if counts.get(NodeRolloutState.ERROR):
        members = _members(session, dep)
        failed = [m for m in members if m.state == NodeRolloutState.ERROR]
        dep.state = DeploymentState.FAILED
        for m in members:
            if m.state == NodeRolloutState.WAITING:
                m.state = NodeRolloutState.SKIPPED
        if dep.rollout_state in _LIVE:
            # The nodes that took the new version go back with the rest.
            why = f"node {failed[0].node_id} could not load it: {failed[0].message or 'error'}"
            _decide(dep, "rollback", why)
            _roll_back(session, SYSTEM, dep, why=f"automatic rollback: {why}",
                       final=RolloutState.ROLLED_BACK)
        return
    if set(counts) <= {NodeRolloutState.CACHED}:
        if rollouts.steps_left(dep):
            # A split's share serves on every node: it bakes before the next share.
            _bake(dep)
            return
        dep.state = DeploymentState.SUCCEEDED
        if dep.rollout_state is not None:
            dep.rollout_state = RolloutState.DONE
        return
    if not counts.get(NodeRolloutState.WAITING) or counts.get(NodeRolloutState.PENDING):
        return
    if dep.rollout_state is not None:
        # A gated rollout's wave serves: it bakes, and the gates duty moves it on.
        _bake(dep)
        return
    wave = session.scalar(select(func.min(DeploymentNode.wave)).where(
        members_of, DeploymentNode.state == NodeRolloutState.WAITING))
    if wave is not None:
        _send(session, dep, _members(session, dep, wave=wave))


def _bake(dep: Deployment) -> None:
    if dep.rollout_state in (RolloutState.PENDING, RolloutState.PROMOTING):
        dep.rollout_state = RolloutState.BAKING
        dep.bake_started_at = utcnow()


def _send(session: Session, dep: Deployment, members: list[DeploymentNode],
          split: TrafficSplit | None = None) -> None:
    """The deployment's version to each of `members`' nodes, under `split` if any."""
    fn = session.get(Function, dep.function_id)
    if fn is None:
        return
    version = _version(session, fn, dep.version)
    for m in members:
        node = session.get(Node, m.node_id)
        if node is not None:
            m.state = NodeRolloutState.PENDING
            outbox.supersede_deploys(session, node.id, fn.id)
            outbox.enqueue_deploy(session, node, fn, version, dep.id, split=split)


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
    # In the trace of the instruction: waves it starts are queued in it too.
    with telemetry.span(f"ack {row.type}", {
        "edgefn.node_id": node_id, "edgefn.instruction_id": row.id,
        "edgefn.ack_state": str(ack.state),
    }, parent=_trace_context(row)):
        _record_ack(session, row, dep, node_id, ack)


def _trace_context(row: OutboxInstruction) -> TraceContext | None:
    data = row.payload.get("trace_context") if isinstance(row.payload, dict) else None
    try:
        return TraceContext.model_validate(data) if data else None
    except ValueError:
        return None


def _record_ack(
    session: Session, row: OutboxInstruction, dep: Deployment | None, node_id: str, ack: AckIn
) -> None:
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


# ---- gated rollouts ------------------------------------------------------------

SYSTEM = Principal(kind="admin", id="rollouts")
_LIVE = (RolloutState.PENDING, RolloutState.BAKING, RolloutState.PROMOTING)


def _members(session: Session, dep: Deployment, *, wave: int | None = None) -> list[DeploymentNode]:
    """The deployment's members (those of `wave` only, when given), read afresh."""
    query = select(DeploymentNode).where(DeploymentNode.deployment_id == dep.id)
    if wave is not None:
        query = query.where(DeploymentNode.wave == wave)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def _decide(dep: Deployment, action: str, why: str, **figures: Any) -> None:
    entry = {"at": utcnow().isoformat(), "wave": dep.wave, "action": action, "why": why,
             **figures}
    dep.decisions = [*(dep.decisions or []), entry]
    dep.updated_at = utcnow()


def _promote(session: Session, dep: Deployment) -> None:
    """The next wave of nodes, or a split's next share on every node."""
    members = _members(session, dep)
    split = None
    if rollouts.shares(dep):
        if not rollouts.steps_left(dep):
            return
        wave = dep.wave + 1
        split = rollouts.split_at(dep, wave)
    else:
        waiting = sorted({m.wave for m in members if m.state == NodeRolloutState.WAITING})
        if not waiting:
            return
        wave = waiting[0]
        members = [m for m in members if m.wave == wave]
    dep.wave = wave
    dep.rollout_state = RolloutState.PROMOTING
    dep.bake_started_at = None
    _send(session, dep, members, split)


def _roll_back(session: Session, who: Principal, dep: Deployment, *, why: str,
               final: RolloutState) -> None:
    """Every node of `dep` back to its previous version, by a rollback deployment; `dep`
    is rolling_back until that one ends, then `final` (`_final_state`)."""
    fn = session.get(Function, dep.function_id)
    if fn is None or dep.previous_version is None:
        dep.rollout_state = final
        dep.reason = why
        dep.state = DeploymentState.FAILED
        return
    back = _begin(session, who, fn, _version(session, fn, dep.previous_version),
                  _nodes_of(session, fn, dep), strategy="pull", kind=DeploymentKind.ROLLBACK,
                  target_pop=dep.target_pop, gates=None,
                  details={"rolls_back": dep.id, "reason": why,
                           "automatic": final == RolloutState.ROLLED_BACK})
    dep.state = DeploymentState.FAILED
    dep.rollout_state = RolloutState.ROLLING_BACK
    dep.reason = why
    dep.rollback_id = back.id
    dep.updated_at = utcnow()


def _gate(session: Session, dep: Deployment) -> None:
    fn = session.get(Function, dep.function_id)
    if fn is None:
        return
    members = _members(session, dep)
    wave_ids = {m.node_id for m in members if m.state == NodeRolloutState.CACHED}
    nodes = list(session.scalars(select(Node).where(
        Node.id.in_([m.node_id for m in members]))))
    new = rollouts.figures([n for n in nodes if n.id in wave_ids], fn.id, dep.version)
    old = rollouts.figures(nodes, fn.id, dep.previous_version)
    gates = rollouts.gates_of(dep)
    action, why = rollouts.judge(gates, new, old)
    figures = {"new": new.as_json(), "previous": old.as_json()}
    if action == "wait":
        last = (dep.decisions or [{}])[-1]
        if last.get("action") != "wait" or last.get("wave") != dep.wave:
            _decide(dep, "wait", why, **figures)
        return
    if action == "rollback":
        _decide(dep, "rollback", why, **figures)
        _roll_back(session, SYSTEM, dep, why=f"automatic rollback: {why}",
                   final=RolloutState.ROLLED_BACK)
        log.warning("deployment %s rolled back: %s", dep.id, why)
        return
    if gates.manual:
        last = (dep.decisions or [{}])[-1]
        if last.get("action") != "hold" or last.get("wave") != dep.wave:
            _decide(dep, "hold", f"gates passed ({why}); waiting for `rollout promote`",
                    **figures)
        return
    _decide(dep, "promote", why, **figures)
    _promote(session, dep)


def drive_rollouts(session: Session) -> None:
    """Move every gated rollout on: judge each wave whose bake window is over, and
    close each rollback that has finished. A duty of the maintenance lease; the caller
    commits, so a replica that takes the lease over resumes from the stored state."""
    now = utcnow()
    ids = list(session.scalars(select(Deployment.id).where(Deployment.rollout_state.in_(
        [RolloutState.BAKING, RolloutState.ROLLING_BACK]))))
    for deployment_id in ids:
        dep = _locked(session, deployment_id)
        if dep is None:
            continue
        if dep.rollout_state == RolloutState.BAKING and dep.state == DeploymentState.IN_PROGRESS:
            if rollouts.baked(dep, now):
                _gate(session, dep)
        elif dep.rollout_state == RolloutState.ROLLING_BACK and dep.rollback_id:
            back = session.get(Deployment, dep.rollback_id)
            if back is not None and back.state != DeploymentState.IN_PROGRESS:
                dep.rollout_state = _final_state(dep)
                dep.updated_at = utcnow()
    session.flush()


def _final_state(dep: Deployment) -> RolloutState:
    aborted = any(d.get("action") == "abort" for d in dep.decisions or [])
    return RolloutState.ABORTED if aborted else RolloutState.ROLLED_BACK


def promote(session: Session, who: Principal, deployment_id: str) -> Deployment:
    """Send the next wave now, whatever the gates say (a `manual` rollout's way on)."""
    dep = get_deployment(session, who, deployment_id)
    get_function(session, who, dep.function_id, minimum="developer")
    dep = _locked(session, deployment_id) or dep
    if dep.rollout_state != RolloutState.BAKING or dep.state != DeploymentState.IN_PROGRESS:
        raise Conflict(f"deployment {dep.id} is {dep.rollout_state or dep.state}, not baking")
    _decide(dep, "promote", f"promoted by {who.actor}")
    _promote(session, dep)
    audit.record(session, who, "deployment.promote", target_type="deployment",
                 target_id=dep.id, project_id=_project(session, dep),
                 details={"wave": dep.wave})
    session.commit()
    return dep


def abort(session: Session, who: Principal, deployment_id: str) -> Deployment:
    """Stop a rollout and return its nodes to the previous version."""
    dep = get_deployment(session, who, deployment_id)
    get_function(session, who, dep.function_id, minimum="developer")
    dep = _locked(session, deployment_id) or dep
    if dep.rollout_state not in _LIVE or dep.state != DeploymentState.IN_PROGRESS:
        raise Conflict(f"deployment {dep.id} is {dep.rollout_state or dep.state}, not running")
    why = f"aborted by {who.actor}"
    _decide(dep, "abort", why)
    _roll_back(session, who, dep, why=why, final=RolloutState.ABORTED)
    session.commit()
    return dep


def _project(session: Session, dep: Deployment) -> str | None:
    fn = session.get(Function, dep.function_id)
    return fn.project_id if fn else None


def functions_sent_to(session: Session, node_id: str) -> dict[str, str]:
    """function id -> project id of every function a deployment has sent to node
    `node_id`: the functions whose log lines that node may forward."""
    rows = session.execute(
        select(Deployment.function_id, Function.project_id)
        .join(DeploymentNode, DeploymentNode.deployment_id == Deployment.id)
        .join(Function, Function.id == Deployment.function_id)
        .where(DeploymentNode.node_id == node_id)
        .distinct()
    ).all()
    return {function_id: project_id for function_id, project_id in rows}
