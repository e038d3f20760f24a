"""A real OTLP/HTTP trace receiver on loopback: decodes protobuf bodies (with the
opentelemetry-proto messages) and JSON ones into one flat list of spans."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.loopback import QuietHandler, loopback


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    instance: str
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    error: bool


@dataclass
class Receiver:
    url: str = ""
    spans: list[ReceivedSpan] = field(default_factory=list)
    content_types: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, what: str, check: Any, timeout: float = 30.0) -> list[ReceivedSpan]:
        """The spans received, once `check(spans)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = list(self.spans)
            if check(spans):
                return spans
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {spans}"
            time.sleep(0.1)


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def _from_proto(body: bytes) -> list[ReceivedSpan]:
    req = ExportTraceServiceRequest.FromString(body)
    out = []
    for rs in req.resource_spans:
        res = {a.key: _value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(ReceivedSpan(
                    res.get("service.name", ""), res.get("service.instance.id", ""),
                    s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, s.kind,
                    {a.key: _value(a.value) for a in s.attributes}, s.status.code == 2))
    return out


def _json_value(v: dict[str, Any]) -> Any:
    ((kind, value),) = v.items()
    return int(value) if kind == "intValue" else value


def _from_json(body: bytes) -> list[ReceivedSpan]:
    # OTLP/JSON writes ids as hex (not base64, as protobuf's JSON mapping would).
    out = []
    for rs in json.loads(body)["resourceSpans"]:
        res = {a["key"]: _json_value(a["value"]) for a in rs["resource"]["attributes"]}
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                out.append(ReceivedSpan(
                    res.get("service.name", ""), res.get("service.instance.id", ""),
                    s["traceId"], s["spanId"], s.get("parentSpanId", ""), s["name"],
                    s.get("kind", 0),
                    {a["key"]: _json_value(a["value"]) for a in s.get("attributes", [])},
                    s.get("status", {}).get("code") == 2))
    return out


@pytest.fixture
def otlp() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            ctype = self.headers.get("content-type", "")
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            spans = _from_json(body) if ctype.startswith("application/json") \
                else _from_proto(body)
            with state.lock:
                state.content_types.add(ctype)
                state.spans.extend(spans)
            if ctype.startswith("application/json"):
                answer, rtype = b"{}", "application/json"
            else:
                answer, rtype = ExportTraceServiceResponse().SerializeToString(), ctype
            self.send_response(200)
            self.send_header("content-type", rtype)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    with loopback(Handler) as state.url:
        yield state
