"""Signed CP URLs of the local store: PUT an upload, GET an artifact. The signature
is the credential, so these routes take no bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from edgefn.controlplane import uploads
from edgefn.controlplane.artifacts.local import DOWNLOAD_PREFIX, UPLOAD_PREFIX, LocalArtifactStore
from edgefn.controlplane.deps import Ctx
from edgefn.controlplane.errors import Forbidden, NotFound

router = APIRouter(tags=["artifacts"])


def _local(ctx: Ctx) -> LocalArtifactStore:
    if not isinstance(ctx.store, LocalArtifactStore):
        raise NotFound("artifacts are not served by the control plane with this store")
    return ctx.store


def _check(ctx: Ctx, method: str, path: str, expires: int, sig: str) -> None:
    if not ctx.signer.verify(method, path, expires, sig):
        raise Forbidden("bad or expired signature")


@router.get("/artifacts/{key:path}", include_in_schema=False)
def download(
    key: str, ctx: Ctx, expires: Annotated[int, Query()], sig: Annotated[str, Query()]
) -> Response:
    store = _local(ctx)
    _check(ctx, "GET", DOWNLOAD_PREFIX + key, expires, sig)
    return Response(store.get(key), media_type="application/wasm")


@router.put("/uploads/{key:path}", include_in_schema=False)
async def upload(
    key: str,
    request: Request,
    ctx: Ctx,
    expires: Annotated[int, Query()],
    sig: Annotated[str, Query()],
) -> dict[str, int]:
    store = _local(ctx)
    _check(ctx, "PUT", UPLOAD_PREFIX + key, expires, sig)
    limit = ctx.settings.max_artifact_bytes
    uploads.refuse_declared_size(request, limit)
    body = await uploads.read_capped(request.stream(), limit)
    await run_in_threadpool(store.put, key, body)
    return {"size": len(body)}
