"""HTTP surface of auth: login, projects, users, memberships, API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from edgefn.controlplane.auth import service, throttle
from edgefn.controlplane.auth.schemas import (
    ApiKeyIn,
    ApiKeyInfo,
    ApiKeyOut,
    LoginIn,
    MemberIn,
    MemberOut,
    ProjectIn,
    ProjectOut,
    TokenOut,
    UserIn,
    UserOut,
)
from edgefn.controlplane.deps import DB, Caller, Ctx, request_id_of
from edgefn.controlplane.errors import (
    CALLER,
    Conflict,
    NotFound,
    TooManyRequests,
    Unauthorized,
    responses,
)
from edgefn.controlplane.fields import PathId
from edgefn.controlplane.pagination import Page, describe_page, page_params

router = APIRouter(tags=["auth"])


@router.post(
    "/auth/login", response_model=TokenOut, responses=responses(Unauthorized, TooManyRequests)
)
def login(body: LoginIn, request: Request, session: DB, ctx: Ctx) -> TokenOut:
    token, exp = service.login(
        session,
        ctx.creds,
        throttle.Policy.from_settings(ctx.settings),
        email=body.email,
        password=body.password,
        address=throttle.address_key(request.client.host if request.client else None),
        request_id=request_id_of(request),
    )
    return TokenOut(token=token, expires_at=exp)


@router.post(
    "/projects", status_code=201, response_model=ProjectOut, responses=responses(*CALLER, Conflict)
)
def create_project(body: ProjectIn, session: DB, who: Caller) -> ProjectOut:
    return ProjectOut.model_validate(service.create_project(session, who, name=body.name))


@router.get("/projects", response_model=list[ProjectOut], responses=responses(*CALLER))
def list_projects(
    request: Request,
    response: Response,
    session: DB,
    who: Caller,
    page: Annotated[Page, Depends(page_params)],
) -> list[ProjectOut]:
    projects = service.list_projects(session, who)
    describe_page(request, response, page, len(projects))
    window = projects[page.offset : page.offset + page.limit]
    return [ProjectOut.model_validate(p) for p in window]


@router.get(
    "/projects/{project_id}", response_model=ProjectOut, responses=responses(*CALLER, NotFound)
)
def get_project(project_id: PathId, session: DB, who: Caller) -> ProjectOut:
    return ProjectOut.model_validate(service.get_project(session, who, project_id))


@router.post(
    "/users", status_code=201, response_model=UserOut, responses=responses(*CALLER, Conflict)
)
def create_user(body: UserIn, session: DB, ctx: Ctx, who: Caller) -> UserOut:
    user = service.create_user(session, who, ctx.creds, email=body.email, password=body.password)
    return UserOut.model_validate(user)


@router.post(
    "/projects/{project_id}/members",
    status_code=201,
    response_model=MemberOut,
    responses=responses(*CALLER, NotFound, Conflict),
)
def add_member(project_id: PathId, body: MemberIn, session: DB, who: Caller) -> MemberOut:
    member = service.add_member(
        session, who, project_id=project_id, user_id=body.user_id, role=body.role
    )
    return MemberOut.model_validate(member)


@router.post(
    "/projects/{project_id}/api-keys",
    status_code=201,
    response_model=ApiKeyOut,
    responses=responses(*CALLER, NotFound),
)
def create_api_key(project_id: PathId, body: ApiKeyIn, session: DB, who: Caller) -> ApiKeyOut:
    key, secret = service.create_api_key(
        session, who, project_id=project_id, name=body.name, role=body.role
    )
    return ApiKeyOut(
        id=key.id,
        project_id=key.project_id,
        name=key.name,
        role=key.role,
        created_at=key.created_at,
        key=secret,
    )


@router.get(
    "/projects/{project_id}/api-keys",
    response_model=list[ApiKeyInfo],
    responses=responses(*CALLER, NotFound),
)
def list_api_keys(project_id: PathId, session: DB, who: Caller) -> list[ApiKeyInfo]:
    keys = service.list_api_keys(session, who, project_id=project_id)
    return [ApiKeyInfo.model_validate(k) for k in keys]


@router.delete(
    "/projects/{project_id}/api-keys/{key_id}",
    status_code=204,
    responses=responses(*CALLER, NotFound),
)
def revoke_api_key(project_id: PathId, key_id: PathId, session: DB, who: Caller) -> Response:
    service.revoke_api_key(session, who, project_id=project_id, key_id=key_id)
    return Response(status_code=204)
