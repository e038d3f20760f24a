"""Invocation spans exported as OTLP/HTTP JSON to a real collector on loopback."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from edgefn.contract import DeployInstruction, TraceContext
from edgefn.edge.bootstrap import build_runtime
from edgefn.edge.cache import ArtifactCache
from edgefn.edge.logs import Invocation, JsonLog
from edgefn.edge.node.controller import NodeController
from edgefn.edge.settings import EdgeSettings
from edgefn.edge.spec import NodeState
from edgefn.edge.tracing import OtlpSpanExporter, parse_traceparent
from edgefn.edge.worker.runtime import HttpRequest
from tests.edge.conftest import Collector, HarnessFactory, fn

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("edge_trace_spans_dropped_total", {"reason": reason}) or 0.0


def exporter(url: str, **options: Any) -> OtlpSpanExporter:
    """An exporter that sends only when flushed, unless the options say otherwise."""
    options.setdefault("interval_s", 3600.0)
    return OtlpSpanExporter(url, node_id="node-test", **options)


def invocation(request_id: str, span_id: str) -> Invocation:
    """A successful, sampled invocation of function `f` in trace TRACE_ID."""
    return Invocation(request_id, "f", "1", "node", "GET", "/", 200, time.time(), 0.001,
                      TRACE_ID, span_id, "", "01", None)


def attributes(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


def test_each_invocation_is_one_span_with_the_log_lines_ids(
    make_edge: HarnessFactory, collector: Collector
) -> None:
    tracer = exporter(collector.url)
    edge = make_edge(tracer=tracer)
    edge.deploy(fn("echo", "echo"), fn("trap", "trap"))
    parent = f"00-{TRACE_ID}-{PARENT_SPAN}-01".encode()
    assert edge.request("POST", "/echo/a?q=1", b"x", headers=[(b"traceparent", parent)]
                        ).status == 200
    assert edge.request("GET", "/trap/").status == 500
    assert edge.request("POST", "/echo/", b"y").status == 200
    tracer.flush()

    assert len(collector.posts) == 1
    path, ctype, body = collector.posts[0]
    assert (path, ctype) == ("/v1/traces", "application/json")
    (resource_spans,) = body["resourceSpans"]
    assert attributes(resource_spans["resource"]) == {
        "service.name": "edgefn-edge", "service.instance.id": "node-test",
        "service.version": "0.1.0",
    }
    (scope_spans,) = resource_spans["scopeSpans"]
    assert scope_spans["scope"]["name"] == "edgefn.edge"

    lines = {r["request_id"]: r for r in edge.logs() if r.get("type") == "invocation"}
    spans = collector.spans()
    assert len(spans) == 3 == len(lines)
    by_rid = {attributes(s)["edgefn.request_id"]: s for s in spans}
    assert by_rid.keys() == lines.keys()
    for rid, span in by_rid.items():
        line = lines[rid]
        assert span["traceId"] == line["trace_id"]
        assert span["spanId"] == line["span_id"]
        assert span.get("parentSpanId", "") == line.get("parent_span_id", "")
        assert span["kind"] == 2
        start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
        assert abs(start - line["start"] * 1e9) < 1e4 and end >= start
        assert abs((end - start) / 1e6 - line["duration_ms"]) < 0.01

    traced, trapped, fresh = spans
    assert traced["traceId"] == TRACE_ID and traced["parentSpanId"] == PARENT_SPAN
    assert traced["name"] == "invoke echo" and "status" not in traced
    assert attributes(traced) == {
        "edgefn.function_id": "echo", "edgefn.function_version": "1.0.0",
        "edgefn.node_id": "node-test", "http.request.method": "POST", "url.path": "/echo/a",
        "http.response.status_code": "200",
        "edgefn.request_id": attributes(traced)["edgefn.request_id"],
    }
    assert trapped["name"] == "invoke trap"
    assert trapped["status"]["code"] == 2
    assert trapped["status"]["message"] == lines[attributes(trapped)["edgefn.request_id"]][
        "error_message"]
    assert attributes(trapped)["http.response.status_code"] == "500"
    assert "parentSpanId" not in fresh and fresh["traceId"] != TRACE_ID


def test_an_unsampled_incoming_trace_is_not_exported(
    make_edge: HarnessFactory, collector: Collector
) -> None:
    tracer = exporter(collector.url)
    edge = make_edge(tracer=tracer)
    edge.deploy(fn("echo", "echo"))
    unsampled = f"00-{TRACE_ID}-{PARENT_SPAN}-00".encode()
    edge.request("POST", "/echo/", b"x", headers=[(b"traceparent", unsampled)])
    edge.request("POST", "/echo/", b"x")
    tracer.flush()
    assert [s["traceId"] != TRACE_ID for s in collector.spans()] == [True]


def test_build_runtime_exports_when_an_endpoint_is_set_and_close_flushes(
    tmp_path: Path, collector: Collector
) -> None:
    settings = EdgeSettings(data_dir=tmp_path / "edge", node_id="n1",
                            otlp_endpoint=collector.url + "/")
    runtime = build_runtime(settings, log_sink=JsonLog(tmp_path / "edge.log"))
    runtime.apply_state(NodeState(generation=1, functions=(fn("echo", "echo"),)))
    resp = runtime.handle(HttpRequest(method="GET", host="edge.test", path="/echo/", query="",
                                      headers=[], read_body=lambda n: b""))
    assert resp.status == 200
    runtime.close()
    (span,) = collector.spans()
    assert attributes(span)["edgefn.node_id"] == "n1"
    assert collector.posts[0][0] == "/v1/traces"

    plain = build_runtime(EdgeSettings(data_dir=tmp_path / "plain"),
                          log_sink=JsonLog(tmp_path / "plain.log"))
    assert plain._tracer is None
    assert "edgefn-otlp" not in {t.name for t in threading.enumerate()}
    plain.close()


def test_settings_refuse_an_endpoint_that_is_not_http() -> None:
    with pytest.raises(ValueError, match="otlp_endpoint"):
        EdgeSettings(otlp_endpoint="collector:4317")


def test_a_full_batch_is_sent_without_waiting_for_the_interval(collector: Collector) -> None:
    tracer = exporter(collector.url, batch_size=4)
    for i in range(4):
        tracer.record(invocation(f"r{i}", f"{i:016x}"))
    assert collector.arrived.wait(5), "the background thread did not send the batch"
    assert len(collector.spans()) == 4
    tracer.close()


def test_the_interval_sends_a_partial_batch(collector: Collector) -> None:
    tracer = exporter(collector.url, interval_s=0.05)
    tracer.record(invocation("r", "1" * 16))
    assert collector.arrived.wait(5)
    assert len(collector.spans()) == 1
    tracer.close()


@pytest.mark.parametrize("down", ["closed_port", "http_503"])
def test_a_collector_that_is_down_costs_spans_not_requests(
    make_edge: HarnessFactory, collector: Collector, closed_port: int, down: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if down == "closed_port":
        url = f"http://127.0.0.1:{closed_port}"
    else:
        url, collector.status = collector.url, 503
    tracer = exporter(url, batch_size=2)
    edge = make_edge(tracer=tracer)
    edge.deploy(fn("echo", "echo"))
    before = dropped("export_failed")
    with caplog.at_level(logging.WARNING, logger="edgefn.edge.tracing"):
        for _ in range(5):
            assert edge.request("POST", "/echo/", b"x").status == 200
        tracer.flush()
    assert dropped("export_failed") - before == 5
    # Rate-limited: one report for several failed batches.
    warnings = [r for r in caplog.records if "span export" in r.getMessage()]
    assert len(warnings) == 1


def test_a_full_queue_drops_and_counts_without_blocking(collector: Collector) -> None:
    tracer = exporter(collector.url, max_queue_size=10, batch_size=1000)
    before = dropped("queue_full")
    t0 = time.perf_counter()
    for i in range(1000):
        tracer.record(invocation(f"r{i}", f"{i:016x}"))
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.5, f"recording 1000 spans took {elapsed:.3f} s"
    assert dropped("queue_full") - before == 990
    tracer.flush()
    assert [s["spanId"] for s in collector.spans()] == [f"{i:016x}" for i in range(10)]
    tracer.close()


def traced_deploy(flags: str, sha256: str) -> DeployInstruction:
    return DeployInstruction(
        id=7, function_id="f", version="1", sha256=sha256,
        trace_context=TraceContext(traceparent=f"00-{TRACE_ID}-{PARENT_SPAN}-{flags}"))


def test_a_node_applies_a_traced_instruction_in_child_spans_and_marks_a_failure(
    tmp_path: Path, collector: Collector
) -> None:
    tracer = exporter(collector.url)
    controller = NodeController(tmp_path / "state.json", ArtifactCache(tmp_path / "cache"),
                                None, tracer=tracer, node_id="n1")
    # Not cached and no URL to fetch it from: the deploy fails after the cache look.
    ack = controller.apply(traced_deploy("01", "a" * 64))
    assert ack.state == "error"
    controller.apply(traced_deploy("00", "b" * 64))  # not sampled: no span
    controller.apply(DeployInstruction(id=8, function_id="f", version="1", sha256="c" * 64))
    tracer.flush()
    spans = {s["name"]: s for s in collector.spans()}
    assert set(spans) == {"apply deploy", "verify", "ack"}
    apply = spans["apply deploy"]
    assert (apply["traceId"], apply["parentSpanId"]) == (TRACE_ID, PARENT_SPAN)
    assert attributes(apply)["edgefn.instruction_id"] == "7"
    for name in ("verify", "ack"):
        assert spans[name]["parentSpanId"] == apply["spanId"]
        assert spans[name]["traceId"] == TRACE_ID
    assert apply["status"] == spans["ack"]["status"] == {"code": 2, "message": ack.message}
    assert "status" not in spans["verify"]
    assert attributes(spans["verify"])["edgefn.cache_hit"] == "false"


@pytest.mark.parametrize("value", [
    f"00-{TRACE_ID}-{PARENT_SPAN}-01",
    f"01-{TRACE_ID}-{PARENT_SPAN}-01-future",
])
def test_a_traceparent_is_read(value: str) -> None:
    assert parse_traceparent(value) == (TRACE_ID, PARENT_SPAN, "01")


@pytest.mark.parametrize("value", [
    "", "junk", f"ff-{TRACE_ID}-{PARENT_SPAN}-01", f"00-{'0' * 32}-{PARENT_SPAN}-01",
    f"00-{TRACE_ID}-{'0' * 16}-01", f"00-{TRACE_ID}-{PARENT_SPAN}-01-extra",
    f"00-{TRACE_ID.upper()}-{PARENT_SPAN}-01",
])
def test_a_malformed_traceparent_is_none(value: str) -> None:
    assert parse_traceparent(value) is None
