"""The FastAPI application: every domain's router mounted under /api/v1 in one
place, JSON errors for everything, request ids, and the liveness sweeper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from argon2 import PasswordHasher
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgefn import __version__
from edgefn.controlplane import db
from edgefn.controlplane.artifacts import UrlSigner, open_store
from edgefn.controlplane.artifacts.api import router as artifacts_router
from edgefn.controlplane.audit.api import router as audit_router
from edgefn.controlplane.auth.api import router as auth_router
from edgefn.controlplane.auth.service import Credentials
from edgefn.controlplane.console import PATH as CONSOLE_PATH
from edgefn.controlplane.console import ConsoleFiles
from edgefn.controlplane.deployments import outbox
from edgefn.controlplane.deployments.api import router as deployments_router
from edgefn.controlplane.deps import CPContext
from edgefn.controlplane.errors import CPError
from edgefn.controlplane.functions.api import router as functions_router
from edgefn.controlplane.nodes import service as nodes_service
from edgefn.controlplane.nodes.api import router as nodes_router
from edgefn.controlplane.quotas.api import router as quotas_router
from edgefn.controlplane.routes.api import router as routes_router
from edgefn.controlplane.settings import CPSettings
from edgefn.controlplane.stream.notifier import Notifier
from edgefn.controlplane.stream.server import ControlServer

log = logging.getLogger("edgefn.controlplane")
API_PREFIX = "/api/v1"
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
}


def build_context(settings: CPSettings) -> CPContext:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(settings.resolved_database_url())
    secret = settings.resolved_secret_key()
    signer = UrlSigner(secret)
    bootstrap = settings.bootstrap_token
    creds = Credentials(
        bootstrap_token=bootstrap.get_secret_value() if bootstrap else None,
        jwt_secret=secret,
        jwt_ttl_s=settings.jwt_ttl_s,
        hasher=PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        ),
    )
    sessions = db.make_sessionmaker(engine)
    notifier = Notifier()
    outbox.watch(sessions, notifier.notify)
    return CPContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        store=open_store(settings, signer),
        signer=signer,
        creds=creds,
        notifier=notifier,
    )


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CPError)
    async def _cp_error(_: Request, exc: CPError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The contract answers bad input with 400, not FastAPI's 422.
        return _error(400, "validation_error", _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal error")


async def _sweep_stale_nodes(ctx: CPContext) -> None:
    interval = ctx.settings.heartbeat_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            with db.session_scope(ctx.sessions) as session:
                await asyncio.to_thread(nodes_service.mark_stale, session, interval_s=interval)
        except Exception:  # keep sweeping; the next round may succeed
            log.exception("marking stale nodes failed")


def create_app(settings: CPSettings | None = None) -> FastAPI:
    settings = settings or CPSettings()
    ctx = build_context(settings)

    @contextlib.asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            await asyncio.to_thread(db.migrate, ctx.engine)
        ctx.notifier.bind(asyncio.get_running_loop())
        grpc_server: ControlServer | None = None
        if settings.grpc_port is not None:
            grpc_server = await ControlServer.start(
                ctx, host=settings.host, port=settings.grpc_port
            )
        running.state.grpc = grpc_server
        sweeper = asyncio.create_task(_sweep_stale_nodes(ctx))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if grpc_server is not None:
                await grpc_server.stop()
            ctx.engine.dispose()

    app = FastAPI(
        title="edgefn control plane",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
    )
    app.state.cp = ctx
    # The running ControlServer (its `.port` is the bound one) once started.
    app.state.grpc = None
    _install_error_handlers(app)

    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        rid = request.headers.get("x-request-id", "")[:100] or uuid.uuid4().hex
        request.state.request_id = rid
        response = await call_next(request)
        response.headers["x-request-id"] = rid
        return response

    for router in (
        auth_router,
        functions_router,
        deployments_router,
        routes_router,
        nodes_router,
        quotas_router,
        audit_router,
        artifacts_router,
    ):
        app.include_router(router, prefix=API_PREFIX)

    # Outside /api/v1 and open: the console's files carry no data.
    app.mount(CONSOLE_PATH, ConsoleFiles(), name="console")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    return app
