"""HTTP surface of the registry: functions and their versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from pydantic.json_schema import SkipJsonSchema

from edgefn.controlplane.deps import DB, Caller, Ctx
from edgefn.controlplane.errors import (
    CALLER,
    ArtifactStoreError,
    BadRequest,
    Conflict,
    InvalidModule,
    InvalidSelector,
    NotFound,
    PayloadTooLarge,
    responses,
)
from edgefn.controlplane.fields import SEMVER_PATTERN, PathId, Sha256
from edgefn.controlplane.functions import service
from edgefn.controlplane.functions.models import Function
from edgefn.controlplane.functions.schemas import FunctionIn, FunctionOut, FunctionPatch, VersionOut
from edgefn.controlplane.pagination import Page, describe_page, page_params, paginate

router = APIRouter(tags=["functions"], responses=responses(*CALLER))
PageDep = Annotated[Page, Depends(page_params)]


def _out(fn: Function, upload_url: str | None) -> FunctionOut:
    return FunctionOut(
        id=fn.id,
        name=fn.name,
        owner_project_id=fn.project_id,
        entrypoint=fn.entrypoint,
        runtime=fn.runtime,
        max_execution_ms=fn.max_execution_ms,
        memory_pages=fn.memory_pages,
        max_response_bytes=fn.max_response_bytes,
        pop_selector=fn.pop_selector,
        # Rows stored by an older release's PATCH with `"env": null` read as empty.
        env=fn.env or {},
        **dict(fn.function_policy()),
        active_version=fn.active_version,
        created_at=fn.created_at,
        updated_at=fn.updated_at,
        upload_url=upload_url,
    )


def _with_url(ctx: Ctx, who: Caller, fn: Function) -> FunctionOut:
    return _out(fn, service.upload_url(ctx.store, who, fn, ctx.settings.upload_url_ttl_s))


@router.post(
    "/functions",
    status_code=201,
    response_model=FunctionOut,
    responses=responses(NotFound, Conflict, InvalidSelector),
)
def create_function(body: FunctionIn, session: DB, ctx: Ctx, who: Caller) -> FunctionOut:
    return _with_url(ctx, who, service.create_function(session, who, body))


@router.get("/functions", response_model=list[FunctionOut])
def list_functions(
    request: Request, response: Response, session: DB, who: Caller, page: PageDep
) -> list[FunctionOut]:
    items, total = paginate(session, service.visible_functions(who), page)
    describe_page(request, response, page, total)
    # Lists leave upload_url out: minting one per row is work nobody asked for.
    return [_out(fn, None) for fn in items]


@router.get("/functions/{function_id}", response_model=FunctionOut, responses=responses(NotFound))
def get_function(function_id: PathId, session: DB, ctx: Ctx, who: Caller) -> FunctionOut:
    return _with_url(ctx, who, service.get_function(session, who, function_id))


@router.patch(
    "/functions/{function_id}",
    response_model=FunctionOut,
    responses=responses(NotFound, InvalidSelector),
)
def update_function(
    function_id: PathId, body: FunctionPatch, session: DB, ctx: Ctx, who: Caller
) -> FunctionOut:
    return _with_url(ctx, who, service.update_function(session, who, function_id, body))


@router.delete(
    "/functions/{function_id}",
    status_code=204,
    responses=responses(NotFound, ArtifactStoreError),
)
def delete_function(function_id: PathId, session: DB, ctx: Ctx, who: Caller) -> Response:
    service.delete_function(session, who, ctx.store, function_id)
    return Response(status_code=204)


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"artifact is over the limit of {limit} bytes")
    return data


@router.post(
    "/functions/{function_id}/versions",
    status_code=201,
    response_model=VersionOut,
    responses=responses(
        NotFound, Conflict, BadRequest, InvalidModule, PayloadTooLarge, ArtifactStoreError
    ),
)
async def create_version(
    function_id: PathId,
    session: DB,
    ctx: Ctx,
    who: Caller,
    version: Annotated[str, Form(max_length=100, pattern=SEMVER_PATTERN)],
    # Optional but never null: a multipart form has no null to send.
    artifact: Annotated[
        UploadFile | SkipJsonSchema[None], File(description="the .wasm module")
    ] = None,
    sha256: Annotated[Sha256 | SkipJsonSchema[None], Form()] = None,
) -> VersionOut:
    limit = ctx.settings.max_artifact_bytes
    data = await _read_limited(artifact, limit) if artifact is not None else None
    row = service.create_version(
        session,
        who,
        ctx.store,
        function_id=function_id,
        version=version,
        data=data,
        sha256=sha256,
        max_bytes=limit,
    )
    return VersionOut.model_validate(row)


@router.get(
    "/functions/{function_id}/versions",
    response_model=list[VersionOut],
    responses=responses(NotFound),
)
def list_versions(
    function_id: PathId,
    request: Request,
    response: Response,
    session: DB,
    who: Caller,
    page: PageDep,
) -> list[VersionOut]:
    items, total = paginate(session, service.list_versions(session, who, function_id), page)
    describe_page(request, response, page, total)
    return [VersionOut.model_validate(v) for v in items]
