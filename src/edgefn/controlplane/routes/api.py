"""HTTP surface of routes and of route claims (who holds which host or `*` path)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from edgefn.controlplane.deps import DB, Caller
from edgefn.controlplane.errors import CALLER, Conflict, InvalidSelector, NotFound, responses
from edgefn.controlplane.fields import PathId
from edgefn.controlplane.pagination import Page, describe_page, page_params, paginate
from edgefn.controlplane.routes import service
from edgefn.controlplane.routes.schemas import ClaimIn, ClaimOut, RouteIn, RouteOut

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
    serving = service.serving_ids(session, [r.id for r in items])
    return [
        RouteOut.model_validate(r).model_copy(update={"serving": r.id in serving}) for r in items
    ]


@router.delete("/routes/{route_id}", status_code=204, responses=responses(NotFound))
def delete_route(route_id: PathId, session: DB, who: Caller) -> Response:
    service.delete_route(session, who, route_id)
    return Response(status_code=204)


@router.get("/route-claims", response_model=list[ClaimOut])
def list_claims(
    request: Request,
    response: Response,
    session: DB,
    who: Caller,
    page: Annotated[Page, Depends(page_params)],
    project_id: Annotated[str | None, Query(max_length=36)] = None,
) -> list[ClaimOut]:
    items, total = paginate(session, service.visible_claims(who, project_id), page)
    describe_page(request, response, page, total)
    return [ClaimOut.model_validate(c) for c in items]


@router.put("/route-claims", response_model=ClaimOut, responses=responses(NotFound, Conflict))
def assign_claim(body: ClaimIn, session: DB, who: Caller) -> ClaimOut:
    return ClaimOut.model_validate(service.assign_claim(session, who, body))


@router.delete(
    "/route-claims/{claim_id}", status_code=204, responses=responses(NotFound, Conflict)
)
def release_claim(claim_id: PathId, session: DB, who: Caller) -> Response:
    service.release_claim(session, who, claim_id)
    return Response(status_code=204)
