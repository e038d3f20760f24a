"""The control plane's traces: the OpenTelemetry SDK, exporting OTLP/HTTP to
`otlp_endpoint`, with the FastAPI and gRPC server instrumentations.

Without an endpoint (or without the SDK installed: it is the `otel` extra) nothing
is set up: every span here is the API's no-op, nothing is exported, and
instructions carry no trace context. One provider per process: the last
control plane set up in a process is the one whose spans are exported.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from edgefn import __version__
from edgefn.contract import TraceContext

log = logging.getLogger("edgefn.controlplane.telemetry")

SERVICE_NAME = "edgefn-control-plane"
SCOPE = "edgefn.controlplane"

try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the API comes with the `otel` extra; without it, no traces
    trace = None  # type: ignore[assignment]

_F = TypeVar("_F", bound=Callable[..., Any])
# The provider of the control plane set up last in this process; None: no export.
_provider: Any = None


class Telemetry:
    """The tracer provider of one control plane and its exporter; `shutdown` flushes."""

    def __init__(self, endpoint: str, *, instance_id: str = "") -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {"service.name": SERVICE_NAME, "service.version": __version__}
        if instance_id:
            attributes["service.instance.id"] = instance_id
        self.provider = TracerProvider(resource=Resource.create(attributes))
        self.provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"),
            schedule_delay_millis=1000,
        ))
        self._grpc: Any = None

    def instrument(self, app: Any) -> None:
        """Server spans for every HTTP request of `app` and every gRPC call; the spans
        of this module become theirs while they run."""
        global _provider
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer

        _provider = self.provider
        FastAPIInstrumentor.instrument_app(app, tracer_provider=self.provider)
        # It wraps `grpc.aio.server` process-wide: undone at shutdown.
        grpc_server = GrpcAioInstrumentorServer()
        if not grpc_server.is_instrumented_by_opentelemetry:
            grpc_server.instrument(tracer_provider=self.provider)
            self._grpc = grpc_server

    def shutdown(self) -> None:
        global _provider
        if _provider is self.provider:
            _provider = None
        if self._grpc is not None:
            self._grpc.uninstrument()
            self._grpc = None
        self.provider.shutdown()


def setup(endpoint: str, app: Any, *, instance_id: str = "") -> Telemetry | None:
    """Traces for `app` exported to `endpoint`; None (and no cost) without one. The
    instance id tells replicas apart (default: host name and process id)."""
    if not endpoint:
        return None
    if trace is None:
        log.warning("otlp_endpoint is set but the OpenTelemetry SDK is not installed "
                    "(pip install 'edgefn[otel]'): no traces are exported")
        return None
    try:
        telemetry = Telemetry(
            endpoint, instance_id=instance_id or f"{socket.gethostname()}:{os.getpid()}")
    except ImportError as exc:
        log.warning("no traces are exported: %s (pip install 'edgefn[otel]')", exc)
        return None
    telemetry.instrument(app)
    return telemetry


@contextlib.contextmanager
def span(
    name: str, attributes: dict[str, str | int] | None = None,
    *, parent: TraceContext | None = None,
) -> Iterator[None]:
    """A span around the block, current while it runs: a child of `parent` when given
    (the trace an instruction belongs to), else of the current span."""
    if _provider is None:
        yield
        return
    context = None
    if parent is not None:
        carrier = {"traceparent": parent.traceparent, "tracestate": parent.tracestate}
        context = TraceContextTextMapPropagator().extract(carrier)
    tracer = _provider.get_tracer(SCOPE, __version__)
    with tracer.start_as_current_span(name, context=context, attributes=attributes):
        yield


def traced(name: str) -> Callable[[_F], _F]:
    """`span(name)` around every call of the decorated function."""
    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            with span(name):
                return fn(*args, **kwargs)
        return call  # type: ignore[return-value]
    return wrap


def current_context() -> TraceContext | None:
    """The W3C context of the current span, to travel with an instruction; None when
    nothing is traced."""
    if _provider is None:
        return None
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    if "traceparent" not in carrier:
        return None
    return TraceContext(traceparent=carrier["traceparent"],
                        tracestate=carrier.get("tracestate", ""))
