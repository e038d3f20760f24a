"""Route rules: a route belongs to its function's project; every change sends each
node its new route table."""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgefn.controlplane.audit import service as audit
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.auth.service import require_project_role
from edgefn.controlplane.deployments import outbox
from edgefn.controlplane.errors import Conflict, NotFound
from edgefn.controlplane.functions.models import Function
from edgefn.controlplane.functions.service import get_function
from edgefn.controlplane.routes.models import Route
from edgefn.controlplane.routes.schemas import RouteIn


def create_route(session: Session, who: Principal, body: RouteIn) -> Route:
    fn = get_function(session, who, body.function_id, minimum="developer")
    clash = session.scalar(
        select(Route.id).where(
            Route.host == body.host, Route.path == body.path, Route.priority == body.priority
        )
    )
    if clash:
        raise Conflict(f"a route for {body.host}{body.path} with priority {body.priority} exists")
    route = Route(**body.model_dump())
    session.add(route)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(f"a route for {body.host}{body.path} exists") from exc
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
    session.delete(route)
    session.flush()
    outbox.broadcast_config(session)
    session.commit()
