"""HTTP surface of secrets: a project's secrets (write-only values) and the node call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.deps import DB, Caller, Ctx, get_principal
from edgefn.controlplane.errors import CALLER, NotFound, SecretStoreError, responses
from edgefn.controlplane.fields import PathId
from edgefn.controlplane.secrets import service
from edgefn.controlplane.secrets.schemas import NodeSecretsIn, NodeSecretsOut, SecretIn, SecretOut

router = APIRouter(tags=["secrets"], responses=responses(*CALLER))
_ERRORS = responses(NotFound, SecretStoreError)
SecretNameIn = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
]


@router.post("/projects/{project_id}/secrets", status_code=201, response_model=SecretOut,
             responses={200: {"model": SecretOut, "description": "value replaced"}, **_ERRORS})
def put_secret(
    project_id: PathId, body: SecretIn, response: Response, session: DB, ctx: Ctx, who: Caller
) -> SecretOut:
    """Set a secret: 201 when new, 200 when its value was replaced. The answer never
    holds the value."""
    row, created = service.put_secret(session, who, ctx.secrets, project_id, body)
    if not created:
        response.status_code = 200
    return SecretOut.model_validate(row)


@router.get("/projects/{project_id}/secrets", response_model=list[SecretOut],
            responses=_ERRORS)
def list_secrets(project_id: PathId, session: DB, who: Caller) -> list[SecretOut]:
    return [SecretOut.model_validate(r) for r in service.list_secrets(session, who, project_id)]


@router.delete("/projects/{project_id}/secrets/{name}", status_code=204, responses=_ERRORS)
def delete_secret(
    project_id: PathId, name: SecretNameIn, session: DB, ctx: Ctx, who: Caller
) -> Response:
    service.delete_secret(session, who, ctx.secrets, project_id, name)
    return Response(status_code=204)


@router.post("/nodes/{node_id}/secrets", response_model=NodeSecretsOut, responses=_ERRORS)
def resolve_secrets(
    node_id: PathId,
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
