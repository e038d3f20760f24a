"""HTTP surface of the registry: functions and their versions."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from edgefn.controlplane import uploads
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
    ValidationFailed,
    responses,
)
from edgefn.controlplane.fields import SEMVER_PATTERN, SHA256_PATTERN, PathId
from edgefn.controlplane.functions import service
from edgefn.controlplane.functions.models import Function
from edgefn.controlplane.functions.schemas import FunctionIn, FunctionOut, FunctionPatch, VersionOut
from edgefn.controlplane.pagination import Page, describe_page, page_params, paginate
from edgefn.controlplane.routes.service import live_urls
from edgefn.data_archive import ArchiveLimits

router = APIRouter(tags=["functions"], responses=responses(*CALLER))
_VERSION_CHARS = 100
_SHA256_CHARS = 64
_MOUNTS_CHARS = 16384
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


def _with_url(session: Session, ctx: Ctx, who: Caller, fn: Function) -> FunctionOut:
    """One function as a single-function answer gives it: with an upload URL, and
    the URLs it is served at."""
    out = _out(fn, service.upload_url(ctx.store, who, fn, ctx.settings.upload_url_ttl_s))
    edge_url = ctx.settings.edge_url.rstrip("/") if ctx.settings.edge_url else None
    return out.model_copy(update={"urls": live_urls(session, fn.id, edge_url),
                                  "edge_url": edge_url})


@router.post(
    "/functions",
    status_code=201,
    response_model=FunctionOut,
    responses=responses(NotFound, Conflict, InvalidSelector),
)
def create_function(body: FunctionIn, session: DB, ctx: Ctx, who: Caller) -> FunctionOut:
    fn = service.create_function(session, who, body, caps=ctx.settings.caps)
    return _with_url(session, ctx, who, fn)


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
    return _with_url(session, ctx, who, service.get_function(session, who, function_id))


@router.patch(
    "/functions/{function_id}",
    response_model=FunctionOut,
    responses=responses(NotFound, InvalidSelector),
)
def update_function(
    function_id: PathId, body: FunctionPatch, session: DB, ctx: Ctx, who: Caller
) -> FunctionOut:
    fn = service.update_function(session, who, function_id, body, caps=ctx.settings.caps)
    return _with_url(session, ctx, who, fn)


@router.delete(
    "/functions/{function_id}",
    status_code=204,
    responses=responses(NotFound, ArtifactStoreError),
)
def delete_function(function_id: PathId, session: DB, ctx: Ctx, who: Caller) -> Response:
    service.delete_function(session, who, ctx.store, function_id)
    return Response(status_code=204)


# The body as the OpenAPI shows it; the endpoint parses it itself, after
# authorisation, so FastAPI must not (it would read it all first).
_VERSION_FIELDS: dict[str, Any] = {
    "version": {
        "type": "string",
        "maxLength": _VERSION_CHARS,
        "pattern": SEMVER_PATTERN,
        "description": "a semantic version, e.g. 1.2.0",
    },
    "sha256": {
        "type": "string",
        "maxLength": _SHA256_CHARS,
        "pattern": SHA256_PATTERN,
        "description": "hex sha256 the artifact must have",
    },
}
_DATA_FIELDS: dict[str, Any] = {
    "data": {
        "type": "string",
        "format": "binary",
        "description": "optional: the version's data archive, a tar.gz whose "
        "directories its volumes mount (docs/wagi.md, Volumes); sent with `mounts`",
    },
    "mounts": {
        "type": "string",
        "maxLength": 16384,
        "description": 'with `data`: a JSON object, guest path -> directory inside the '
        'archive, e.g. {"/static": "volume-0"}',
    },
}
_ARTIFACT_FIELD = {
    "type": "string",
    "format": "binary",
    "description": "the .wasm module; leave it out to use what was PUT to the "
    "function's upload_url",
}


def _form_schema(properties: dict[str, Any]) -> dict[str, Any]:
    return {"schema": {"type": "object", "required": ["version"], "properties": properties}}


_VERSION_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": _form_schema(
                {**_VERSION_FIELDS, "artifact": _ARTIFACT_FIELD, **_DATA_FIELDS}
            ),
            "application/x-www-form-urlencoded": _form_schema(_VERSION_FIELDS),
        },
    }
}


@router.post(
    "/functions/{function_id}/versions",
    status_code=201,
    response_model=VersionOut,
    openapi_extra=_VERSION_FORM,
    responses=responses(
        NotFound, Conflict, BadRequest, InvalidModule, PayloadTooLarge, ArtifactStoreError
    ),
)
async def create_version(
    function_id: PathId, request: Request, session: DB, ctx: Ctx, who: Caller
) -> VersionOut:
    # `who` came from the headers; the role is checked before a byte of the body
    # is read, so a stranger's upload is answered at once.
    await run_in_threadpool(service.authorize_upload, session, who, function_id)
    settings = ctx.settings
    limit = settings.max_artifact_bytes
    form = await uploads.read_form(
        request,
        fields={"version": _VERSION_CHARS, "sha256": _SHA256_CHARS, "mounts": _MOUNTS_CHARS},
        file_field="artifact",
        file_limit=limit,
        extra_files={"data": settings.max_data_bytes},
    )
    if "version" not in form.fields:
        raise ValidationFailed("version: Field required")
    sha256 = form.fields.get("sha256")
    if sha256 is not None and not re.fullmatch(SHA256_PATTERN, sha256):
        raise ValidationFailed("sha256: 64 hex digits")
    row = await run_in_threadpool(
        functools.partial(
            service.create_version,
            session,
            who,
            ctx.store,
            function_id=function_id,
            version=form.fields["version"],
            data=form.file,
            sha256=sha256,
            max_bytes=limit,
            files=service.DataUpload(
                archive=form.files.get("data"),
                mounts=form.fields.get("mounts"),
                max_bytes=settings.max_data_bytes,
                limits=ArchiveLimits(max_bytes=settings.max_data_unpacked_bytes,
                                     max_files=settings.max_data_files),
            ),
        )
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


@router.get(
    "/functions/{function_id}/versions/{version}/data",
    response_class=Response,
    responses={
        **responses(NotFound, ArtifactStoreError),
        200: {"content": {"application/gzip": {}}, "description": "the data archive"},
    },
)
def get_version_data(
    function_id: PathId,
    version: Annotated[str, Path(max_length=_VERSION_CHARS, pattern=SEMVER_PATTERN)],
    session: DB, ctx: Ctx, who: Caller,
) -> Response:
    """A version's data archive, to those who may see the function (404 to others,
    and for a version without one)."""
    data = service.version_data(session, who, ctx.store, function_id, version)
    return Response(data, media_type="application/gzip")
