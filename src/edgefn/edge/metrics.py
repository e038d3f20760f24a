"""Prometheus metrics of the edge (docs/edge.md, Observability), correct across worker processes.

Worker processes write to prometheus_client's multiprocess files when
`PROMETHEUS_MULTIPROC_DIR` is set (the server sets it before spawning them);
the metrics endpoint in the main process merges them and adds the node gauges.
There, each request's count and latency are added up in memory
(`InvocationMetrics`) and written to the files every `FLUSH_S`, and a scrape
waits that long first, so it still sees every request answered before it began.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psutil
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)

# Every per-function series also carries the function's project (its tenant), so
# a tenant's series can be selected, and served, apart from the others'. Invocations
# carry the version too: a split function serves two (docs/edge.md, Traffic splitting).
INVOKE_COUNT = Counter(
    "wasm_invoke_count", "Invocations of a function", ["function_id", "project_id", "version"]
)
INVOKE_LATENCY = Histogram(
    "wasm_invoke_latency_seconds", "Invocation latency", ["function_id", "project_id", "version"],
    buckets=LATENCY_BUCKETS,
)
# A request refused before a version was chosen has the version "".
INVOKE_ERRORS = Counter(
    "wasm_invoke_errors", "Failed invocations by error code",
    ["function_id", "project_id", "version", "code"],
)
# A guest's own answer of 500 and above: an invocation that did not fail, but a
# response the rollout gates count as an error beside `wasm_invoke_errors`.
GUEST_5XX = Counter(
    "edge_guest_5xx_responses", "Responses of status 500 and above a guest answered itself",
    ["function_id", "project_id", "version"],
)
CACHE_HITS = Counter("wasm_cache_hits", "Artifact loads served by the disk cache")
CACHE_MISSES = Counter("wasm_cache_misses", "Artifact loads that missed the disk cache")
INSTANCES_CREATED = Counter(
    "wasm_instances_created", "Instances created (cold starts)", ["function_id", "project_id"]
)
GUEST_METRIC = Counter(
    "wasm_guest_metric", "Counters incremented by functions",
    ["function_id", "project_id", "name", "tags"],
)
GUEST_METRIC_DROPPED = Counter(
    "wasm_guest_metric_dropped", "Guest metric increments refused", ["function_id", "project_id"]
)
QUOTA_REJECTIONS = Counter(
    "edge_quota_rejections",
    "Requests refused with 429 because the project's quota was spent (kind: concurrency, "
    "rate, cpu)",
    ["project_id", "kind"],
)
QUOTA_SYNC_FAILURES = Counter(
    "edge_quota_sync_failures",
    "Quota syncs with Redis that failed (the node then counts its projects alone)",
)
PENALIZED = Counter(
    "edge_penalized_invocations",
    "Invocations of functions that time out or burn CPU often, run on low-priority threads",
    ["function_id", "project_id"],
)
PRECOMPILED_LOADED = Counter(
    "edge_precompiled_loaded",
    "Deploys whose code was loaded from the control plane's precompiled artifact",
)
PRECOMPILED_FALLBACK = Counter(
    "edge_precompiled_fallback",
    "Deploys compiled from the .wasm on the node instead, by why: none for this node's "
    "engine tag (missing), download failed (download), sha256 mismatch (digest), "
    "refused by the engine (refused)",
    ["reason"],
)
COMPILED_REJECTED = Counter(
    "edge_compiled_code_rejected",
    "Compiled code files refused (seal mismatch or refused by the engine) and compiled again",
)
LOG_LINES_SAMPLED_OUT = Counter(
    "edge_log_lines_sampled_out",
    "Invocation log lines of successful requests left out by --log-sample-success",
)
LOG_LINES_FORWARD_DROPPED = Counter(
    "edge_log_lines_forward_dropped",
    "Function log lines not forwarded to the control plane (its queue full or no agent)",
)
TRACE_SPANS_DROPPED = Counter(
    "edge_trace_spans_dropped",
    "Invocation spans not delivered to the OTLP collector (queue_full, export_failed)",
    ["reason"],
)
ROUTES_DROPPED = Counter(
    "edge_routes_dropped",
    "Routes left out of a route table because they would mix tenants' traffic, by reason",
    ["reason"],
)


# How often a worker writes its requests' counts and latencies to the shared files.
FLUSH_S = 0.025
# How long a scrape waits for the workers' last writes: a flush, with room to be late.
SCRAPE_WAIT_S = 4 * FLUSH_S


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class InvocationMetrics:
    """`wasm_invoke_count` and `wasm_invoke_latency_seconds` of one function version in
    one worker.

    A value in the multiprocess files costs a lock, a pid check and an mmap write,
    and a request touches three (count, bucket, sum): here a request adds to
    counters in memory under one lock, and a flusher thread writes the sums every
    `FLUSH_S`. Without multiprocess files the values are in memory anyway, and
    are written at once.
    """

    __slots__ = ("_buckets", "_count", "_latency", "_lock", "_n", "_sum", "observe")

    def __init__(self, function_id: str, project_id: str, version: str) -> None:
        self._count = INVOKE_COUNT.labels(function_id, project_id, version)
        self._latency = INVOKE_LATENCY.labels(function_id, project_id, version)
        self._lock = threading.Lock()
        self._n = 0
        self._sum = 0.0
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: +Inf
        if multiprocess_mode():
            self.observe = self._add
        else:
            self.observe = self._write

    def _write(self, seconds: float) -> None:
        self._count.inc()
        self._latency.observe(seconds)

    def _add(self, seconds: float) -> None:
        # bisect_left: the first bound >= seconds, as prometheus_client chooses it.
        i = bisect_left(LATENCY_BUCKETS, seconds)
        with self._lock:
            self._n += 1
            self._sum += seconds
            self._buckets[i] += 1

    def flush(self) -> None:
        with self._lock:
            n, total, buckets = self._n, self._sum, self._buckets
            if not n:
                return
            self._n, self._sum = 0, 0.0
            self._buckets = [0] * len(buckets)
        self._count.inc(n)
        latency = self._latency
        latency._sum.inc(total)
        for value, added in zip(latency._buckets, buckets, strict=True):
            if added:
                value.inc(added)


class _Flusher:
    """The worker's `InvocationMetrics`, one per function and project for the life of
    the process (as prometheus_client keeps its labelled children), per version, so that a
    retired version's last counts are still written; and what writes them every
    `FLUSH_S`: the worker's event loop (`flush_on`), else a thread.

    On the loop, not a thread: a thread that wakes 40 times a second takes the GIL
    from the loop each time, and at saturation each hand-off costs the requests more
    than the flush (a node of two workers, wrk -c50, A B alternating three times:
    33.3 to 35.2k req/s flushing every 25 ms from a thread, 33.3 to 40.3k every 1 s;
    from the loop every 25 ms, with the state watcher's change, six times each: a
    median of 33.8k against 32.3k).
    """

    def __init__(self) -> None:
        self._metrics: dict[tuple[str, str, str], InvocationMetrics] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def flush_on(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush from `loop` every `FLUSH_S` from now on, and at exit; no thread."""
        with self._lock:
            if self._loop is not None or self._thread is not None:
                return
            self._loop = loop
        atexit.register(self.flush)
        loop.call_later(FLUSH_S, self._tick)

    def _tick(self) -> None:
        try:
            self.flush()
        finally:
            assert self._loop is not None
            if not self._loop.is_closed():
                self._loop.call_later(FLUSH_S, self._tick)

    def get(self, function_id: str, project_id: str, version: str) -> InvocationMetrics:
        key = (function_id, project_id, version)
        with self._lock:
            m = self._metrics.get(key)
            if m is None:
                m = self._metrics[key] = InvocationMetrics(*key)
            if self._thread is None and self._loop is None and multiprocess_mode():
                self._thread = threading.Thread(target=self._run, name="edgefn-metrics-flush",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.flush)
            return m

    def flush(self) -> None:
        with self._lock:
            live = list(self._metrics.values())
        for m in live:
            m.flush()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            self.flush()


_flusher = _Flusher()
# The count and latency of a function's invocations in this process.
invocation_metrics = _flusher.get
flush = _flusher.flush
flush_on = _flusher.flush_on


class NodeCollector(Collector):
    """edge_node_up, node_memory_bytes (RSS of this process and its workers), node_cpu_percent."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._cpu_cache: dict[int, psutil.Process] = {}

    def _tree(self) -> list[psutil.Process]:
        procs = [self._proc]
        with contextlib.suppress(psutil.Error):
            procs += self._proc.children(recursive=True)
        out = []
        for p in procs:
            cached = self._cpu_cache.setdefault(p.pid, p)
            out.append(cached)
        live = {p.pid for p in out}
        for pid in list(self._cpu_cache):
            if pid not in live:
                del self._cpu_cache[pid]
        return out

    def collect(self) -> Iterable[GaugeMetricFamily]:
        rss = 0.0
        cpu = 0.0
        for p in self._tree():
            try:
                rss += p.memory_info().rss
                cpu += p.cpu_percent(interval=None)
            except psutil.Error:
                continue
        yield GaugeMetricFamily("edge_node_up", "1 while the edge node serves", value=1)
        yield GaugeMetricFamily("node_memory_bytes", "Resident memory of the node", value=rss)
        yield GaugeMetricFamily(
            "node_cpu_percent", "CPU use of the node's processes since the last scrape", value=cpu
        )


# Whether this process's metrics went to the multiprocess files from the start.
_FILES_AT_IMPORT = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class MainProcessCollector(Collector):
    """Counters only the node's main process moves (applying deploys). It imported
    prometheus_client before choosing the multiprocess directory, so they live in its
    memory, not in the workers' files the multiprocess collector reads."""

    def __init__(self, *counters: Counter) -> None:
        self._counters = counters

    def collect(self) -> Iterable[Any]:
        for counter in self._counters:
            yield from counter.collect()


def build_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)
        if not _FILES_AT_IMPORT:  # else the files already hold them
            registry.register(MainProcessCollector(PRECOMPILED_LOADED, PRECOMPILED_FALLBACK))
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    registry.register(NodeCollector())
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


class MetricsServer:
    """`/metrics` and `/healthz` on the metrics port, in a thread of the main process."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        started = time.time()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    if multiprocess_mode():
                        time.sleep(SCRAPE_WAIT_S)  # the workers' last flush (FLUSH_S)
                    body, ctype = render(registry), CONTENT_TYPE_LATEST
                elif self.path == "/healthz":
                    body = b'{"status":"ok","uptime_s":%d}' % int(time.time() - started)
                    ctype = "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        # Polled for `shutdown` every 50 ms: a stopping node does not wait half a second.
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.05,), name="edgefn-metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
