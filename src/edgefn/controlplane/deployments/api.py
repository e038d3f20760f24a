"""HTTP surface of deployments: deploy, rollback, and reading a deployment."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response

from edgefn.controlplane.deployments import service
from edgefn.controlplane.deployments.schemas import DeployIn, DeploymentOut, RollbackIn
from edgefn.controlplane.deps import DB, Caller, Ctx
from edgefn.controlplane.errors import CALLER, Conflict, NotFound, responses
from edgefn.controlplane.fields import PathId
from edgefn.controlplane.pagination import Page, describe_page, page_params, paginate

router = APIRouter(tags=["deployments"], responses=responses(*CALLER))
PageDep = Annotated[Page, Depends(page_params)]


@router.post(
    "/functions/{function_id}/deploy",
    status_code=202,
    response_model=DeploymentOut,
    responses=responses(NotFound, Conflict),
)
def deploy(
    function_id: PathId, body: DeployIn, session: DB, ctx: Ctx, who: Caller
) -> DeploymentOut:
    dep = service.deploy(
        session,
        who,
        function_id,
        version=body.version,
        target_pop=body.target_pop,
        strategy=body.strategy,
        caps=ctx.settings.caps,
        gates=body.gates,
        split=body.split,
    )
    return service.describe(session, dep)


@router.post(
    "/functions/{function_id}/rollback",
    status_code=202,
    response_model=DeploymentOut,
    responses=responses(NotFound, Conflict),
)
def rollback(
    function_id: PathId, session: DB, ctx: Ctx, who: Caller, body: RollbackIn | None = None
) -> DeploymentOut:
    version = body.version if body else None
    dep = service.rollback(session, who, function_id, version=version, caps=ctx.settings.caps)
    return service.describe(session, dep)


@router.get(
    "/deployments/{deployment_id}", response_model=DeploymentOut, responses=responses(NotFound)
)
def get_deployment(deployment_id: PathId, session: DB, who: Caller) -> DeploymentOut:
    return service.describe(session, service.get_deployment(session, who, deployment_id))


@router.post(
    "/deployments/{deployment_id}/{action}",
    response_model=DeploymentOut,
    responses=responses(NotFound, Conflict),
)
def steer(
    deployment_id: PathId, action: Literal["promote", "abort"], session: DB, who: Caller
) -> DeploymentOut:
    """A gated rollout's next wave now (promote), or its nodes back to the previous
    version (abort)."""
    step = service.promote if action == "promote" else service.abort
    return service.describe(session, step(session, who, deployment_id))


@router.get(
    "/functions/{function_id}/deployments",
    response_model=list[DeploymentOut],
    responses=responses(NotFound),
)
def list_deployments(
    function_id: PathId,
    request: Request,
    response: Response,
    session: DB,
    who: Caller,
    page: PageDep,
) -> list[DeploymentOut]:
    items, total = paginate(session, service.function_deployments(session, who, function_id), page)
    describe_page(request, response, page, total)
    return [service.describe(session, dep) for dep in items]
