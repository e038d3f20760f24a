"""Building a worker's runtime from settings: engine, cache, KV, logs, pools."""

from __future__ import annotations

from edgefn.edge.cache import ArtifactCache
from edgefn.edge.logs import JsonLog
from edgefn.edge.pool import PoolManager
from edgefn.edge.runtime import Runtime
from edgefn.edge.settings import EdgeSettings
from edgefn.sandbox import create_engine


def build_cache(settings: EdgeSettings) -> ArtifactCache:
    return ArtifactCache(
        settings.cache_dir,
        max_files=settings.cache_max_files,
        max_bytes=settings.cache_max_bytes,
    )


def build_runtime(settings: EdgeSettings, *, log_sink: JsonLog | None = None) -> Runtime:
    engine = create_engine(settings.engine, epoch_tick_ms=settings.epoch_tick_ms)
    sink = log_sink or JsonLog(settings.log_file)
    pools = PoolManager(memory_budget_bytes=settings.memory_budget_bytes)
    pools.on_tick.append(sink.flush)
    return Runtime(
        engine=engine,
        cache=build_cache(settings),
        pools=pools,
        log_sink=sink,
        node_id=settings.node_id,
        max_request_body_bytes=settings.max_request_body_bytes,
    )
