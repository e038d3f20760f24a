"""The FastAPI application: every domain's router mounted under /api/v1 in one
place, JSON errors for everything, request ids, and the background tasks: the
periodic duties under the maintenance lease and the wake-ups from other replicas."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from argon2 import PasswordHasher
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgefn import __version__, redact
from edgefn.atomicfile import private_dir
from edgefn.contract import ResourceCaps
from edgefn.controlplane import db, telemetry
from edgefn.controlplane.artifacts import UrlSigner, open_store
from edgefn.controlplane.artifacts.api import router as artifacts_router
from edgefn.controlplane.audit import checkpoints
from edgefn.controlplane.audit import service as audit_service
from edgefn.controlplane.audit.api import router as audit_router
from edgefn.controlplane.auth.api import router as auth_router
from edgefn.controlplane.auth.service import Credentials
from edgefn.controlplane.builds.api import router as builds_router
from edgefn.controlplane.console import PATH as CONSOLE_PATH
from edgefn.controlplane.console import ConsoleFiles
from edgefn.controlplane.deployments import outbox
from edgefn.controlplane.deployments import service as deployments_service
from edgefn.controlplane.deployments.api import router as deployments_router
from edgefn.controlplane.deps import CPContext
from edgefn.controlplane.errors import CPError
from edgefn.controlplane.fields import pattern_meaning
from edgefn.controlplane.functions.api import router as functions_router
from edgefn.controlplane.gitlinks.api import router as gitlinks_router
from edgefn.controlplane.leases.duties import Duties, Duty
from edgefn.controlplane.logs.api import router as logs_router
from edgefn.controlplane.logs.hub import LogHub, RedisLogFanout
from edgefn.controlplane.nodes import service as nodes_service
from edgefn.controlplane.nodes.api import router as nodes_router
from edgefn.controlplane.nodes.listener import NodeListener
from edgefn.controlplane.pki.tls import NodeTLS, load_ca
from edgefn.controlplane.precompiled.api import router as precompiled_router
from edgefn.controlplane.precompiled.service import Precompiler
from edgefn.controlplane.quotas.api import router as quotas_router
from edgefn.controlplane.routes.api import router as routes_router
from edgefn.controlplane.secrets import open_secret_store
from edgefn.controlplane.secrets.api import router as secrets_router
from edgefn.controlplane.series import service as series_service
from edgefn.controlplane.series.api import router as series_router
from edgefn.controlplane.settings import CPSettings
from edgefn.controlplane.stream.bus import open_bus
from edgefn.controlplane.stream.notifier import Notifier
from edgefn.controlplane.stream.server import ControlServer
from edgefn.controlplane.stream.websocket import router as stream_router

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
    429: "too_many_requests",
}


def build_context(settings: CPSettings) -> CPContext:
    private_dir(settings.data_dir)
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
    anchor = checkpoints.Anchor(
        settings.resolved_audit_key().encode(),
        settings.resolved_audit_checkpoint_file(),
        every=settings.audit_checkpoint_every,
    )
    checkpoints.attach(sessions, anchor)
    replica_id = settings.resolved_replica_id()
    notifier = Notifier(open_bus(engine.url, replica_id, redis_url=settings.wake_redis_url))
    outbox.watch(sessions, notifier.notify, committing=notifier.committing)
    store = open_store(settings, signer)
    engines = [e for e in settings.precompile_engines.split(",") if e]
    return CPContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        store=store,
        signer=signer,
        creds=creds,
        notifier=notifier,
        anchor=anchor,
        secrets=open_secret_store(settings),
        node_ca=load_ca(settings),
        replica_id=replica_id,
        logs=LogHub(fanout=RedisLogFanout(settings.wake_redis_url, replica_id)
                    if settings.wake_redis_url else None),
        precompiler=Precompiler(sessions, store, engines, poll_s=settings.precompile_poll_s)
        if engines else None,
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
        msg = str(err.get("msg"))
        if err.get("type") == "string_pattern_mismatch":
            meaning = pattern_meaning(str(err.get("ctx", {}).get("pattern", "")))
            msg = f"is not {meaning}" if meaning else "is not in the expected form"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


class _AllowedMethods:
    """Every method a documented path answers, for a 405's `Allow` header.

    Starlette's 405 names only the methods of the first route that matched the
    path, where a path served by several routes (GET and POST /functions) has
    more; the OpenAPI document has them all, read once on the first 405."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._table: list[tuple[re.Pattern[str], list[str]]] | None = None

    def at(self, path: str) -> list[str]:
        if self._table is None:
            self._table = [
                (
                    re.compile(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))),
                    sorted(m.upper() for m in operations),
                )
                for template, operations in self._app.openapi().get("paths", {}).items()
            ]
        return next((methods for pattern, methods in self._table if pattern.fullmatch(path)), [])


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CPError)
    async def _cp_error(_: Request, exc: CPError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
        return _error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The contract answers bad input with 400, not FastAPI's 422.
        return _error(400, "validation_error", _describe_validation(exc))

    allowed = _AllowedMethods(app)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            methods = allowed.at(request.url.path)
            if methods:
                headers["Allow"] = ", ".join(methods)
        return _error(exc.status_code, code, str(exc.detail), headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal", "internal error")


# Bodies with their own, larger cap (`max_artifact_bytes`), read as they stream in
# (`uploads`): a version upload, a build's source archive and a PUT to a signed
# upload URL.
_UPLOAD_PATHS = re.compile(
    re.escape(API_PREFIX) + r"/(functions/[^/]+/(versions|builds)|uploads/.+)"
)


class _JsonBodyCap:
    """413 for any other request body over `limit` bytes, so that no JSON body costs
    more than that in memory before its fields are checked.

    A Content-Length over the limit is answered before a byte is read. A body sent
    without one (chunked) is counted as the endpoint reads it, and the read that
    passes the limit raises: FastAPI lets an HTTPException out of its body parsing,
    and the error handlers answer it in the contract's shape; the rest is not read.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _UPLOAD_PATHS.fullmatch(scope["path"]):
            await self.app(scope, receive, send)
            return
        message = f"request body is over the limit of {self.limit} bytes"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await _error(413, "payload_too_large", message)(scope, receive, send)
            return
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            got = await receive()
            if got["type"] == "http.request":
                seen += len(got.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, message)
            return got

        await self.app(scope, capped, send)


# OpenAPI links: which operations take the id of what an operation created,
# `(method, path, status) -> [(method, path, {parameter: where it comes from})]`.
# Clients and Schemathesis' stateful phase follow them from a create to the
# calls that read, change and delete what it made.
_ID = "$response.body#/id"
_FUNCTION = {"function_id": _ID}
_LINKS: dict[tuple[str, str, str], list[tuple[str, str, dict[str, str]]]] = {
    ("post", "/functions", "201"): [
        ("get", "/functions/{function_id}", _FUNCTION),
        ("patch", "/functions/{function_id}", _FUNCTION),
        ("delete", "/functions/{function_id}", _FUNCTION),
        ("post", "/functions/{function_id}/versions", _FUNCTION),
        ("get", "/functions/{function_id}/versions", _FUNCTION),
        ("post", "/functions/{function_id}/deploy", _FUNCTION),
        ("post", "/functions/{function_id}/rollback", _FUNCTION),
        ("get", "/functions/{function_id}/deployments", _FUNCTION),
    ],
    ("post", "/functions/{function_id}/deploy", "202"): [
        ("get", "/deployments/{deployment_id}", {"deployment_id": _ID}),
    ],
    ("post", "/functions/{function_id}/rollback", "202"): [
        ("get", "/deployments/{deployment_id}", {"deployment_id": _ID}),
    ],
    ("post", "/routes", "201"): [("delete", "/routes/{route_id}", {"route_id": _ID})],
    ("post", "/nodes", "201"): [("delete", "/nodes/{node_id}", {"node_id": _ID})],
    ("post", "/projects", "201"): [
        ("get", "/projects/{project_id}", {"project_id": _ID}),
        ("post", "/projects/{project_id}/members", {"project_id": _ID}),
        ("post", "/projects/{project_id}/api-keys", {"project_id": _ID}),
        ("get", "/projects/{project_id}/api-keys", {"project_id": _ID}),
    ],
    ("post", "/projects/{project_id}/api-keys", "201"): [
        (
            "delete",
            "/projects/{project_id}/api-keys/{key_id}",
            {"project_id": "$request.path.project_id", "key_id": _ID},
        ),
    ],
}


def _operation_ref(method: str, path: str) -> str:
    pointer = (API_PREFIX + path).replace("~", "~0").replace("/", "~1")
    return f"#/paths/{pointer}/{method}"


# Function fields bounded by the cluster's caps (`CPSettings.caps`): the field, and
# the cap that bounds it.
_CAPPED_FIELDS = {
    "memory_pages": "memory_pages",
    "max_execution_ms": "max_execution_ms",
    "max_response_bytes": "max_response_bytes",
    "max_request_bytes": "max_request_bytes",
    "max_hot_instances": "max_hot_instances",
    "min_hot_instances": "max_hot_instances",
}
# The same within a nested policy: the function's field, the component of its schema,
# and that component's capped fields. The inputs get a capped copy of the component
# (named with an `In` suffix), so that what the API answers, which may predate a
# lowered cap, is not held to it.
_CAPPED_NESTED = {
    "http_fetch": ("HttpFetchPolicy", {"max_response_bytes": "max_fetch_response_bytes"}),
}
_CAPPED_INPUTS = ("FunctionIn", "FunctionPatch")


def _cap_properties(
    properties: dict[str, Any], fields: dict[str, str], caps: ResourceCaps
) -> None:
    for field, cap in fields.items():
        prop = properties.get(field)
        if prop is None:
            continue
        for branch in prop.get("anyOf", [prop]):
            if branch.get("type") == "integer":
                branch["maximum"] = min(branch.get("maximum", 2**53 - 1), getattr(caps, cap))


def _state_caps(models: dict[str, Any], caps: ResourceCaps) -> None:
    """The document states this cluster's caps as the maximum of the fields they
    bound, so that a request valid by it is not refused for a cap."""
    for name in _CAPPED_INPUTS:
        _cap_properties(models.get(name, {}).get("properties", {}), _CAPPED_FIELDS, caps)
    for field, (component, fields) in _CAPPED_NESTED.items():
        if component not in models:
            continue
        capped = copy.deepcopy(models[component])
        _cap_properties(capped.get("properties", {}), fields, caps)
        models[component + "In"] = capped
        old, new = f"#/components/schemas/{component}", f"#/components/schemas/{component}In"
        for name in _CAPPED_INPUTS:
            prop = models.get(name, {}).get("properties", {}).get(field)
            for branch in [prop, *prop.get("anyOf", [])] if prop else []:
                if branch.get("$ref") == old:
                    branch["$ref"] = new


_TOO_LARGE = {
    "description": "error code payload_too_large",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


def _install_openapi(app: FastAPI, caps: ResourceCaps) -> None:
    """The document as this API behaves. FastAPI documents a 422 on every
    operation with inputs; this API answers invalid input with 400 (`_validation`
    above), which each operation declares with its other errors
    (`errors.responses`), so the 422 entries go. Every operation with a body may
    answer 413. And the links are added."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            paths = schema.get("paths", {})
            for path in paths.values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
                    if "requestBody" in operation:
                        # `_JsonBodyCap` (or an upload's own cap, documented with it).
                        operation["responses"].setdefault("413", _TOO_LARGE)
            models = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                models.pop(name, None)
            _state_caps(models, caps)
            for (method, path, status), targets in _LINKS.items():
                response = paths[API_PREFIX + path][method]["responses"][status]
                response["links"] = {
                    re.sub(r"[^A-Za-z0-9]+", "_", target_method + target_path).strip("_"): {
                        "operationRef": _operation_ref(target_method, target_path),
                        "parameters": parameters,
                    }
                    for target_method, target_path, parameters in targets
                }
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def duties(ctx: CPContext) -> Duties:
    """The periodic work of the cluster, done by whichever replica holds the lease."""
    interval = ctx.settings.heartbeat_interval_s
    return Duties(
        ctx.sessions,
        [
            Duty("offline_nodes", interval,
                 lambda s: nodes_service.mark_stale(s, interval_s=interval)),
            Duty("stalled_rollouts", interval, deployments_service.advance_stalled),
            Duty("rollout_gates", ctx.settings.rollout_check_s,
                 deployments_service.drive_rollouts),
            Duty("series_retention", 300.0,
                 lambda s: series_service.prune(s, retention_s=ctx.settings.series_retention_s)),
        ],
        holder=ctx.replica_id,
        ttl_s=ctx.settings.lease_ttl_s,
    )


def create_app(settings: CPSettings | None = None) -> FastAPI:
    settings = settings or CPSettings()
    # Signed artifact URLs and tokens pass through uvicorn's and httpx's logs.
    redact.install()
    ctx = build_context(settings)

    @contextlib.asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            await asyncio.to_thread(db.migrate, ctx.engine)
        with db.session_scope(ctx.sessions) as session:
            await asyncio.to_thread(audit_service.start_checkpoints, session, ctx.anchor)
        ctx.notifier.bind(asyncio.get_running_loop())
        node_tls = NodeTLS.from_settings(settings, ctx.node_ca)
        grpc_server: ControlServer | None = None
        if settings.grpc_port is not None:
            grpc_server = await ControlServer.start(
                ctx, host=settings.host, port=settings.grpc_port, tls=node_tls
            )
        running.state.grpc = grpc_server
        listener: NodeListener | None = None
        node_port = settings.node_port
        if node_tls is not None and node_tls.client_ca is not None and node_port is not None:
            listener = await NodeListener.start(
                running, host=settings.host, port=node_port,
                context=node_tls.ssl_context(),
            )
        running.state.node_listener = listener
        running.state.duties = leased = duties(ctx)
        if ctx.precompiler is not None:
            ctx.precompiler.start()
        background = [asyncio.create_task(leased.run_forever()),
                      asyncio.create_task(ctx.notifier.listen()),
                      asyncio.create_task(ctx.logs.listen())]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):  # else it lapses after its TTL
                await asyncio.to_thread(leased.release)
            if ctx.precompiler is not None:
                await asyncio.to_thread(ctx.precompiler.stop)
            if listener is not None:
                await listener.stop()
            if grpc_server is not None:
                await grpc_server.stop()
            ctx.engine.dispose()
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)

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
    # The running NodeListener (node mTLS), likewise.
    app.state.node_listener = None
    # This replica's periodic duties and whether it holds their lease, once started.
    app.state.duties = None
    _install_error_handlers(app)
    _install_openapi(app, settings.caps)
    tracing = telemetry.setup(settings.otlp_endpoint, app)
    # The control plane's Telemetry (None: untraced).
    app.state.telemetry = tracing
    app.add_middleware(_JsonBodyCap, limit=settings.max_json_body_bytes)

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
        secrets_router,
        stream_router,
        builds_router,
        gitlinks_router,
        logs_router,
        precompiled_router,
        series_router,
    ):
        app.include_router(router, prefix=API_PREFIX)

    # Outside /api/v1 and open: the console's files carry no data.
    app.mount(CONSOLE_PATH, ConsoleFiles(), name="console")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    return app
