"""Spans sent to an OpenTelemetry collector as OTLP/HTTP JSON: one per invocation
(from the workers), and the node's spans of applying a traced instruction (`Spans`,
in the main process).

Recording a span appends its record to a bounded deque; a background
thread turns the queued records into OTLP JSON and posts them in batches. Nothing here ever
blocks or fails a request: a full queue or a collector that is down drops spans
and counts them in `edge_trace_spans_dropped_total`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

import edgefn
from edgefn.edge import metrics
from edgefn.edge.logs import Invocation

log = logging.getLogger("edgefn.edge.tracing")

SERVICE_NAME = "edgefn-edge"
_str = json.encoder.encode_basestring  # the C encoder: quotes and escapes a str
# The last hex digit of the W3C trace flags holds the sampled bit.
_SAMPLED = frozenset("13579bdf")


class Tracer(Protocol):
    """What the runtime calls once per invocation, and at close."""

    def record(self, inv: Invocation) -> None:
        """Must not block."""

    def close(self) -> None:
        """Send what is queued, then stop."""


@dataclass
class Span:
    """A span other than an invocation's: internal (kind 1), open until `end` is set."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start: float  # the epoch, in seconds
    end: float = 0.0
    attributes: dict[str, str | int] = field(default_factory=dict)
    # Set: the span failed, and this says why.
    error: str | None = None

    def to_otlp(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "traceId": self.trace_id, "spanId": self.span_id, "name": self.name, "kind": 1,
            "startTimeUnixNano": str(int(self.start * 1e9)),
            "endTimeUnixNano": str(int(self.end * 1e9)),
            "attributes": [
                {"key": k, "value": {"intValue": str(v)} if isinstance(v, int)
                 else {"stringValue": v}}
                for k, v in self.attributes.items()
            ],
        }
        if self.parent_span_id:
            out["parentSpanId"] = self.parent_span_id
        if self.error is not None:
            out["status"] = {"code": 2, "message": self.error}
        return out


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


def parse_traceparent(value: str) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a W3C `traceparent`; None when it is not
    one (or is the invalid all-zero id, or version ff)."""
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} \
            or set(span_id) == {"0"}:
        return None
    return trace_id, span_id, flags


class Spans:
    """The spans of one piece of work done for a traced caller: nested children of its
    `traceparent`, sent through `exporter`. Without an exporter, or with a caller that
    is not traced or not sampled, every span is a no-op."""

    def __init__(self, exporter: OtlpSpanExporter | None, traceparent: str | None) -> None:
        parsed = parse_traceparent(traceparent) if exporter and traceparent else None
        self._exporter = exporter if parsed and parsed[2][-1] in _SAMPLED else None
        self._trace_id = parsed[0] if parsed else ""
        self._parents = [parsed[1]] if parsed else []

    @contextlib.contextmanager
    def span(
        self, name: str, attributes: dict[str, str | int] | None = None
    ) -> Iterator[Span | None]:
        """A child of the innermost open span; an exception leaving it marks it failed.
        The `Span` (None when not traced) takes attributes or an `error` meanwhile."""
        exporter = self._exporter
        if exporter is None:
            yield None
            return
        span = Span(self._trace_id, os.urandom(8).hex(), self._parents[-1], name, time.time(),
                    attributes=dict(attributes or {}))
        self._parents.append(span.span_id)
        try:
            yield span
        except BaseException as exc:
            span.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._parents.pop()
            span.end = time.time()
            exporter.export(span)


class OtlpSpanExporter:
    """Batches invocation spans to `{endpoint}/v1/traces`; one per worker process."""

    def __init__(
        self,
        endpoint: str,
        *,
        node_id: str,
        max_queue_size: int = 4096,
        batch_size: int = 512,
        interval_s: float = 1.0,
        timeout_s: float = 5.0,
        log_every_s: float = 60.0,
    ) -> None:
        self.url = endpoint.rstrip("/") + "/v1/traces"
        self.node_id = node_id
        self.max_queue_size = max_queue_size
        self.batch_size = batch_size
        self.interval_s = interval_s
        self._queue: deque[Invocation | Span] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Held while a batch is encoded and sent: by the thread, or by `flush`.
        self._export_lock = threading.Lock()
        self._client = httpx.Client(timeout=timeout_s)
        resource = {"attributes": [
            _attr("service.name", SERVICE_NAME),
            _attr("service.instance.id", node_id),
            _attr("service.version", edgefn.__version__),
        ]}
        scope = {"name": "edgefn.edge", "version": edgefn.__version__}
        # Everything of a request body before its first span.
        self._head = (
            '{"resourceSpans":[{"resource":' + json.dumps(resource, separators=(",", ":"))
            + ',"scopeSpans":[{"scope":' + json.dumps(scope, separators=(",", ":"))
            + ',"spans":['
        )
        self._dropped_full = metrics.TRACE_SPANS_DROPPED.labels("queue_full")
        self._dropped_export = metrics.TRACE_SPANS_DROPPED.labels("export_failed")
        self._log_every_s = log_every_s
        self._last_log = float("-inf")
        self._unlogged = 0
        self._thread = threading.Thread(target=self._run, name="edgefn-otlp", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- hot path -------------------------------------------------------------
    def record(self, inv: Invocation) -> None:
        if inv.trace_flags[-1] not in _SAMPLED:
            return  # the caller decided not to sample this trace
        queue = self._queue
        size = len(queue)
        if size >= self.max_queue_size:
            self._dropped_full.inc()
            return
        queue.append(inv)
        if size + 1 == self.batch_size:
            self._wake.set()

    def export(self, span: Span) -> None:
        """Queue a finished span of the node's own (not an invocation's)."""
        if len(self._queue) >= self.max_queue_size:
            self._dropped_full.inc()
            return
        self._queue.append(span)

    # -- export ---------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Send every span queued so far, in batches, from the calling thread."""
        with self._export_lock:
            queue = self._queue
            while queue:
                n = min(len(queue), self.batch_size)
                batch = [queue.popleft() for _ in range(n)]
                self._send(batch)

    def _send(self, batch: list[Invocation | Span]) -> None:
        try:
            resp = self._client.post(
                self.url, content=self.encode(batch),
                headers={"content-type": "application/json"},
            )
        except httpx.HTTPError as exc:
            self._failed(len(batch), f"{type(exc).__name__}: {exc}")
            return
        if resp.status_code // 100 != 2:
            self._failed(len(batch), f"HTTP {resp.status_code}: {resp.text[:200]}")
            return
        rejected = _rejected_spans(resp)
        if rejected:
            self._failed(rejected, f"collector rejected {rejected} spans: {resp.text[:200]}")

    def _failed(self, count: int, reason: str) -> None:
        self._dropped_export.inc(count)
        self._unlogged += count
        now = time.monotonic()
        if now - self._last_log >= self._log_every_s:
            log.warning("span export to %s failed (%s); %d spans dropped since the last report",
                        self.url, reason, self._unlogged)
            self._last_log = now
            self._unlogged = 0

    def encode(self, batch: list[Invocation | Span]) -> bytes:
        """The OTLP/HTTP JSON body (ExportTraceServiceRequest) for `batch`.

        Formatted directly, like the invocation log line: `json.dumps` of the
        nested attribute dicts costs several times more, and this runs under the
        GIL that request threads share.
        """
        node = _str(self.node_id)
        spans = []
        for inv in batch:
            if isinstance(inv, Span):
                spans.append(json.dumps(inv.to_otlp(), separators=(",", ":")))
                continue
            fid, status, error = inv.function_id, inv.status, inv.error_message
            trace_id, span_id, parent_span_id = inv.trace_id, inv.span_id, inv.parent_span_id
            start, elapsed = inv.start, inv.elapsed
            start_ns = int(start * 1e9)
            parts = [
                '{"traceId":"', trace_id, '","spanId":"', span_id, '"',
                ',"parentSpanId":"' if parent_span_id else "", parent_span_id,
                '"' if parent_span_id else "",
                ',"name":', _str("invoke " + fid), ',"kind":2',
                f',"startTimeUnixNano":"{start_ns}"',
                f',"endTimeUnixNano":"{start_ns + int(elapsed * 1e9)}"',
                ',"attributes":[{"key":"edgefn.function_id","value":{"stringValue":', _str(fid),
                '}},{"key":"edgefn.function_version","value":{"stringValue":', _str(inv.version),
                '}},{"key":"edgefn.node_id","value":{"stringValue":', node,
                '}},{"key":"http.request.method","value":{"stringValue":', _str(inv.method),
                '}},{"key":"url.path","value":{"stringValue":', _str(inv.path),
                f'}}}},{{"key":"http.response.status_code","value":{{"intValue":"{status}"}}}}',
                ',{"key":"edgefn.request_id","value":{"stringValue":', _str(inv.request_id), "}}]",
            ]
            if error is not None:
                parts += [',"status":{"code":2,"message":', _str(error), "}"]
            elif status >= 500:
                # OpenTelemetry's HTTP conventions: a 5xx answer is an error of a server span.
                parts.append(',"status":{"code":2}')
            parts.append("}")
            spans.append("".join(parts))
        return "".join([self._head, ",".join(spans), "]}]}]}"]).encode()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=self.interval_s + 1)
        self.flush()
        self._client.close()
        atexit.unregister(self.close)


def _attr(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _rejected_spans(resp: httpx.Response) -> int:
    """`partialSuccess.rejectedSpans` of a 2xx answer; 0 when absent or unreadable."""
    if not resp.content:
        return 0
    try:
        partial = resp.json().get("partialSuccess") or {}
        return int(partial.get("rejectedSpans") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0
