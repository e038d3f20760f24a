"""HTTP surface of routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from edgefn.controlplane.deps import DB, Caller
from edgefn.controlplane.errors import CALLER, Conflict, InvalidSelector, NotFound, responses
from edgefn.controlplane.fields import PathId
from edgefn.controlplane.pagination import Page, describe_page, page_params, paginate
from edgefn.controlplane.routes import service
from edgefn.controlplane.routes.schemas import RouteIn, RouteOut

router = APIRouter(tags=["routes"], responses=responses(*CALLER))


@router.post(
    "/routes",
    status_code=201,
    response_model=RouteOut,
    responses=responses(NotFound, Conflict, InvalidSelector),
)
def create_route(body: RouteIn, session: DB, who: Caller) -> RouteOut:
    return RouteOut.model_validate(service.create_route(session, who, body))


@router.get("/routes", response_model=list[RouteOut])
def list_routes(
    request: Request,
    response: Response,
    session: DB,
    who: Caller,
    page: Annotated[Page, Depends(page_params)],
) -> list[RouteOut]:
    items, total = paginate(session, service.visible_routes(who), page)
    describe_page(request, response, page, total)
    return [RouteOut.model_validate(r) for r in items]


@router.delete("/routes/{route_id}", status_code=204, responses=responses(NotFound))
def delete_route(route_id: PathId, session: DB, who: Caller) -> Response:
    service.delete_route(session, who, route_id)
    return Response(status_code=204)
