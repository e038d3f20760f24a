"""The control plane's traces, exported to a real OTLP/HTTP receiver on loopback: a
deploy is one trace, from the API call (continuing the caller's `traceparent`) through
the service and every outbox row to each node's ack, and the instructions carry it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from edgefn.contract import Instruction
from edgefn.controlplane import telemetry
from tests.controlplane.conftest import ADMIN, CP
from tests.otlp import ReceivedSpan, Receiver, otlp  # noqa: F401 (a fixture)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SERVER = 2  # SpanKind SERVER, as OTLP numbers it


def setup_function_on(cp: CP, wasm: SimpleNamespace, nodes: int) -> tuple[str, list[Any]]:
    project = cp.project("alpha")
    fn = cp.function(ADMIN, "hello", owner_project_id=project)
    assert cp.upload(ADMIN, fn["id"], "1.0.0", wasm.edge_v1).status_code == 201
    targets = [cp.node("pop-a", f"n{i}") for i in range(nodes)]
    for node in targets:  # the route tables queued at registration, out of the way
        cp.heartbeat(node, acks=[{"id": i["id"], "state": "cached"} for i in cp.heartbeat(node)])
    return fn["id"], targets


def deploys(instructions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [i for i in instructions if i["type"] == "deploy"]


def one(spans: list[ReceivedSpan], name: str, **attributes: Any) -> ReceivedSpan:
    (span,) = [s for s in spans if s.name == name
               and all(s.attributes.get(k) == v for k, v in attributes.items())]
    return span


def test_a_deploy_is_one_trace_from_the_api_call_to_every_ack(
    cp_factory: Any, otlp: Receiver, wasm: SimpleNamespace  # noqa: F811
) -> None:
    cp: CP = cp_factory(otlp_endpoint=otlp.url)
    fid, nodes = setup_function_on(cp, wasm, 3)
    caller = {**ADMIN, "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01",
              "tracestate": "vendor=1"}
    cp.ok("POST", f"/functions/{fid}/deploy", caller, 202,
          json={"version": "1.0.0", "strategy": "canary"})

    # The canary first; its ack queues the others, in the same trace.
    contexts = {}
    for node in nodes:
        (deploy,) = deploys(cp.heartbeat(node))
        instruction = Instruction.from_json(deploy)
        assert instruction.trace_context is not None
        contexts[node["id"]] = instruction.trace_context
        cp.heartbeat(node, acks=[{"id": deploy["id"], "state": "cached"}])
    cp.client.app.state.telemetry.provider.force_flush()  # type: ignore[attr-defined]

    spans = otlp.wait_for("three acks", lambda got: sum(
        s.name == "ack deploy" for s in got) == 3)
    ours = [s for s in spans if s.trace_id == TRACE_ID]
    assert {s.service for s in ours} == {telemetry.SERVICE_NAME}
    request = one(ours, "POST /api/v1/functions/{function_id}/deploy")
    assert request.kind == SERVER and request.parent_span_id == CALLER_SPAN
    service = one(ours, "deployments.deploy")
    assert service.parent_span_id == request.span_id

    canary = one(ours, "outbox deploy", **{"edgefn.node_id": "n0"})
    assert canary.parent_span_id == service.span_id
    canary_ack = one(ours, "ack deploy", **{"edgefn.node_id": "n0"})
    assert canary_ack.parent_span_id == canary.span_id
    assert canary_ack.attributes["edgefn.ack_state"] == "cached"
    for node_id in ("n1", "n2"):
        queued = one(ours, "outbox deploy", **{"edgefn.node_id": node_id})
        assert queued.parent_span_id == canary_ack.span_id
        assert one(ours, "ack deploy", **{"edgefn.node_id": node_id}
                   ).parent_span_id == queued.span_id
    # Each instruction names its outbox row's span as the parent, with the caller's state.
    for node_id, context in contexts.items():
        queued = one(ours, "outbox deploy", **{"edgefn.node_id": node_id})
        assert context.traceparent == f"00-{TRACE_ID}-{queued.span_id}-01"
        assert context.tracestate == "vendor=1"
    assert otlp.content_types == {"application/x-protobuf"}


def test_without_an_endpoint_nothing_is_traced(
    cp: CP, otlp: Receiver, wasm: SimpleNamespace  # noqa: F811
) -> None:
    fid, (node,) = setup_function_on(cp, wasm, 1)
    caller = {**ADMIN, "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}
    cp.ok("POST", f"/functions/{fid}/deploy", caller, 202, json={"version": "1.0.0"})
    (deploy,) = deploys(cp.heartbeat(node))
    assert "trace_context" not in deploy
    assert cp.client.app.state.telemetry is None  # type: ignore[attr-defined]
    assert telemetry.current_context() is None
