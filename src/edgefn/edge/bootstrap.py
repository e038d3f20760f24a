"""Building a node's parts from settings: engine, caches, KV, logs, pools; and what
of the settings and the environment a worker process may see."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from edgefn.data_archive import ArchiveLimits
from edgefn.edge import metrics
from edgefn.edge.cache import ArtifactCache
from edgefn.edge.capabilities.egress_rules import EgressRules
from edgefn.edge.capabilities.http_fetch import HttpFetchCapability
from edgefn.edge.capabilities.kv import KvCapability
from edgefn.edge.capabilities.secrets import (
    BrokerSecrets,
    ControlPlaneSecrets,
    FileSecrets,
    SecretBroker,
    SecretsCapability,
    SecretSource,
)
from edgefn.edge.kv import KvStore, create_kv_store
from edgefn.edge.logs import JsonLog
from edgefn.edge.node.logship import LogTap, log_socket
from edgefn.edge.quotas import node_defaults, open_table
from edgefn.edge.settings import EdgeSettings
from edgefn.edge.spec import FunctionSpec
from edgefn.edge.tracing import OtlpSpanExporter
from edgefn.edge.worker.fairness import PenaltyBox
from edgefn.edge.worker.pool import PoolManager
from edgefn.edge.worker.runtime import Runtime
from edgefn.sandbox import Engine, WasmtimeOptions, create_engine
from edgefn.sandbox.compilecache import CompileCache

# Settings the workers never need: the agent in the main process talks to the CP.
_MAIN_PROCESS_ONLY = {"node_token"}


def worker_config(settings: EdgeSettings) -> str:
    """The settings handed to the workers (JSON, absolute paths), without the node's
    credentials: workers run tenants' code and never talk to the control plane."""
    worker = settings.model_copy(update={
        "data_dir": settings.data_dir.resolve(),
        "compile_key_file": compile_key_file(settings).resolve(),
        "compile_cache_dir": compile_cache_dir(settings).resolve(),
    })
    return worker.model_dump_json(exclude=_MAIN_PROCESS_ONLY)


def compile_key_file(settings: EdgeSettings) -> Path:
    return settings.compile_key_file or settings.data_dir / "compile.key"


def compile_cache_dir(settings: EdgeSettings) -> Path:
    return settings.compile_cache_dir or settings.data_dir / "compiled"


def build_engine(settings: EdgeSettings) -> Engine:
    """The engine, with the node's sealed compile cache (`{data_dir}/compiled` unless
    the host's nodes share one)."""
    cache = CompileCache.open(
        compile_cache_dir(settings),
        compile_key_file(settings),
        on_reject=lambda _reason: metrics.COMPILED_REJECTED.inc(),
    )
    options = WasmtimeOptions(  # wasmtime's only
        epoch_tick_ms=settings.epoch_tick_ms, opt_level=settings.wasmtime_opt_level,
        suspend_waiting=settings.suspend_waiting)
    return create_engine(settings.engine, compile_cache=cache,
                         options=options if settings.engine == "wasmtime" else None)


def build_cache(settings: EdgeSettings) -> ArtifactCache:
    return ArtifactCache(
        settings.cache_dir,
        max_files=settings.cache_max_files,
        max_bytes=settings.cache_max_bytes,
        max_data_bytes=settings.max_data_bytes,
        data_limits=ArchiveLimits(max_bytes=settings.max_data_unpacked_bytes,
                                  max_files=settings.max_data_files),
    )


def secrets_socket(settings: EdgeSettings) -> Path:
    return settings.data_dir / "secrets.sock"


def start_secret_broker(settings: EdgeSettings) -> SecretBroker | None:
    """In the main process of a node that follows a control plane: the only holder of
    the node token answers the workers' secret lookups."""
    if not (settings.cp_url and settings.node_token is not None):
        return None
    # Here, not at the top: the workers import this module and hold no credential.
    from edgefn.edge.node.credentials import node_certificate

    source = ControlPlaneSecrets(
        settings.cp_url, settings.node_id, settings.node_token.get_secret_value(),
        tls=node_certificate(settings),
    )
    broker = SecretBroker(secrets_socket(settings), source)
    broker.start()
    return broker


def secret_source(settings: EdgeSettings) -> SecretSource | None:
    """A worker's source: the main process's broker when the node follows a control
    plane, else the operator's secrets file."""
    if settings.cp_url:
        return BrokerSecrets(secrets_socket(settings))
    if settings.secrets_file is not None:
        return FileSecrets(settings.secrets_file)
    return None

def penalty_box(settings: EdgeSettings) -> PenaltyBox | None:
    """Penalized calls may hold all but two of a worker's request threads (running
    or queued): waiting costs no CPU, while a refused client that retries at once
    costs a request each time; two threads serve light functions at nearly full
    speed (docs/performance.md)."""
    if not settings.penalty_threads:
        return None
    queue = max(1, settings.threads - settings.penalty_threads - 2)
    return PenaltyBox(threads=settings.penalty_threads, queue=queue)


def log_tap(settings: EdgeSettings) -> LogTap | None:
    """Forwarding of the functions' log lines to the agent, on a node that follows a
    control plane."""
    if not (settings.cp_url or settings.grpc_url):
        return None
    return LogTap(log_socket(settings.data_dir))


def build_runtime(settings: EdgeSettings, *, log_sink: JsonLog | None = None) -> Runtime:
    """Everything a worker process needs; the KV store is opened on first use."""
    engine = build_engine(settings)
    sink = log_sink or JsonLog(
        settings.log_file, max_bytes=settings.log_max_bytes, backups=settings.log_backups,
        sample_success=settings.log_sample_success, tap=log_tap(settings),
    )
    pools = PoolManager(memory_budget_bytes=settings.memory_budget_bytes)
    pools.on_tick.append(sink.flush)
    kv_store: list[KvStore] = []
    kv_lock = threading.Lock()

    def kv_factory(spec: FunctionSpec) -> KvCapability | None:
        if not spec.kv.enabled:
            return None
        with kv_lock:
            if not kv_store:
                kv_store.append(create_kv_store(settings.resolved_kv_url))
        return KvCapability.configure(spec, kv_store[0])

    def close() -> None:
        for store in kv_store:
            store.close()
        sink.flush()

    source = secret_source(settings)

    def secrets_factory(spec: FunctionSpec) -> SecretsCapability | None:
        return SecretsCapability.configure(spec, source)


    quotas = open_table(settings.data_dir / "quotas.bin", node_id=settings.node_id,
                        redis_url=settings.resolved_quota_redis_url)
    pools.on_tick.append(quotas.sync)
    tracer = (
        OtlpSpanExporter(settings.otlp_endpoint, node_id=settings.node_id)
        if settings.otlp_endpoint else None
    )
    return Runtime(
        engine=engine,
        cache=build_cache(settings),
        pools=pools,
        log_sink=sink,
        node_id=settings.node_id,
        max_request_body_bytes=settings.max_request_body_bytes,
        max_inflight_per_function=settings.inflight_limit,
        kv_factory=kv_factory,
        fetch_factory=functools.partial(
            HttpFetchCapability.configure, egress=EgressRules.for_node(settings)
        ),
        caps=settings.caps,
        secrets_factory=secrets_factory,
        on_close=close,
        tracer=tracer,
        quotas=quotas,
        penalty=penalty_box(settings),
        quota_defaults=node_defaults(
            settings.quota_max_concurrency,
            settings.quota_invocations_per_minute,
            settings.quota_cpu_seconds_per_day,
        ),
    )
