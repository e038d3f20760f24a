"""HTTP surface of builds: submit a source archive, read a build, follow its log."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from edgefn.builder import LANGUAGES
from edgefn.controlplane import db, uploads
from edgefn.controlplane.builds import service
from edgefn.controlplane.builds.models import Build
from edgefn.controlplane.builds.runner import BuildRunner
from edgefn.controlplane.builds.schemas import BuildDetail, BuildOut
from edgefn.controlplane.deps import DB, Caller, Ctx
from edgefn.controlplane.errors import (
    CALLER,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ValidationFailed,
    responses,
)
from edgefn.controlplane.fields import SEMVER_PATTERN, PathId
from edgefn.controlplane.functions import service as functions
from edgefn.controlplane.pagination import Page, describe_page, page_params, paginate


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    runner = BuildRunner(app.state.cp)
    runner.start()
    app.state.builds = runner
    try:
        yield
    finally:
        await asyncio.to_thread(runner.stop)


router = APIRouter(tags=["builds"], responses=responses(*CALLER), lifespan=_lifespan)
PageDep = Annotated[Page, Depends(page_params)]
_FOLLOW_POLL_S = 0.25


def _runner(request: Request) -> BuildRunner:
    runner: BuildRunner = request.app.state.builds
    return runner


Runner = Annotated[BuildRunner, Depends(_runner)]


def _out(build: Build, runner: BuildRunner) -> BuildOut:
    return service.describe(build, runner.jobs)


_FIELDS = {"language": 32, "version": 100, "allow_critical": 5}
_BUILD_FORM: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["language", "version", "source"],
                    "additionalProperties": False,
                    "properties": {
                        "language": {"type": "string", "enum": list(LANGUAGES)},
                        "version": {
                            "type": "string",
                            "maxLength": 100,
                            "pattern": SEMVER_PATTERN,
                            "description": "the version the build creates, e.g. 1.2.0",
                        },
                        "allow_critical": {
                            "type": "string",
                            "enum": ["true", "false"],
                            "description": "build even when the dependency scan finds "
                            "critical advisories",
                        },
                        "source": {
                            "type": "string",
                            "format": "binary",
                            "description": "the source tree as a .tar.gz or .zip",
                        },
                    },
                }
            }
        },
    }
}


@router.post(
    "/functions/{function_id}/builds",
    status_code=202,
    response_model=BuildOut,
    openapi_extra=_BUILD_FORM,
    responses=responses(NotFound, Conflict, PayloadTooLarge),
)
async def create_build(
    function_id: PathId, request: Request, session: DB, ctx: Ctx, who: Caller, runner: Runner
) -> BuildOut:
    # The role is checked from the headers before the archive is read.
    await run_in_threadpool(functions.authorize_upload, session, who, function_id)
    form = await uploads.read_form(
        request, fields=_FIELDS, file_field="source", file_limit=ctx.settings.max_source_bytes
    )
    for name in ("language", "version"):
        if name not in form.fields:
            raise ValidationFailed(f"{name}: Field required")
    if form.file is None:
        raise ValidationFailed("source: Field required (a .tar.gz or .zip)")
    allow = form.fields.get("allow_critical", "false").lower()
    if allow not in ("true", "false"):
        raise ValidationFailed("allow_critical: true or false")
    build = await run_in_threadpool(
        functools.partial(
            service.submit,
            session,
            who,
            runner.jobs,
            ctx.settings,
            function_id=function_id,
            language=form.fields["language"],
            version=form.fields["version"],
            source=form.file,
            allow_critical=allow == "true",
        )
    )
    return _out(build, runner)


@router.get(
    "/functions/{function_id}/builds",
    response_model=list[BuildOut],
    responses=responses(NotFound),
)
def list_builds(
    function_id: PathId,
    request: Request,
    response: Response,
    session: DB,
    who: Caller,
    runner: Runner,
    page: PageDep,
) -> list[BuildOut]:
    items, total = paginate(session, service.list_builds(session, who, function_id), page)
    describe_page(request, response, page, total)
    return [_out(b, runner) for b in items]


@router.get("/builds/{build_id}", response_model=BuildDetail, responses=responses(NotFound))
def get_build(build_id: PathId, session: DB, who: Caller, runner: Runner) -> BuildDetail:
    build = service.get_build(session, who, build_id)
    out = BuildDetail(**_out(build, runner).model_dump(), log=service.live_log(build, runner.jobs))
    return out


@router.get(
    "/builds/{build_id}/log",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/plain": {}}}, **responses(NotFound)},
)
def build_log(
    build_id: PathId,
    session: DB,
    ctx: Ctx,
    who: Caller,
    runner: Runner,
    follow: Annotated[bool, Query(description="keep streaming until the build ends")] = False,
) -> StreamingResponse:
    """The build's log as text; with `follow=1`, streamed as it grows until the
    build ends (the answer's last line then says how it ended)."""
    service.get_build(session, who, build_id)  # 404 unless the caller may read it
    session.rollback()

    def current() -> tuple[str, str | None]:
        with db.session_scope(ctx.sessions) as s:
            row = s.get(Build, build_id)
            if row is None:
                return "", "gone"
            state = row.state if row.finished_at is not None else None
            return service.live_log(row, runner.jobs), state

    async def chunks() -> AsyncIterator[str]:
        sent = 0
        while True:
            text, ended = await run_in_threadpool(current)
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)
            if ended is not None or not follow:
                if follow:
                    yield f"[build {ended}]\n"
                return
            await asyncio.sleep(_FOLLOW_POLL_S)

    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8")
