"""Route rules: a route belongs to its function's project, and it may only take a
host, or a path on the `*` host, that no other project holds (contract/tenancy.py,
docs/security.md, Route tenancy). Every change sends each node its new route table.

Claims are taken under one lock (PostgreSQL: an advisory lock; SQLite: every
transaction is BEGIN IMMEDIATE already), so two projects claiming overlapping
hosts or paths at once cannot both win; the unique (host, path) of a claim is
the last line for equal ones.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Exists, Select, and_, delete, exists, not_, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgefn.contract.tenancy import WHOLE_HOST, Claims, claim_key, claim_of
from edgefn.controlplane.audit import service as audit
from edgefn.controlplane.auth.models import Project
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.auth.service import require_admin, require_project_role
from edgefn.controlplane.deployments import outbox
from edgefn.controlplane.errors import Conflict, NotFound
from edgefn.controlplane.functions.models import Function
from edgefn.controlplane.functions.service import get_function
from edgefn.controlplane.routes.models import Route, RouteClaim, claim_held, claim_path_column
from edgefn.controlplane.routes.schemas import ClaimIn, RouteIn

# pg_advisory_xact_lock key serializing claims ("edgefn" "rout" as bytes).
_PG_LOCK_KEY = 0x6564_6766_726F_7574


def create_route(session: Session, who: Principal, body: RouteIn) -> Route:
    fn = get_function(session, who, body.function_id, minimum="developer")
    _take_claim(session, body.host, body.path, fn.project_id)
    clash = session.scalar(
        select(Route.id).where(
            Route.host == body.host, Route.path == body.path, Route.priority == body.priority
        )
    )
    if clash:
        raise Conflict(f"a route for {body.host}{body.path} with priority {body.priority} exists")
    route = Route(**body.model_dump())
    session.add(route)
    _flush_or_conflict(session, f"a route for {body.host}{body.path} exists")
    audit.record(
        session,
        who,
        "route.create",
        target_type="route",
        target_id=route.id,
        project_id=fn.project_id,
        details=body.model_dump(),
    )
    outbox.broadcast_config(session)
    session.commit()
    return route


def visible_routes(who: Principal) -> Select[Route]:
    query = select(Route).order_by(Route.host, Route.path, Route.priority.desc(), Route.id)
    projects = who.visible_projects()
    if projects is not None:
        query = query.join(Function, Function.id == Route.function_id).where(
            Function.project_id.in_(projects)
        )
    return query


def route_url(edge_url: str, host: str, path: str) -> str:
    """Where a route is reached on the edge at `edge_url`: on the route's host (the
    edge's own for `*`; a `*.example.com` host stays a pattern) with the edge's
    scheme and port, at the route's path (a `/api/*` prefix: `/api/`)."""
    base = urlsplit(edge_url)
    name = base.hostname if host == "*" else host
    assert name is not None  # the settings refuse an edge URL without a host
    if ":" in name:  # an IPv6 address
        name = f"[{name}]"
    port = f":{base.port}" if base.port is not None else ""
    return f"{base.scheme}://{name}{port}{path.removesuffix('*')}"


def live_urls(session: Session, function_id: str, edge_url: str | None) -> list[str] | None:
    """The function's URLs on the edge: one per route that serves it (its project
    holds the route's claim), highest priority first; None when `edge_url` is."""
    if edge_url is None:
        return None
    rows = session.execute(
        select(Route.host, Route.path)
        .join(Function, Function.id == Route.function_id)
        .where(Route.function_id == function_id, claim_held())
        .order_by(Route.priority.desc(), Route.host, Route.path)
    )
    return list(dict.fromkeys(route_url(edge_url, host, path) for host, path in rows))


def serving_ids(session: Session, route_ids: list[str]) -> set[str]:
    """Those of these routes whose project holds their claim: the ones nodes get."""
    query = (
        select(Route.id)
        .join(Function, Function.id == Route.function_id)
        .where(Route.id.in_(route_ids), claim_held())
    )
    return set(session.scalars(query))


def delete_route(session: Session, who: Principal, route_id: str) -> None:
    route = session.get(Route, route_id)
    fn = session.get(Function, route.function_id) if route else None
    if route is None or fn is None or who.role_in(fn.project_id) is None:
        raise NotFound(f"no route {route_id}")
    require_project_role(who, fn.project_id, "developer")
    audit.record(
        session,
        who,
        "route.delete",
        target_type="route",
        target_id=route.id,
        project_id=fn.project_id,
        details={"host": route.host, "path": route.path},
    )
    host, path = route.host, route.path
    session.delete(route)
    session.flush()
    # The last route under a claim releases it, unless the admin pinned it.
    if not _has_routes_under(session, host, path, fn.project_id):
        key_host, key_path = claim_key(host, path)
        session.execute(
            delete(RouteClaim).where(
                RouteClaim.host == key_host,
                RouteClaim.path == key_path,
                RouteClaim.project_id == fn.project_id,
                RouteClaim.pinned.is_(False),
            )
        )
    outbox.broadcast_config(session)
    session.commit()


# ---- claims ------------------------------------------------------------------


def visible_claims(who: Principal, project_id: str | None = None) -> Select[RouteClaim]:
    """Every claim for the admin; a project's own for its members."""
    query = select(RouteClaim).order_by(RouteClaim.host, RouteClaim.path, RouteClaim.id)
    projects = who.visible_projects()
    if projects is not None:
        query = query.where(RouteClaim.project_id.in_(projects))
    if project_id is not None:
        query = query.where(RouteClaim.project_id == project_id)
    return query


def assign_claim(session: Session, who: Principal, body: ClaimIn) -> RouteClaim:
    """Give a host or `*` path to a project (the admin only). Reassigning deletes the
    previous holder's routes under it: they would otherwise serve nothing."""
    require_admin(who)
    if session.get(Project, body.project_id) is None:
        raise NotFound(f"no project {body.project_id}")
    host, path = claim_key(body.host, body.path or WHOLE_HOST)
    _lock_claims(session)
    holder = _other_holder(session, host, path, body.project_id, except_key=(host, path))
    if holder is not None:
        raise Conflict(
            f"{_describe(host, path)} overlaps a claim of project {holder}; "
            "release or reassign that claim first"
        )
    row = _claim_row(session, host, path)
    previous = row.project_id if row else None
    deleted: list[str] = []
    if row is None:
        row = RouteClaim(host=host, path=path, project_id=body.project_id, pinned=body.pinned)
        session.add(row)
        _flush_or_conflict(session, f"{_describe(host, path)} was claimed meanwhile")
    else:
        if row.project_id != body.project_id:
            moved = _routes_under(host, path, row.project_id)
            deleted = [r.id for r in session.scalars(moved)]
            if deleted:
                session.execute(delete(Route).where(Route.id.in_(deleted)))
        row.project_id, row.pinned = body.project_id, body.pinned
    details: dict[str, Any] = {
        "host": host,
        "path": path,
        "pinned": body.pinned,
        "previous_project_id": previous,
        "routes_deleted": deleted,
    }
    audit.record(
        session,
        who,
        "route_claim.assign",
        target_type="route_claim",
        target_id=row.id,
        project_id=body.project_id,
        details=details,
    )
    outbox.broadcast_config(session)
    session.commit()
    return row


def release_claim(session: Session, who: Principal, claim_id: str) -> None:
    """Free a claim (the admin only); refused while its project still routes under it."""
    require_admin(who)
    row = session.get(RouteClaim, claim_id)
    if row is None:
        raise NotFound(f"no route claim {claim_id}")
    if _has_routes_under(session, row.host, row.path, row.project_id):
        raise Conflict(
            f"project {row.project_id} still has routes under {_describe(row.host, row.path)}; "
            "delete them or reassign the claim"
        )
    audit.record(
        session,
        who,
        "route_claim.release",
        target_type="route_claim",
        target_id=row.id,
        project_id=row.project_id,
        details={"host": row.host, "path": row.path},
    )
    session.delete(row)
    session.commit()


def _take_claim(session: Session, host: str, path: str, project_id: str) -> RouteClaim:
    """The claim a new route of `project_id` needs, taken now if nobody holds it; 409
    when another project holds an overlapping one (which one is not said)."""
    key_host, key_path = claim_key(host, path)
    _lock_claims(session)
    if _other_holder(session, key_host, key_path, project_id) is not None:
        raise Conflict(f"{_describe(host, path)} is claimed by another project")
    row = _claim_row(session, key_host, key_path)
    if row is None:
        row = RouteClaim(host=key_host, path=key_path, project_id=project_id, pinned=False)
        session.add(row)
        _flush_or_conflict(session, f"{_describe(host, path)} is claimed by another project")
    elif row.project_id != project_id:
        # Lapsed: its project has no route under it and the admin did not pin it.
        row.project_id, row.pinned = project_id, False
    return row


def _lock_claims(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})


def _other_holder(
    session: Session,
    host: str,
    path: str,
    project_id: str,
    *,
    except_key: tuple[str, str] | None = None,
) -> str | None:
    """A project other than `project_id` whose claim in force overlaps (host, path).

    In force: pinned, or with a route of its project under it; a claim whose routes
    went with their function lapses. Reads the claims of one namespace (hosts, or
    paths on `*`): fine for how often routes are created.
    """
    same_namespace = RouteClaim.host == "*" if host == "*" else RouteClaim.host != "*"
    query = select(RouteClaim.host, RouteClaim.path, RouteClaim.project_id).where(
        same_namespace,
        RouteClaim.project_id != project_id,
        or_(RouteClaim.pinned, _has_routes()),
    )
    if except_key is not None:
        query = query.where(
            not_(and_(RouteClaim.host == except_key[0], RouteClaim.path == except_key[1]))
        )
    claims = Claims()
    for other_host, other_path, other_project in session.execute(query):
        claims.add(claim_of(other_host, other_path), other_project)
    return claims.other_holder(claim_of(host, path), project_id)


def _has_routes() -> Exists:
    """SQL: the claim of the enclosing row has a route of its project under it."""
    return exists().where(
        Route.host == RouteClaim.host,
        claim_path_column() == RouteClaim.path,
        Function.id == Route.function_id,
        Function.project_id == RouteClaim.project_id,
    )


def _routes_under(host: str, path: str, project_id: str) -> Select[Route]:
    """The project's routes whose claim is the one (host, path) is recorded under."""
    key_host, key_path = claim_key(host, path)
    return (
        select(Route)
        .join(Function, Function.id == Route.function_id)
        .where(
            Route.host == key_host,
            claim_path_column() == key_path,
            Function.project_id == project_id,
        )
    )


def _has_routes_under(session: Session, host: str, path: str, project_id: str) -> bool:
    return session.scalars(_routes_under(host, path, project_id).limit(1)).first() is not None


def _claim_row(session: Session, host: str, path: str) -> RouteClaim | None:
    query = select(RouteClaim).where(RouteClaim.host == host, RouteClaim.path == path)
    return session.scalar(query)


def _describe(host: str, path: str) -> str:
    return f"path {path} on host *" if host == "*" else f"host {host}"


def _flush_or_conflict(session: Session, message: str) -> None:
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(message) from exc
