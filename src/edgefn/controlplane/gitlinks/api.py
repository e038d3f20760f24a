"""HTTP surface of git links: link a function to a repository, and the push
webhook, which takes no token (the HMAC of its body is its credential)."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from edgefn.controlplane.builds.api import Runner
from edgefn.controlplane.builds.runner import private_dirs
from edgefn.controlplane.deps import DB, Caller, Ctx
from edgefn.controlplane.errors import (
    CALLER,
    BadRequest,
    NotFound,
    SecretStoreError,
    Unauthorized,
    ValidationFailed,
    responses,
)
from edgefn.controlplane.fields import LINE_PATTERN, PathId
from edgefn.controlplane.gitlinks import service
from edgefn.controlplane.gitlinks.models import GitLink
from edgefn.controlplane.gitlinks.schemas import GitLinkIn, GitLinkOut, HookOut, HookResult

router = APIRouter(tags=["git"])
HOOK_PATH = "/hooks/git"


def _out(ctx: Ctx, link: GitLink) -> GitLinkOut:
    return GitLinkOut(
        function_id=link.function_id,
        repository=link.repository,
        branch=link.branch,
        subdirectory=link.subdirectory,
        language=link.language,
        auto_deploy=link.auto_deploy,
        hook_url=ctx.settings.resolved_public_url() + "/api/v1" + HOOK_PATH,
        created_at=link.created_at,
        updated_at=link.updated_at,
    )


@router.put(
    "/functions/{function_id}/git",
    response_model=GitLinkOut,
    responses={201: {"model": GitLinkOut}, **responses(*CALLER, NotFound, SecretStoreError)},
)
def put_link(
    function_id: PathId, body: GitLinkIn, response: Response, session: DB, ctx: Ctx, who: Caller
) -> GitLinkOut:
    """Link the function to a branch of a repository: each signed push to it builds
    the commit (docs/builds.md, Builds from git). The secret is write-only."""
    rules = service.policy(ctx.settings, private_dirs(ctx))
    link, created = service.put_link(session, who, ctx.secrets, rules, function_id, body)
    response.status_code = 201 if created else 200
    return _out(ctx, link)


@router.get(
    "/functions/{function_id}/git",
    response_model=GitLinkOut,
    responses=responses(*CALLER, NotFound),
)
def get_link(function_id: PathId, session: DB, ctx: Ctx, who: Caller) -> GitLinkOut:
    return _out(ctx, service.get_link(session, who, function_id))


@router.delete(
    "/functions/{function_id}/git",
    status_code=204,
    responses=responses(*CALLER, NotFound, SecretStoreError),
)
def delete_link(function_id: PathId, session: DB, ctx: Ctx, who: Caller) -> Response:
    service.delete_link(session, who, ctx.secrets, function_id)
    return Response(status_code=204)


_PUSH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "a GitHub push event (only these fields are read)",
                    "properties": {
                        "ref": {"type": "string", "examples": ["refs/heads/main"]},
                        "after": {"type": "string", "description": "the pushed commit"},
                        "deleted": {"type": "boolean"},
                        "repository": {
                            "type": "object",
                            "properties": {
                                "clone_url": {"type": "string"},
                                "html_url": {"type": "string"},
                            },
                        },
                    },
                }
            }
        },
    }
}
_MAX_DELIVERY = 100


@router.post(
    HOOK_PATH,
    response_model=HookOut,
    status_code=200,
    openapi_extra=_PUSH_BODY,
    responses={
        202: {"model": HookOut, "description": "at least one build was queued"},
        **responses(BadRequest, Unauthorized, NotFound, SecretStoreError),
    },
)
async def push_hook(
    request: Request,
    response: Response,
    session: DB,
    ctx: Ctx,
    runner: Runner,
    x_hub_signature_256: Annotated[
        str | None, Header(max_length=200, pattern=LINE_PATTERN)
    ] = None,
    x_github_event: Annotated[str | None, Header(max_length=100, pattern=LINE_PATTERN)] = None,
    x_github_delivery: Annotated[
        str | None, Header(max_length=_MAX_DELIVERY, pattern=LINE_PATTERN)
    ] = None,
) -> HookOut:
    """A repository's push webhook (GitHub's format; `X-Hub-Signature-256` is the
    HMAC-SHA256 of the body under the link's secret). 404 when no function is
    linked to the repository, 401 when no linked function's secret signed it; 202
    when a build was queued, 200 when every linked function ignored the delivery
    (another branch, a ping, a delivery or commit already built), each with why."""
    body = await request.body()
    push = service.Push.parse(body)
    links = await run_in_threadpool(
        service.signed_links, session, ctx.secrets, push, body, x_hub_signature_256
    )
    delivery = x_github_delivery or None
    event = (x_github_event or "push").lower()
    if event != "push":
        results = [
            HookResult(function_id=link.function_id, status="ignored",
                       reason=f"a {event} event; only pushes build")
            for link in links
        ]
        return HookOut(delivery=delivery, results=results)
    if delivery is not None and not delivery.strip():
        raise ValidationFailed("X-GitHub-Delivery is blank")
    hook = service.HookContext(
        settings=ctx.settings, jobs=runner.jobs,
        rules=service.policy(ctx.settings, private_dirs(ctx)),
    )
    results = []
    for link in links:
        results.append(await run_in_threadpool(
            functools.partial(service.act, session, hook, link, push, delivery)
        ))
    if any(r.status == "building" for r in results):
        response.status_code = 202
    return HookOut(delivery=delivery, results=results)
