"""Prometheus metrics of the edge (docs/edge.md, Observability), correct across worker processes.

Worker processes write to prometheus_client's multiprocess files when
`PROMETHEUS_MULTIPROC_DIR` is set (the server sets it before spawning them);
the metrics endpoint in the main process merges them and adds the node gauges.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
INVOKE_ERRORS = Counter(
    "wasm_invoke_errors", "Failed invocations by error code", ["function_id", "project_id", "code"]
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
COMPILED_REJECTED = Counter(
    "edge_compiled_code_rejected",
    "Compiled code files refused (seal mismatch or refused by the engine) and compiled again",
)
LOG_LINES_SAMPLED_OUT = Counter(
    "edge_log_lines_sampled_out",
    "Invocation log lines of successful requests left out by --log-sample-success",
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


def build_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
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
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="edgefn-metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
