"""A node's log batches as each transport carries them, read by the control plane:
the protobuf `LogBatch` and the WebSocket `logs` frame give the same event, and a
malformed frame is refused (the stream ends with 4400) rather than half-read."""

from __future__ import annotations

import json

import pytest

from edgefn.controlplane.errors import BadRequest
from edgefn.controlplane.logs.hub import LogLine
from edgefn.controlplane.stream import events as ev
from edgefn.controlplane.stream.messages import event_of
from edgefn.controlplane.stream.websocket import decode
from edgefn.edge.node import websocket_transport
from edgefn.edge.node.grpc_transport import to_proto
from edgefn.edge.node.logship import Tagged
from edgefn.edge.node.transport import LogBatch

BATCH = LogBatch([Tagged("fn-1", "proj-1", '{"function_id":"fn-1","n":1}'),
                  Tagged("fn-2", "proj-2", '{"function_id":"fn-2","n":2}')], dropped=3)
EXPECTED = [LogLine("fn-1", "proj-1", '{"function_id":"fn-1","n":1}'),
            LogLine("fn-2", "proj-2", '{"function_id":"fn-2","n":2}')]


def test_both_transports_carry_a_batch_to_the_same_event() -> None:
    over_grpc = event_of("node-1", to_proto("node-1", BATCH))
    over_ws = decode("node-1", websocket_transport.encode("node-1", BATCH))
    for event in (over_grpc, over_ws):
        assert isinstance(event, ev.Logs)
        assert event.node_id == "node-1" and event.lines == EXPECTED and event.dropped == 3


@pytest.mark.parametrize("lines", [
    "not a list",
    [{"function_id": "fn", "project_id": "p"}],  # no line
    [{"function_id": 7, "project_id": "p", "line": "{}"}],
    ["a string"],
])
def test_a_malformed_logs_frame_is_refused(lines: object) -> None:
    with pytest.raises(BadRequest):
        decode("node-1", json.dumps({"type": "logs", "lines": lines}))


def test_a_bad_dropped_count_reads_as_none_dropped() -> None:
    event = decode("node-1", json.dumps({"type": "logs", "lines": [], "dropped": -5}))
    assert isinstance(event, ev.Logs) and event.dropped == 0
