"""The outbox: per-node instructions, built from the registry and route table and
handed out (with freshly minted artifact URLs) until the node acks them.

A row's payload is the dump of the contract's instruction model
(`edgefn.contract.instructions`: deploy, undeploy, config; docs/api.md), plus, for a
deploy, the `artifact_key` its URL is minted from when it is handed out. A deploy
carries every policy field, defaults included (names of secrets only: a node
resolves the values itself, docs/security.md); a config carries the node's route
table and every quota the admin set.

A node sees only what is deployed to it: a function is deployed to a node from
its first deploy instruction for that node until an undeploy
(`deployed_functions`); the node's route table holds only those functions'
routes, a node registered later gets only what the latest deployment of each
function targets (its selector, or its `target_pop`), and the secrets call
answers only for those functions.

`watch` reports, after each commit, which nodes got new instructions, so a
transport that pushes (the gRPC stream) can send them at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from edgefn.contract import (
    ConfigInstruction,
    DeployInstruction,
    Instruction,
    InstructionType,
    QuotaSpec,
    RouteSpec,
    TrafficSplit,
    UndeployInstruction,
)
from edgefn.controlplane import telemetry
from edgefn.controlplane.artifacts import ArtifactStore
from edgefn.controlplane.deployments.models import Deployment, OutboxInstruction, OutboxState
from edgefn.controlplane.functions.models import Function, FunctionVersion
from edgefn.controlplane.nodes.models import Node
from edgefn.controlplane.quotas.models import ProjectQuota
from edgefn.controlplane.routes.models import Route, claim_held
from edgefn.controlplane.selector import matches

_NEW_FOR = "edgefn.outbox.new_for_nodes"
_TOLD = "edgefn.outbox.told_nodes"


def node_labels(node: Node) -> dict[str, Any]:
    """What selectors see: the node's labels plus its pop and id."""
    return {**(node.labels or {}), "pop_id": node.pop_id, "pop": node.pop_id, "node_id": node.id}


def route_spec(route: Route, project_id: str) -> RouteSpec:
    return RouteSpec(
        id=route.id,
        host=route.host,
        path=route.path,
        methods=tuple(route.methods),
        priority=route.priority,
        function_id=route.function_id,
        project_id=project_id,
    )


class Undecodable(ValueError):
    """An outbox row that is not an instruction a node could be sent."""


def function_of(payload: Any) -> Any:
    """The payload's function_id; None for a payload that is not even an object."""
    return payload.get("function_id") if isinstance(payload, dict) else None


def deployed_functions(session: Session, node_id: str) -> set[str]:
    """Ids of the functions deployed to the node: the last deploy or undeploy
    instruction queued for it (pending or acked, never one that failed) is a deploy."""
    latest: dict[str, str] = {}
    rows = session.execute(
        select(OutboxInstruction.type, OutboxInstruction.payload)
        .where(
            OutboxInstruction.node_id == node_id,
            OutboxInstruction.type.in_((InstructionType.DEPLOY, InstructionType.UNDEPLOY)),
            OutboxInstruction.state != OutboxState.FAILED,
        )
        .order_by(OutboxInstruction.id)
    )
    for kind, payload in rows:
        fid = function_of(payload)
        if fid:
            latest[fid] = kind
    return {fid for fid, kind in latest.items() if kind == InstructionType.DEPLOY}


def routes_for(
    session: Session, node: Node, function_id: str | None = None
) -> tuple[RouteSpec, ...]:
    """Routes a node serves: those whose pop_selector matches it, of one function
    (for its deploy instruction) or of every function deployed to it, and whose
    project holds their claim (docs/security.md, Route tenancy)."""
    query = (
        select(Route, Function.project_id)
        .join(Function, Function.id == Route.function_id)
        .where(claim_held())
        .order_by(Route.host, Route.path, Route.priority, Route.id)
    )
    if function_id is not None:
        query = query.where(Route.function_id == function_id)
        deployed = {function_id}
    else:
        session.flush()  # deploys queued in this transaction count
        deployed = deployed_functions(session, node.id)
    labels = node_labels(node)
    return tuple(
        route_spec(r, project_id)
        for r, project_id in session.execute(query)
        if r.function_id in deployed and matches(r.pop_selector, labels)
    )


def quotas_for(session: Session) -> dict[str, QuotaSpec]:
    """Every project quota the admin set, by project id (the others: node defaults)."""
    return {
        row.project_id: row.spec()
        for row in session.scalars(select(ProjectQuota).order_by(ProjectQuota.project_id))
    }


def _queue(
    session: Session, node_id: str, instruction: Instruction, **unsent: Any
) -> OutboxInstruction:
    """Add the instruction's row: its dump, and `unsent` fields the control plane keeps
    for itself (they never reach a node). It carries the trace context of its span, a
    child of the current one, so that the node's spans of it join the trace."""
    with telemetry.span(f"outbox {instruction.type}", {"edgefn.node_id": node_id}):
        trace_context = telemetry.current_context()
    if trace_context is not None:
        instruction = instruction.model_copy(update={"trace_context": trace_context})
    row = OutboxInstruction(
        node_id=node_id,
        type=instruction.type,
        deployment_id=getattr(instruction, "deployment_id", None),
        payload=instruction.model_dump(mode="json", exclude={"id"}) | unsent,
    )
    session.add(row)
    return row


def enqueue_deploy(
    session: Session,
    node: Node,
    fn: Function,
    version: FunctionVersion,
    deployment_id: str | None,
    *,
    split: TrafficSplit | None = None,
) -> OutboxInstruction:
    instruction = DeployInstruction(
        function_id=fn.id,
        project_id=fn.project_id,
        version=version.version,
        sha256=version.sha256,
        abi=version.abi,
        entrypoint=fn.entrypoint,
        memory_pages=fn.memory_pages,
        max_execution_ms=fn.max_execution_ms,
        max_response_bytes=fn.max_response_bytes,
        env=dict(fn.env or {}),
        routes=routes_for(session, node, fn.id),
        deployment_id=deployment_id,
        # Every policy field, defaults included: what the node enforces is on record.
        policy=fn.function_policy(),
        split=split,
        data=version.data_archive(),
    )
    # The URLs are minted from the keys when the instruction is handed out, and the
    # precompiled code looked up then: whatever is ready by the time it is sent.
    return _queue(session, node.id, instruction, artifact_key=version.artifact_key,
                  data_key=version.data_key)


def enqueue_undeploy_everywhere(session: Session, function_id: str) -> None:
    """Undeploy on every node told to deploy it; older pending deploys are dropped."""
    node_ids: set[str] = set()
    deploys = select(OutboxInstruction).where(OutboxInstruction.type == InstructionType.DEPLOY)
    for row in session.scalars(deploys):
        if function_of(row.payload) == function_id and row.state != OutboxState.FAILED:
            node_ids.add(row.node_id)
            if row.state == OutboxState.PENDING:
                row.state = OutboxState.SUPERSEDED
    for node_id in sorted(node_ids):
        _queue(session, node_id, UndeployInstruction(function_id=function_id))


def supersede_deploys(session: Session, node_id: str, function_id: str) -> None:
    """A newer deploy of the function replaces any not yet acked on this node."""
    rows = session.scalars(
        select(OutboxInstruction).where(
            OutboxInstruction.node_id == node_id,
            OutboxInstruction.type == InstructionType.DEPLOY,
            OutboxInstruction.state == OutboxState.PENDING,
        )
    )
    for row in rows:
        if function_of(row.payload) == function_id:
            row.state = OutboxState.SUPERSEDED


def enqueue_config(session: Session, node: Node) -> None:
    """The node's full route table and the project quotas; replaces any config it has
    not picked up yet."""
    session.flush()
    for row in session.scalars(
        select(OutboxInstruction).where(
            OutboxInstruction.node_id == node.id,
            OutboxInstruction.type == InstructionType.CONFIG,
            OutboxInstruction.state == OutboxState.PENDING,
        )
    ):
        row.state = OutboxState.SUPERSEDED
    config = ConfigInstruction(routes=routes_for(session, node), quotas=quotas_for(session))
    _queue(session, node.id, config)


def broadcast_config(session: Session) -> None:
    for node in session.scalars(select(Node).order_by(Node.id)):
        enqueue_config(session, node)


def _targets(deployment: Deployment, fn: Function, node: Node) -> bool:
    """Whether the deployment, had the node existed then, would have targeted it."""
    if deployment.target_pop is not None:
        return node.pop_id in deployment.target_pop
    return matches(fn.pop_selector, node_labels(node))


def enqueue_initial(session: Session, node: Node) -> None:
    """A new node gets each active function whose latest deployment targets it (by
    selector or `target_pop`), then the route table of what it got."""
    active = list(session.scalars(
        select(Function).where(Function.active_version.is_not(None)).order_by(Function.id)
    ))
    for fn in active:
        latest = session.scalar(
            select(Deployment)
            .where(Deployment.function_id == fn.id)
            .order_by(Deployment.created_at.desc(), Deployment.id.desc())
            .limit(1)
        )
        if latest is None or not _targets(latest, fn, node):
            continue
        version = session.scalar(
            select(FunctionVersion).where(
                FunctionVersion.function_id == fn.id,
                FunctionVersion.version == fn.active_version,
            )
        )
        if version is not None:
            enqueue_deploy(session, node, fn, version, None)
    enqueue_config(session, node)


def render(
    row: OutboxInstruction, store: ArtifactStore, ttl: int,
    precompiled_code: list[dict[str, str]] | None = None,
) -> Instruction:
    """The row as the instruction a node is sent, with a fresh artifact URL, and for
    a deploy the ready precompiled code `precompiled_code` names (`precompiled.for_node`:
    engine tag, store key, sha256), each with a fresh URL too. A payload
    that is not an object or names no readable key is `Undecodable`; one missing a
    field is the KeyError naming it; one the model refuses, its ValidationError."""
    if not isinstance(row.payload, dict):
        raise Undecodable(f"the payload is a {type(row.payload).__name__}, not an object")
    payload = dict(row.payload)
    key = payload.pop("artifact_key", None)
    if key is not None and not isinstance(key, str):
        raise Undecodable("artifact_key is not a string")
    if key:
        payload["artifact_url"] = store.presign_get(key, ttl)
    data_key = payload.pop("data_key", None)
    if isinstance(payload.get("data"), dict) and isinstance(data_key, str) and data_key:
        payload["data"] = {**payload["data"], "url": store.presign_get(data_key, ttl)}
    if precompiled_code:
        payload["precompiled"] = [
            {"engine_tag": p["engine_tag"], "sha256": p["sha256"],
             "url": store.presign_get(p["artifact_key"], ttl)} for p in precompiled_code]
    try:
        return Instruction.from_json({**payload, "id": row.id})
    except ValidationError as exc:
        missing = [e["loc"] for e in exc.errors() if e["type"] == "missing"]
        if missing:
            raise KeyError(".".join(map(str, missing[0]))) from exc
        raise


def pending_rows(session: Session, node_id: str) -> list[OutboxInstruction]:
    return list(
        session.scalars(
            select(OutboxInstruction)
            .where(
                OutboxInstruction.node_id == node_id,
                OutboxInstruction.state == OutboxState.PENDING,
            )
            .order_by(OutboxInstruction.id)
        )
    )


def watch(
    factory: sessionmaker[Session],
    notify: Callable[[Iterable[str]], None],
    *,
    committing: Callable[[Session, Iterable[str]], None] | None = None,
) -> None:
    """Call `notify(node_ids)` after every commit, by a session of `factory`, that
    added instructions for those nodes; and `committing(session, node_ids)` within
    the transaction, just before it commits (for signals the database itself
    delivers at commit: PostgreSQL's NOTIFY to other replicas, `stream.bus`), once
    per transaction however many flushes added them.

    Hooking the commit itself, rather than each endpoint, covers every path that
    writes the outbox (deploys, rollbacks, deletes, routes, new nodes, and rollout
    waves advanced by an ack) and never signals an instruction before it is
    visible to other sessions.
    """

    @event.listens_for(factory, "after_flush")
    def _collect(session: Session, _flush_context: Any) -> None:
        # After a flush `session.new` still lists what the flush inserted.
        ids = {obj.node_id for obj in session.new if isinstance(obj, OutboxInstruction)}
        if ids:
            session.info.setdefault(_NEW_FOR, set()).update(ids)

    @event.listens_for(factory, "before_commit")
    def _committing(session: Session) -> None:
        if committing is None:
            return
        session.flush()  # what the commit would flush counts
        # Also called when a savepoint is released: each id goes out once.
        told = session.info.setdefault(_TOLD, set())
        ids = session.info.get(_NEW_FOR, set()) - told
        if ids:
            committing(session, ids)
            told.update(ids)

    @event.listens_for(factory, "after_commit")
    def _committed(session: Session) -> None:
        session.info.pop(_TOLD, None)
        ids = session.info.pop(_NEW_FOR, None)
        if ids:
            notify(ids)

    @event.listens_for(factory, "after_rollback")
    def _rolled_back(session: Session) -> None:
        session.info.pop(_TOLD, None)
        session.info.pop(_NEW_FOR, None)
