"""What every endpoint gets injected: the app's context, a session, and the caller.

Auth is on by default: an endpoint that takes `Caller` answers 401 without a
valid token and 403 to a node token; only heartbeats take `NodeCaller`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from edgefn.controlplane.artifacts import ArtifactStore, UrlSigner
from edgefn.controlplane.audit.checkpoints import Anchor
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.auth.service import Credentials, authenticate
from edgefn.controlplane.errors import Forbidden
from edgefn.controlplane.logs.hub import LogHub
from edgefn.controlplane.nodes.listener import client_cert_of
from edgefn.controlplane.pki import service as pki
from edgefn.controlplane.pki.ca import CertificateAuthority
from edgefn.controlplane.precompiled.service import Precompiler
from edgefn.controlplane.secrets.base import SecretStore
from edgefn.controlplane.settings import CPSettings
from edgefn.controlplane.stream.notifier import Notifier


@dataclass
class CPContext:
    settings: CPSettings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ArtifactStore
    signer: UrlSigner
    creds: Credentials
    notifier: Notifier
    anchor: Anchor
    secrets: SecretStore
    # The CA of node certificates; None while node mTLS is off and none was given.
    node_ca: CertificateAuthority | None = None
    # This replica's name among several on one database (leases, wake-ups).
    replica_id: str = ""
    # Functions' log lines from this replica's nodes (and the others', over Redis).
    logs: LogHub = field(default_factory=LogHub)
    # Precompiles versions for the nodes' engine tags; None when turned off.
    precompiler: Precompiler | None = None


def get_ctx(request: Request) -> CPContext:
    ctx: CPContext = request.app.state.cp
    return ctx


Ctx = Annotated[CPContext, Depends(get_ctx)]


def get_session(ctx: Ctx) -> Iterator[Session]:
    session = ctx.sessions()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


DB = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="admin token, JWT, API key or node token")


def request_id_of(request: Request) -> str | None:
    rid: str | None = getattr(request.state, "request_id", None)
    return rid


def get_principal(
    request: Request,
    ctx: Ctx,
    session: DB,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = bearer.credentials if bearer else None
    who = authenticate(session, ctx.creds, token, request_id=request_id_of(request))
    # With node mTLS on, a node token counts only with the node's own client
    # certificate, which only the node listener sees (elsewhere: 401).
    if who.kind == "node" and ctx.settings.node_mtls:
        pki.check_peer(session, who.id, client_cert_of(request.scope))
    return who


def get_caller(who: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if who.kind == "node":
        raise Forbidden("node tokens may only send heartbeats")
    return who


def get_node_caller(who: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if who.kind != "node":
        raise Forbidden("heartbeats need a node token")
    return who


Caller = Annotated[Principal, Depends(get_caller)]
NodeCaller = Annotated[Principal, Depends(get_node_caller)]
