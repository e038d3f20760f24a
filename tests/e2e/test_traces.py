"""Traces across real processes: a control plane and three edge nodes exporting to one
OTLP/HTTP receiver on loopback. A deploy is one trace holding the CP's spans and each
node's (apply, verify, download, compile, activate, ack), every parent in place; an
invocation's span keeps the caller's parent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgefn.cluster import Cluster, wait_until
from edgefn.controlplane import telemetry
from edgefn.edge.tracing import SERVICE_NAME as EDGE_SERVICE
from tests.e2e.conftest import module
from tests.otlp import ReceivedSpan, Receiver, otlp  # noqa: F401 (a fixture)

pytestmark = pytest.mark.e2e

TRACE_ID = "5b8efff798038103d269b633813fc60c"
CALLER_SPAN = "eee19b7ec3c1b174"
NODES = ("n1", "n2", "n3")
STEPS = {"verify", "download", "compile", "activate", "ack"}


@pytest.fixture
def traced(tmp_path: Path, otlp: Receiver) -> Iterator[Cluster]:  # noqa: F811
    c = Cluster(tmp_path, token="e2e-admin-token", project="e2e")
    # One name for both: the CP's flag and the node's.
    c.env["EDGEFN_OTLP_ENDPOINT"] = otlp.url
    c.start_cp()
    yield c
    c.close()


def test_a_deploy_trace_holds_the_cp_and_every_node(traced: Cluster, otlp: Receiver) -> None:  # noqa: F811
    edges = traced.add_edges([(node_id, f"pop-{node_id}") for node_id in NODES])
    fid = traced.function("hello")
    traced.upload(fid, "1.0.0", module("hello-c"))
    traced.route(fid, "/hello")
    resp = httpx.post(f"{traced.api}/functions/{fid}/deploy", json={"version": "1.0.0"},
                      headers={**traced.headers,
                               "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"}, timeout=10)
    assert resp.status_code == 202, resp.text
    dep = resp.json()["deployment_id"]
    wait_until("every node cached",
               lambda: set(traced.node_states(dep).values()) == {"cached"}
               and len(traced.node_states(dep)) == 3)

    def complete(spans: list[ReceivedSpan]) -> bool:
        ours = [s for s in spans if s.trace_id == TRACE_ID]
        return (sum(s.name == "ack deploy" for s in ours) == 3
                and sum(s.name == "apply deploy" for s in ours) == 3
                and sum(s.name in STEPS for s in ours) == 3 * len(STEPS))

    spans = [s for s in otlp.wait_for("the deploy trace", complete) if s.trace_id == TRACE_ID]
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans)
    request = next(s for s in spans if s.parent_span_id == CALLER_SPAN)
    assert request.service == telemetry.SERVICE_NAME and request.name.startswith("POST ")
    service = next(s for s in spans if s.name == "deployments.deploy")
    assert service.parent_span_id == request.span_id
    for node_id in NODES:
        queued = next(s for s in spans if s.name == "outbox deploy"
                      and s.attributes["edgefn.node_id"] == node_id)
        assert queued.parent_span_id == service.span_id
        ack = next(s for s in spans if s.name == "ack deploy"
                   and s.attributes["edgefn.node_id"] == node_id)
        assert ack.service == telemetry.SERVICE_NAME and ack.parent_span_id == queued.span_id
        (apply,) = [s for s in spans if s.name == "apply deploy" and s.instance == node_id]
        assert apply.service == EDGE_SERVICE and apply.parent_span_id == queued.span_id
        assert apply.attributes["edgefn.function_id"] == fid and not apply.error
        steps = [s for s in spans if s.parent_span_id == apply.span_id]
        assert {s.name for s in steps} == STEPS and all(s.instance == node_id for s in steps)
        verify = next(s for s in steps if s.name == "verify")
        assert verify.attributes["edgefn.cache_hit"] == "false"  # hence the download
    # Every span's parent is in the trace, but the API call's (the caller's).
    assert {s.parent_span_id for s in spans} - set(by_id) == {CALLER_SPAN}

    # An invocation keeps the parent its request names.
    parent = "a3ce929d0e0e4736"
    assert edges[0].get("/hello", headers={
        "traceparent": f"00-{TRACE_ID}-{parent}-01"}).status_code == 200
    spans = otlp.wait_for("the invocation", lambda got: any(
        s.name == f"invoke {fid}" for s in got))
    invocation = next(s for s in spans if s.name == f"invoke {fid}")
    assert (invocation.trace_id, invocation.parent_span_id) == (TRACE_ID, parent)
    assert invocation.instance == "n1"
