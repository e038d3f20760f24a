"""The hot path of one worker process: route, pooled instance, call, response.

`Runtime.apply_state` turns a `NodeState` into loaded functions (artifact from
the disk cache, compiled once, pool warmed) and swaps the routing table in one
assignment, so requests see either the old state or the new one. Each loaded
function keeps what was decided for it once (dispatch.py): its ABI codec and
whether its calls run on the event loop. The HTTP front calls `handle_on_loop`
for every request, and `handle` on a request thread for those it declines; for
those whose guests are suspended while they wait it returns a `Suspended`, run in
a green task on the loop (edge/green.py).
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from edgefn.contract import QuotaSpec, ResourceCaps, RouteSpec
from edgefn.edge import green, metrics
from edgefn.edge.cache import ArtifactCache, sha256_hex
from edgefn.edge.capabilities.secrets import SecretsCapability
from edgefn.edge.errors import (
    ArtifactError,
    EdgeError,
    FunctionUnavailable,
    Overloaded,
    QuotaExceeded,
    RequestTooLarge,
)
from edgefn.edge.logs import Invocation, JsonLog
from edgefn.edge.quotas import QuotaLimits, QuotaTable, node_defaults
from edgefn.edge.spec import FunctionSpec, NodeState, SpecKey
from edgefn.edge.worker.dispatch import (
    Codec,
    InlinePolicy,
    Placement,
    SubRoute,
    codec_for,
    may_block,
    wagi_entrypoint,
)
from edgefn.edge.worker.exchange import HttpRequest, HttpResponse
from edgefn.edge.worker.fairness import PenaltyBox
from edgefn.edge.worker.host_functions import FetchBinding, FunctionHost, InvocationHost, KvBinding
from edgefn.edge.worker.pool import InstancePool, PoolManager, spent_by
from edgefn.edge.worker.routing import MethodNotAllowed, RouteMatch, Router
from edgefn.edge.worker.split import VersionChoice
from edgefn.sandbox.abi import WagiRoute, parse_wagi_routes
from edgefn.sandbox.engine import Engine, GuestRequest, Module
from edgefn.sandbox.errors import GuestTimeout, InvalidModule, InvocationError
from edgefn.sandbox.wasminfo import ABI_WAGI, inspect_module, uses_wasi_http

if TYPE_CHECKING:
    from edgefn.edge.tracing import Tracer

log = logging.getLogger("edgefn.edge")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_JSON = [("content-type", "application/json")]


class Suspended:
    """`handle_on_loop`'s answer for a request to finish in a green task: `run()` there
    takes it from where the loop left it (routed, its function loaded and placed)."""

    __slots__ = ("run",)

    def __init__(self, run: Callable[[], HttpResponse]) -> None:
        self.run = run


@dataclass(slots=True)
class LoadedFunction:
    """A function version ready to serve: its pool, host, codec and placement, all
    decided when it was loaded (dispatch.py)."""

    spec: FunctionSpec
    pool: InstancePool
    host: FunctionHost
    codec: Codec
    placement: Placement
    # WAGI: the sub-routes its `_routes` export declared, (pattern, export), in the
    # order they are tried.
    sub_routes: tuple[tuple[WagiRoute, str], ...] = ()
    # Its invocations' count and latency, labelled once instead of on every request.
    invocations: Any = None
    inflight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.invocations = metrics.invocation_metrics(
            self.spec.id, self.spec.project_id, self.spec.version)

    def enter(self, limit: int) -> bool:
        """Take one of the function's `limit` request slots in this worker, if free."""
        with self._lock:
            if self.inflight >= limit:
                return False
            self.inflight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.inflight -= 1


class Routed(NamedTuple):
    """A request's route in one version of the tables (`Runtime.route`)."""

    tables: _Tables
    match: RouteMatch | MethodNotAllowed | None
    body_limit: int


@dataclass
class _Tables:
    """Everything `handle` reads, swapped as one object."""

    router: Router = field(default_factory=lambda: Router([]))
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    # Each function's `spec.key`, computed once here rather than on every request.
    keys: dict[str, SpecKey] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    # Each project's effective quotas, resolved once per state; a project absent
    # here ("" for a local functions directory) is not counted.
    limits: dict[str, QuotaLimits] = field(default_factory=dict)
    # Functions whose traffic is split with their previous version (split.py).
    splits: dict[str, VersionChoice] = field(default_factory=dict)
    generation: int = -1
    # Recent routes by (host, path, method): clients repeat a few targets, so most
    # requests skip the match. Bounded by `_ROUTE_CACHE` entries (then emptied) and
    # by the length of what it keeps; it goes with these tables when they are swapped.
    routes: dict[tuple[str, str, str], Routed] = field(default_factory=dict)


def _error(status: int, code: str, message: str, request_id: str) -> HttpResponse:
    body = json.dumps({"error": {"code": code, "message": message, "request_id": request_id}})
    return HttpResponse(status, list(_JSON), body.encode())


def error_response(exc: EdgeError, request_id: str) -> HttpResponse:
    """The answer to a request refused with `exc`, `x-request-id` included."""
    resp = _error(exc.status, exc.code, str(exc), request_id)
    resp.headers.append(("x-request-id", request_id))
    return resp


_ROUTE_CACHE = 4096
_ROUTE_KEY_MAX = 512

# Scheduling noise allowed past the deadline before the host-side guard fires.
_GUARD_S = 0.05
_ERROR_CODES = {500: "guest_error", 502: "response_too_large", 504: "timeout"}


class Runtime:
    """One per worker process; thread-safe: requests run at once on the event loop and
    on request threads."""

    def __init__(
        self,
        *,
        engine: Engine,
        cache: ArtifactCache,
        pools: PoolManager,
        log_sink: JsonLog,
        node_id: str,
        max_request_body_bytes: int,
        max_inflight_per_function: int = 1_000_000,
        kv_factory: Callable[[FunctionSpec], KvBinding | None] | None = None,
        fetch_factory: Callable[[FunctionSpec], FetchBinding | None] | None = None,
        secrets_factory: Callable[[FunctionSpec], SecretsCapability | None] | None = None,
        on_close: Callable[[], None] | None = None,
        tracer: Tracer | None = None,
        caps: ResourceCaps | None = None,
        quotas: QuotaTable | None = None,
        quota_defaults: QuotaSpec | None = None,
        penalty: PenaltyBox | None = None,
        inline: InlinePolicy | None = None,
    ) -> None:
        self.engine = engine
        # When calls of a function may run on the worker's event loop (dispatch.py).
        self.inline = inline or InlinePolicy()
        # The node operator's caps: a function over them is never loaded (None: no caps).
        self.caps = caps
        self.cache = cache
        self.pools = pools
        self.log_sink = log_sink
        self.node_id = node_id
        self.max_request_body_bytes = max_request_body_bytes
        # No function may hold every request thread of a worker: slow or hostile
        # functions then cannot starve the others.
        self.max_inflight_per_function = max_inflight_per_function
        self._kv_factory = kv_factory
        self._fetch_factory = fetch_factory
        self._secrets_factory = secrets_factory
        self._on_close = on_close
        self._tracer = tracer
        # Quotas count per node and project; without a table nothing is counted.
        self.quotas = quotas
        self.quota_defaults = quota_defaults or node_defaults()
        # None: no function is moved aside (`penalty_threads` 0).
        self.penalty = penalty
        self._tables = _Tables()
        self._loaded: dict[SpecKey, LoadedFunction] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._state_lock = threading.Lock()
        # The routes and function projects the current router was built from.
        self._routed: tuple[list[RouteSpec], dict[str, str]] = ([], {})

    # -- state ----------------------------------------------------------------
    def _router_for(self, state: NodeState, keys: dict[str, SpecKey]) -> Router:
        """The router of `state` (WAGI sub-routes included): the current one when its
        routes and their functions' projects are the same, as they are after most
        deploys. Comparing is a fraction of building (about 50 us a route), which with
        10,000 routes would be paid by every worker at every deploy."""
        routed = (self._with_sub_routes(state.routes(), keys),
                  {f.id: f.project_id for f in state.functions})
        if routed == self._routed:
            return self._tables.router
        self._routed = routed
        return Router(*routed)

    def apply_state(self, state: NodeState) -> None:
        """Load what the state names, then switch to it; old versions retire."""
        with self._state_lock:
            functions = {fn.id: fn for fn in state.functions}
            keys = {fn.id: fn.key for fn in state.functions}
            unavailable = dict(state.unavailable)
            for fn in state.functions:
                # A state written before the caps were lowered, or a functions directory,
                # can name a function over them: it is reported, never run.
                excess = self.caps.excess(fn.limits, fn) if self.caps is not None else ""
                if excess:
                    unavailable[fn.id] = f"over this node's resource caps: {excess}"
                    log.warning("function %s@%s not runnable: %s", fn.id, fn.version,
                                unavailable[fn.id])
                    continue
                try:
                    if fn.min_hot_instances <= 0 and not self._declares_routes(fn):
                        continue
                    self._ensure_loaded(fn, keys[fn.id])
                except EdgeError as exc:
                    unavailable[fn.id] = str(exc)
                    log.warning("function %s@%s not runnable: %s", fn.id, fn.version, exc)
            splits = self._load_splits(state, unavailable)
            limits = {}
            if self.quotas is not None:
                # Once per project, not per function.
                projects = {fn.project_id for fn in state.functions if fn.project_id}
                limits = {
                    project: QuotaLimits.resolve(state.quotas.get(project), self.quota_defaults)
                    for project in projects
                }
                self.quotas.track(sorted(limits))
            self._tables = _Tables(
                router=self._router_for(state, keys),
                functions=functions,
                keys=keys,
                unavailable=unavailable,
                limits=limits,
                splits=splits,
                generation=state.generation,
            )
            keep = {*keys.values(), *(c.previous_key for c in splits.values())}
            for key in [k for k in self._loaded if k not in keep]:
                loaded = self._loaded.pop(key)
                loaded.pool.retire()
                loaded.host.close()

    def _declares_routes(self, spec: FunctionSpec) -> bool:
        """Whether a function loaded only on demand must be loaded now anyway: its
        module exports `_routes`, whose sub-routes go in the route table."""
        try:
            return inspect_module(self._artifact(spec)).exports.get("_routes") == "func"
        except InvalidModule as exc:
            raise FunctionUnavailable(f"module refused: {exc}") from exc

    def _with_sub_routes(self, routes: list[RouteSpec], keys: dict[str, SpecKey]
                         ) -> list[RouteSpec]:
        """The routes, each of a WAGI function with sub-routes (`_routes`) preceded by
        them, joined to it as WAGI joins them, so that they are tried first."""
        out: list[RouteSpec] = []
        for route in routes:
            key = keys.get(route.function_id)
            loaded = self._loaded.get(key) if key is not None else None
            if loaded is not None and loaded.sub_routes:
                parent = WagiRoute.of_route(route.path)
                for pattern, export in loaded.sub_routes:
                    path = parent.append(pattern).route_path
                    out.append(SubRoute(**{**dict(route), "path": path or "/"},
                                        entrypoint=export))
            out.append(route)
        return out

    def _load_splits(
        self, state: NodeState, unavailable: dict[str, str]
    ) -> dict[str, VersionChoice]:
        """The version choice of each split function whose previous version can run; a
        previous version that cannot leaves the new one serving alone."""
        out = {}
        for fid, split in state.splits.items():
            prev = split.previous
            over_caps = self.caps is not None and bool(self.caps.excess(prev.limits, prev))
            if fid in unavailable or over_caps:
                continue
            key = prev.key
            if prev.min_hot_instances > 0:
                try:
                    self._ensure_loaded(prev, key)
                except EdgeError as exc:
                    log.warning("previous version %s@%s of a split not runnable: %s", fid,
                                prev.version, exc)
                    continue
            out[fid] = VersionChoice(fid, split, key)
        return out

    @property
    def generation(self) -> int:
        return self._tables.generation

    def _artifact(self, spec: FunctionSpec) -> bytes:
        if spec.artifact and not spec.artifact_url:
            # A local functions directory: the file is the source of truth.
            try:
                local = Path(spec.artifact).read_bytes()
            except OSError as exc:
                raise ArtifactError(f"cannot read {spec.artifact}: {exc}") from exc
            if spec.sha256 and sha256_hex(local) != spec.sha256:
                raise ArtifactError(f"sha256 mismatch for {spec.artifact}")
            return local
        cached = self.cache.get(spec.id, spec.version, spec.sha256)
        if cached is not None:
            metrics.CACHE_HITS.inc()
            return cached
        metrics.CACHE_MISSES.inc()
        pinned = [(f.id, f.version) for f in self._tables.functions.values()]
        return self.cache.ensure(spec.id, spec.version, spec.sha256, spec.artifact_url,
                                 pinned=pinned)

    def _ensure_loaded(self, spec: FunctionSpec, key: SpecKey) -> LoadedFunction:
        """`spec` loaded under `key` (its `spec.key`, passed in because computing it
        is not free)."""
        loaded = self._loaded.get(key)
        if loaded is not None and self.pools.get(key) is loaded.pool:
            return loaded
        lock = self._load_locks.setdefault(spec.id, threading.Lock())
        with lock:
            loaded = self._loaded.get(key)
            if loaded is not None and self.pools.get(key) is loaded.pool:
                return loaded
            if loaded is not None:
                # Its module was unloaded under memory pressure: load it afresh.
                loaded.host.close()
            wasm = self._artifact(spec)
            try:
                module = self.engine.compile(wasm, spec.limits, spec.wasi)
            except InvalidModule as exc:
                raise FunctionUnavailable(f"module refused: {exc}") from exc
            host = FunctionHost.configure(
                spec,
                log=self.log_sink,
                node_id=self.node_id,
                kv=self._kv_factory(spec) if self._kv_factory else None,
                fetch=self._fetch_factory(spec) if self._fetch_factory else None,
                secrets=self._secrets_factory(spec) if self._secrets_factory else None,
            )
            if uses_wasi_http(module.info) and host.fetch is None:
                host.close()
                module.close()
                raise FunctionUnavailable(
                    "module refused: it imports wasi_experimental_http and its policy "
                    "allows no outbound HTTP (http_fetch.allow_hosts is empty)"
                )
            pool = InstancePool(spec, module, self.pools)
            self.pools.add(pool)
            try:
                pool.warm()
            except InvocationError as exc:
                self.pools.remove(key)
                raise FunctionUnavailable(f"instantiation failed: {exc}") from exc
            metrics.INSTANCES_CREATED.labels(spec.id, spec.project_id).inc(pool.created)
            placement = Placement(self.inline, may_block=may_block(module, host),
                                  suspends=module.suspends, name=spec.id)
            try:
                sub_routes = self._wagi_routes(spec, module, host)
            except (EdgeError, InvocationError) as exc:
                self.pools.remove(key)
                raise FunctionUnavailable(str(exc)) from exc
            loaded = LoadedFunction(spec, pool, host, codec_for(module, spec), placement,
                                    sub_routes=sub_routes)
            self._loaded[key] = loaded
            return loaded

    def _wagi_routes(self, spec: FunctionSpec, module: Module, host: FunctionHost
                     ) -> tuple[tuple[WagiRoute, str], ...]:
        """A WAGI module's sub-routes: its `_routes` export run once, as WAGI runs it
        (no CGI variable, no argv), its stdout `pattern export` lines; and every export
        they or the function name checked now, not on a request."""
        if module.abi != ABI_WAGI:
            return ()
        exports = module.info.exports
        routes: tuple[tuple[WagiRoute, str], ...] = ()
        if exports.get("_routes") == "func":
            inst = module.instantiate()
            call = InvocationHost(host, f"{spec.id}:_routes", [], 0.0)
            call.deadline = time.monotonic() + spec.max_execution_ms / 1000
            try:
                raw = inst.invoke(GuestRequest(b"", b"", b"", b"", entrypoint="_routes"), call)
            finally:
                inst.close()
            routes = tuple(reversed(parse_wagi_routes(raw.decode("utf-8", "replace"))))
            for pattern, _ in routes:
                try:  # joined to any route, the path stays a route's path
                    RouteSpec(path=WagiRoute("").append(pattern).route_path or "/")
                except ValueError as exc:
                    raise FunctionUnavailable(f"_routes: {exc}") from None
        for name in {wagi_entrypoint(spec), *(export for _, export in routes)}:
            if exports.get(name) != "func":
                raise FunctionUnavailable(f"module exports no function {name!r}")
        return routes

    # -- requests -------------------------------------------------------------
    def route(self, host: str, path: str, method: str) -> Routed:
        """The request's route, and the largest body `handle` would take for it: the
        HTTP layer reads no more, and hands the route over with the request
        (`HttpRequest.routed`) so that it is not matched twice."""
        tables = self._tables
        key = (host, path, method)
        routed = tables.routes.get(key)
        if routed is not None:
            return routed
        match = tables.router.match(host, path, method)
        spec = None
        if match is not None and not isinstance(match, MethodNotAllowed):
            spec = tables.functions.get(match.function_id)
        routed = Routed(tables, match, self._body_limit(spec))
        if len(host) + len(path) <= _ROUTE_KEY_MAX:
            if len(tables.routes) >= _ROUTE_CACHE:
                tables.routes.clear()
            tables.routes[key] = routed
        return routed

    def _body_limit(self, spec: FunctionSpec | None) -> int:
        """A function's own body limit, else the node's."""
        if spec is None or spec.max_request_bytes is None:
            return self.max_request_body_bytes
        return spec.max_request_bytes

    def handle(self, req: HttpRequest) -> HttpResponse:
        """Serve `req` on the calling thread (a request thread of the front, or a test)."""
        resp = self._serve(req, on_loop=False)
        assert isinstance(resp, HttpResponse)
        return resp

    def handle_on_loop(self, req: HttpRequest) -> HttpResponse | Suspended | None:
        """Serve `req` on the event loop when its function runs there, or when it is
        refused before any function runs; None: it goes to a request thread (`handle`);
        a `Suspended`: the rest of it runs in a green task on the loop, its function
        being one whose guests are suspended while they wait.

        Nothing that may wait is done here: a function not yet loaded, one that may
        block in a host call, one still on probation or in the penalty box is left
        to the threads."""
        return self._serve(req, on_loop=True)

    def _serve(self, req: HttpRequest, *, on_loop: bool) -> HttpResponse | Suspended | None:
        ctx = _RequestContext(req.headers)
        rid = ctx.request_id
        tables = self._tables
        routed = req.routed
        if not (isinstance(routed, Routed) and routed.tables is tables):
            routed = self.route(req.host, req.path, req.method)
            tables = routed.tables
        match = routed.match
        if match is None:
            return self._finish(_error(404, "no_route", "no route matches this host and path",
                                       rid), rid)
        if isinstance(match, MethodNotAllowed):
            resp = _error(405, "method_not_allowed", f"method {req.method} not allowed", rid)
            resp.headers.append(("allow", ", ".join(match.allowed)))
            return self._finish(resp, rid)
        fid = match.function_id
        spec = tables.functions.get(fid)
        if spec is None or fid in tables.unavailable:
            reason = tables.unavailable.get(fid, "function is not deployed on this node")
            return self._refuse(FunctionUnavailable(reason), rid, fid, match.route.project_id)
        key = tables.keys[fid]
        split = tables.splits.get(fid)
        if split is not None:
            spec, key = split.choose(req, spec, key)
        project = spec.project_id
        limit = routed.body_limit  # `_body_limit(spec)`, found with the route
        if req.content_length is not None and req.content_length > limit:
            return self._refuse(RequestTooLarge(f"request body over the limit of {limit} bytes"),
                                rid, fid, project)
        if on_loop:
            loaded = self._loaded.get(key)
            if (loaded is None or not loaded.placement.on_loop
                    or self.pools.get(key) is not loaded.pool
                    or (self.penalty is not None and self.penalty.penalized(fid))):
                return None
            if loaded.placement.suspends:
                return Suspended(functools.partial(self._admit, loaded, req, ctx, match.route,
                                                   limit, tables, project, False, True))
            boxed = False
        else:
            try:
                loaded = self._ensure_loaded(spec, key)
                boxed = self.penalty is not None and self.penalty.admit(fid)
            except EdgeError as exc:
                return self._refuse(exc, rid, fid, project)
        return self._admit(loaded, req, ctx, match.route, limit, tables, project, boxed,
                           on_loop)

    def _admit(self, loaded: LoadedFunction, req: HttpRequest, ctx: _RequestContext,
               route: RouteSpec, limit: int, tables: _Tables, project: str,
               boxed: bool, on_loop: bool) -> HttpResponse:
        """A routed request to its loaded function: the function's and the project's
        limits, then the call (`_invoke`); `boxed`: a penalty box slot it holds;
        `on_loop`: it runs on the event loop (inline or in a green task)."""
        rid, fid = ctx.request_id, loaded.spec.id
        if not loaded.enter(self.max_inflight_per_function):
            if boxed and self.penalty is not None:
                self.penalty.release()
            return self._refuse(Overloaded(
                f"{self.max_inflight_per_function} requests to this function are already "
                "running here; retry shortly"), rid, fid, project)
        try:
            body = req.read_body(limit + 1)
            if len(body) > limit:
                return self._refuse(RequestTooLarge(
                    f"request body over the limit of {limit} bytes"), rid, fid, project)
            # The quota is taken once the body is in: a client slow to send one must
            # not hold the project's executions.
            quota = tables.limits.get(project)
            if quota is None or self.quotas is None:
                return self._invoke(loaded, req, body, ctx, route, [0.0], boxed, on_loop)
            rejection = self.quotas.enter(project, quota)
            if rejection is not None:
                return self._refuse(QuotaExceeded(
                    # The project id stays in the log line and the metric: a client
                    # may be anonymous, so the answer does not name the tenant.
                    f"the project's quota: {rejection.message}; retry in "
                    f"{rejection.retry_after} s", rejection.retry_after), rid, fid, project)
            cpu = [0.0]
            try:
                return self._invoke(loaded, req, body, ctx, route, cpu, boxed, on_loop)
            finally:
                self.quotas.leave(project, cpu[0])
        finally:
            loaded.leave()
            if boxed and self.penalty is not None:
                self.penalty.release()

    def _invoke(
        self, loaded: LoadedFunction, req: HttpRequest, body: bytes, ctx: _RequestContext,
        route: RouteSpec, cpu: list[float], boxed: bool, on_loop: bool,
    ) -> HttpResponse:
        """Run the guest where its placement says (the penalty box's threads when
        `boxed`); `cpu[0]` gets the CPU time it used (see `_Call`)."""
        spec, rid = loaded.spec, ctx.request_id
        headers = [(k, v) for k, v in req.headers if k != b"x-request-id"]
        headers.append((b"x-request-id", rid.encode()))
        # Only `http_fetch` sends a traceparent: not formatted for functions without it.
        host = InvocationHost(loaded.host, rid, headers, 0.0,
                              ctx.traceparent if loaded.host.fetch is not None else None)
        call = _Call(loaded, loaded.codec.request(req, headers, body, route), host)
        start = time.time()
        error: str | None = None
        try:
            resp = loaded.codec.response(self._run(call, boxed, on_loop))
        except (InvocationError, EdgeError) as exc:
            error = str(exc)
            code = (_ERROR_CODES.get(exc.status, "guest_error")
                    if isinstance(exc, InvocationError) else exc.code)
            resp = _error(exc.status, code, error, rid)
            metrics.INVOKE_ERRORS.labels(spec.id, spec.project_id, spec.version, code).inc()
        else:
            if resp.status >= 500:
                metrics.GUEST_5XX.labels(spec.id, spec.project_id, spec.version).inc()
        cpu[0] = call.cpu
        elapsed = time.monotonic() - call.t0 if call.t0 else 0.0
        loaded.invocations.observe(elapsed)
        inv = Invocation(rid, spec.id, spec.version, self.node_id, req.method, req.path,
                         resp.status, start, elapsed, ctx.trace_id, ctx.span_id,
                         ctx.parent_span_id, ctx.trace_flags, error, spec.project_id)
        self.log_sink.write_invocation(inv)
        if self._tracer is not None:
            self._tracer.record(inv)
        resp.headers.append(("x-request-id", rid))  # `_finish`, inlined
        return resp

    def _run(self, call: _Call, boxed: bool, on_loop: bool) -> bytes:
        """The guest call, on this thread or the penalty box's; what it teaches the
        function's placement and strikes is recorded even when it fails."""
        loaded, penalty = call.loaded, self.penalty
        created = loaded.pool.created
        try:
            if boxed and penalty is not None:
                metrics.PENALIZED.labels(loaded.spec.id, loaded.spec.project_id).inc()
                return penalty.run(call.run)
            return call.run()
        finally:
            timed_out = call.timed_out
            # The loop's budget bounds how long a call holds it at once: for a green
            # task, its longest stretch between waits; its CPU in all is the quota's.
            loaded.placement.record(cpu_s=call.stretch, timed_out=timed_out, on_loop=on_loop)
            if penalty is not None:
                penalty.record(loaded.spec.id, timed_out=timed_out, cpu_s=call.cpu)
            if loaded.pool.created != created:
                metrics.INSTANCES_CREATED.labels(loaded.spec.id, loaded.spec.project_id).inc(
                    loaded.pool.created - created)

    def _finish(self, resp: HttpResponse, rid: str) -> HttpResponse:
        resp.headers.append(("x-request-id", rid))
        return resp

    def _refuse(self, exc: EdgeError, rid: str, fid: str, project: str) -> HttpResponse:
        """A request for function `fid` answered without running it; counted as an error."""
        metrics.INVOKE_ERRORS.labels(fid, project, "", exc.code).inc()
        resp = _error(exc.status, exc.code, str(exc), rid)
        if isinstance(exc, QuotaExceeded):
            resp.headers.append(("retry-after", str(exc.retry_after)))
        elif isinstance(exc, Overloaded):
            resp.headers.append(("retry-after", "1"))
        return self._finish(resp, rid)

    def close(self) -> None:
        if self.penalty is not None:
            self.penalty.close()
        self.pools.close()
        for loaded in self._loaded.values():
            loaded.host.close()
        self._loaded.clear()
        if self._tracer is not None:
            self._tracer.close()
        metrics.flush()
        if self._on_close is not None:
            self._on_close()


class _Call:
    """One guest call: checkout, invoke, the host's deadline guard, and its CPU time.

    CPU time is the calling thread's (`time.thread_time`), not wall time: the
    guest runs on this thread without the GIL, so it is what the guest and its
    host calls computed, without the time spent waiting for a core, for the GIL
    or in `http_fetch`, and less the collections of the worker's heap it happened
    to trigger (`green.call_started`, `call_ended`). Charged to the project's daily
    quota, it does not grow because a neighbour keeps the node busy. Measured inside
    the call (which may run on another thread, `PenaltyBox`), so a queue wait is not
    charged.
    """

    __slots__ = ("cpu", "guest", "host", "loaded", "stretch", "t0", "timed_out")

    def __init__(self, loaded: LoadedFunction, guest: GuestRequest, host: InvocationHost) -> None:
        self.loaded = loaded
        self.guest = guest
        self.host = host
        self.cpu = 0.0
        # The longest the call held its thread at once: in a green task, its longest
        # stretch between two waits; else all of `cpu`.
        self.stretch = 0.0
        self.t0 = 0.0
        self.timed_out = False

    def run(self) -> bytes:
        spec = self.loaded.spec
        self.t0 = time.monotonic()
        host = self.host
        host.deadline = self.t0 + spec.max_execution_ms / 1000
        c0 = green.call_started()
        # `pool.checkout()` without the context manager's three calls: this is the hot path.
        pool = self.loaded.pool
        try:
            inst = pool.acquire()
            try:
                raw = inst.invoke(self.guest, host)
                if time.monotonic() > host.deadline + _GUARD_S:
                    # The engine should have interrupted the guest; the host's own clock
                    # is the last word, and the instance is spent.
                    raise GuestTimeout(
                        f"invocation exceeded max_execution_ms={spec.max_execution_ms} "
                        "(host wall-clock guard)"
                    )
            except BaseException as exc:
                pool.release(inst, spent=spent_by(exc))
                raise
            pool.release(inst, spent=False)
            return raw
        except GuestTimeout:
            self.timed_out = True
            raise
        finally:
            # Less what the thread did for others while a green task's guest waited,
            # and the collector's work (`green.call_ended`).
            self.cpu, self.stretch = green.call_ended(c0)


_random_bits = random.getrandbits


class _RequestContext:
    """Request id and W3C trace context from the headers, in one pass and one urandom."""

    __slots__ = ("parent_span_id", "request_id", "span_id", "trace_flags", "trace_id")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        # Ids need to be unique, not secret: the process PRNG is 10x cheaper than urandom.
        rand = f"{_random_bits(320):080x}"
        self.request_id = rand[:32]
        self.trace_id = rand[32:64]
        self.span_id = rand[64:80]
        self.parent_span_id = ""
        self.trace_flags = "01"
        for k, v in headers:
            if k == b"x-request-id":
                text = v.decode("latin-1")
                if _REQUEST_ID.fullmatch(text):
                    self.request_id = text
            elif k == b"traceparent":
                m = _TRACEPARENT.fullmatch(v.decode("latin-1").strip().lower())
                if m and m.group(1) != "0" * 32 and m.group(2) != "0" * 16:
                    self.trace_id, self.parent_span_id, self.trace_flags = m.groups()

    @property
    def traceparent(self) -> str:
        """The `traceparent` that `http_fetch` sends: this invocation's span."""
        return f"00-{self.trace_id}-{self.span_id}-{self.trace_flags}"
