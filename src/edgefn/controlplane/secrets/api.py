"""HTTP surface of secrets: a project's secrets (write-only values) and the node call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.deps import DB, Caller, Ctx, get_principal
from edgefn.controlplane.secrets import service
from edgefn.controlplane.secrets.schemas import NodeSecretsIn, NodeSecretsOut, SecretIn, SecretOut

router = APIRouter(tags=["secrets"])

_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "bad name or value"},
    401: {"description": "no or bad token"},
    403: {"description": "role too low"},
    404: {"description": "no such project (or not visible to the caller)"},
    502: {"description": "the secret store failed"},
}


@router.post("/projects/{project_id}/secrets", status_code=201, response_model=SecretOut,
             responses={200: {"model": SecretOut, "description": "value replaced"}, **_ERRORS})
def put_secret(
    project_id: str, body: SecretIn, response: Response, session: DB, ctx: Ctx, who: Caller
) -> SecretOut:
    """Set a secret: 201 when new, 200 when its value was replaced. The answer never
    holds the value."""
    row, created = service.put_secret(session, who, ctx.secrets, project_id, body)
    if not created:
        response.status_code = 200
    return SecretOut.model_validate(row)


@router.get("/projects/{project_id}/secrets", response_model=list[SecretOut],
            responses=_ERRORS)
def list_secrets(project_id: str, session: DB, who: Caller) -> list[SecretOut]:
    return [SecretOut.model_validate(r) for r in service.list_secrets(session, who, project_id)]


@router.delete("/projects/{project_id}/secrets/{name}", status_code=204, responses=_ERRORS)
def delete_secret(project_id: str, name: str, session: DB, ctx: Ctx, who: Caller) -> Response:
    service.delete_secret(session, who, ctx.secrets, project_id, name)
    return Response(status_code=204)


@router.post("/nodes/{node_id}/secrets", response_model=NodeSecretsOut, responses=_ERRORS)
def resolve_secrets(
    node_id: str,
    body: NodeSecretsIn,
    response: Response,
    session: DB,
    ctx: Ctx,
    who: Annotated[Principal, Depends(get_principal)],
) -> NodeSecretsOut:
    """A node's own call (its token) for a function deployed to it: the values of the
    names the function lists. 404 for a function not deployed to this node."""
    response.headers["cache-control"] = "no-store"
    return service.resolve_for_node(
        session, who, ctx.secrets, node_id, body.function_id, body.names
    )
