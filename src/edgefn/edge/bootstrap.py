"""Building a worker's runtime from settings: engine, cache, KV, logs, pools."""

from __future__ import annotations

import threading

from edgefn.edge.cache import ArtifactCache
from edgefn.edge.capabilities.http_fetch import HttpFetchCapability
from edgefn.edge.capabilities.kv import KvCapability
from edgefn.edge.fairness import PenaltyBox
from edgefn.edge.kv import KvStore, create_kv_store
from edgefn.edge.logs import JsonLog
from edgefn.edge.pool import PoolManager
from edgefn.edge.quotas import node_defaults, open_table
from edgefn.edge.runtime import Runtime
from edgefn.edge.settings import EdgeSettings
from edgefn.edge.spec import FunctionSpec
from edgefn.edge.tracing import OtlpSpanExporter
from edgefn.sandbox import create_engine


def build_cache(settings: EdgeSettings) -> ArtifactCache:
    return ArtifactCache(
        settings.cache_dir,
        max_files=settings.cache_max_files,
        max_bytes=settings.cache_max_bytes,
    )


def penalty_box(settings: EdgeSettings) -> PenaltyBox | None:
    """Penalized calls may hold all but two of a worker's request threads (running
    or queued): waiting costs no CPU, while a refused client that retries at once
    costs a request each time; two threads serve light functions at nearly full
    speed (docs/performance.md)."""
    if not settings.penalty_threads:
        return None
    queue = max(1, settings.threads - settings.penalty_threads - 2)
    return PenaltyBox(threads=settings.penalty_threads, queue=queue)


def build_runtime(settings: EdgeSettings, *, log_sink: JsonLog | None = None) -> Runtime:
    """Everything a worker process needs; the KV store is opened on first use."""
    engine = create_engine(
        settings.engine,
        epoch_tick_ms=settings.epoch_tick_ms,
        compile_cache_dir=settings.data_dir / "compiled",
    )
    sink = log_sink or JsonLog(settings.log_file)
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
        fetch_factory=HttpFetchCapability.configure,
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
