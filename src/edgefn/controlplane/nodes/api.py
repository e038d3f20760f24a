"""HTTP surface of nodes: register (admin), list, delete; heartbeat and fresh artifact
URLs (node token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from edgefn.controlplane.deps import DB, Caller, Ctx, NodeCaller
from edgefn.controlplane.errors import CALLER, BadRequest, Conflict, NotFound, responses
from edgefn.controlplane.fields import SEMVER_PATTERN, PathId
from edgefn.controlplane.nodes import service
from edgefn.controlplane.nodes.schemas import (
    ArtifactGrant,
    HeartbeatIn,
    HeartbeatOut,
    NodeCreated,
    NodeIn,
    NodeOut,
)
from edgefn.controlplane.pagination import Page, describe_page, page_params, paginate

router = APIRouter(tags=["nodes"], responses=responses(*CALLER))


@router.post("/nodes", status_code=201, response_model=NodeCreated, responses=responses(Conflict))
def register_node(body: NodeIn, session: DB, who: Caller) -> NodeCreated:
    node, token = service.register_node(session, who, body)
    return NodeCreated.model_validate({**NodeOut.model_validate(node).model_dump(), "token": token})


@router.get("/nodes", response_model=list[NodeOut])
def list_nodes(
    request: Request,
    response: Response,
    session: DB,
    ctx: Ctx,
    who: Caller,
    page: Annotated[Page, Depends(page_params)],
) -> list[NodeOut]:
    service.mark_stale(session, interval_s=ctx.settings.heartbeat_interval_s)
    items, total = paginate(session, service.all_nodes(), page)
    describe_page(request, response, page, total)
    return [NodeOut.model_validate(n) for n in items]


@router.delete("/nodes/{node_id}", status_code=204, responses=responses(NotFound))
def delete_node(node_id: PathId, session: DB, who: Caller) -> Response:
    service.delete_node(session, who, node_id)
    return Response(status_code=204)


@router.post(
    "/nodes/{node_id}/heartbeat",
    response_model=HeartbeatOut,
    responses=responses(NotFound, BadRequest),
)
def heartbeat(
    node_id: PathId, body: HeartbeatIn, session: DB, ctx: Ctx, who: NodeCaller
) -> HeartbeatOut:
    instructions = service.heartbeat(
        session, who, node_id, body, store=ctx.store, url_ttl_s=ctx.settings.download_url_ttl_s
    )
    return HeartbeatOut(
        instructions=[i.model_dump(mode="json") for i in instructions],
        heartbeat_interval_s=ctx.settings.heartbeat_interval_s,
    )


@router.get(
    "/nodes/{node_id}/artifacts/{function_id}/{version}",
    response_model=ArtifactGrant,
    responses=responses(NotFound),
)
def artifact_url(
    node_id: PathId,
    function_id: PathId,
    version: Annotated[str, Path(max_length=100, pattern=SEMVER_PATTERN)],
    session: DB,
    ctx: Ctx,
    who: NodeCaller,
) -> ArtifactGrant:
    """A fresh signed URL of an artifact deployed to this node, for a node whose cached
    copy went missing or corrupt after the URL it was sent with expired."""
    return service.artifact_grant(
        session, who, node_id, function_id, version,
        store=ctx.store, url_ttl_s=ctx.settings.download_url_ttl_s,
    )
