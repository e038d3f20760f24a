"""HTTP surface of nodes: register (admin), list, delete; heartbeat and fresh artifact
URLs (node token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.deps import DB, Caller, Ctx, NodeCaller, get_principal
from edgefn.controlplane.errors import CALLER, BadRequest, Conflict, NotFound, responses
from edgefn.controlplane.fields import SEMVER_PATTERN, PathId
from edgefn.controlplane.nodes import service
from edgefn.controlplane.nodes.schemas import (
    ArtifactGrant,
    CertificateIn,
    CertificateOut,
    HeartbeatIn,
    HeartbeatOut,
    NodeCreated,
    NodeIn,
    NodeOut,
)
from edgefn.controlplane.pagination import Page, describe_page, page_params, paginate

router = APIRouter(tags=["nodes"], responses=responses(*CALLER))


@router.post("/nodes", status_code=201, response_model=NodeCreated, responses=responses(Conflict))
def register_node(body: NodeIn, session: DB, ctx: Ctx, who: Caller) -> NodeCreated:
    node, token, issued = service.register_node(
        session, who, body, ca=ctx.node_ca, cert_ttl_s=ctx.settings.node_cert_ttl_s
    )
    credentials: dict[str, str] = {"token": token}
    if issued is not None and ctx.node_ca is not None:
        credentials |= {"certificate": issued.pem, "ca_certificate": ctx.node_ca.pem.decode()}
    return NodeCreated.model_validate({**NodeOut.model_validate(node).model_dump(), **credentials})


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


@router.post(
    "/nodes/{node_id}/certificate",
    response_model=CertificateOut,
    responses=responses(NotFound, BadRequest),
)
def issue_certificate(
    node_id: PathId,
    body: CertificateIn,
    session: DB,
    ctx: Ctx,
    who: Annotated[Principal, Depends(get_principal)],
) -> CertificateOut:
    """A client certificate for the node from its CSR: the node renewing its own
    before it expires (with its token and current certificate), or an admin."""
    return service.issue_certificate(
        session, who, node_id, body.csr, ca=ctx.node_ca, cert_ttl_s=ctx.settings.node_cert_ttl_s
    )
