"""The agent's pieces that need no control plane: backoff, and instruction decoding and
frames of both transports."""

from __future__ import annotations

import itertools
import json

import pytest

from edgefn.contract import AckState, DeployInstruction, InstructionAck, RouteSpec
from edgefn.edge.node.agent import BACKOFF_CAP_S, backoff_delays
from edgefn.edge.node.grpc_transport import instruction_from_proto
from edgefn.edge.node.transport import Beat, HeartbeatAnswer, Hello, Pushed
from edgefn.edge.node.websocket_transport import decode as ws_decode
from edgefn.edge.node.websocket_transport import encode as ws_encode
from edgefn.edge.node.websocket_transport import stream_url
from edgefn.proto import edge_control_pb2 as pb


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    delays = list(itertools.islice(backoff_delays(0.2, 30.0), 40))
    assert all(0 <= d <= 0.2 * 2**n for n, d in enumerate(delays[:8]))
    assert all(d <= BACKOFF_CAP_S for d in delays)
    assert len(set(delays)) > 30  # jittered, not a fixed ladder
    assert max(delays[10:]) > 5  # and it does grow towards the cap


def test_deploy_instruction_from_proto() -> None:
    msg = pb.ControlMessage(ack_id=7, deploy=pb.DeployInstruction(
        function_id="f", version="1.2.0", artifact_url="http://cp/a", sha256="ab" * 32,
        memory_pages=32, max_execution_ms=250, max_response_bytes=1000, abi="edge-v1",
        env={"K": "V"}, routes=[pb.Route(id="r", host="*", path="/x/*", methods=["GET"],
                                         priority=2, function_id="f", project_id="p1")],
        project_id="p1"))
    instr = instruction_from_proto(msg)
    assert (instr.id, instr.type, instr.function_id, instr.version) == (7, "deploy", "f", "1.2.0")
    assert (instr.memory_pages, instr.max_execution_ms, instr.max_response_bytes) == (32, 250, 1000)
    assert instr.env == {"K": "V"}
    assert instr.routes == (RouteSpec(id="r", host="*", path="/x/*", methods=("GET",),
                                      priority=2, function_id="f", project_id="p1"),)
    assert instr.project_id == "p1"


def test_undeploy_and_config_from_proto() -> None:
    undeploy = instruction_from_proto(pb.ControlMessage(
        ack_id=3, undeploy=pb.UndeployInstruction(function_id="f")))
    assert (undeploy.type, undeploy.function_id) == ("undeploy", "f")
    config = instruction_from_proto(pb.ControlMessage(
        ack_id=4, config=pb.ConfigUpdate(routes=[pb.Route(host="a.test", path="/")])))
    assert config.type == "config" and config.routes[0].host == "a.test"


def test_websocket_stream_url_follows_the_cp_url() -> None:
    assert stream_url("https://cp.example:8443/", "tokyo-1") == (
        "wss://cp.example:8443/api/v1/nodes/tokyo-1/stream")
    assert stream_url("http://127.0.0.1:8080", "n") == "ws://127.0.0.1:8080/api/v1/nodes/n/stream"
    with pytest.raises(ValueError):
        stream_url("cp.example:8443", "n")


def test_websocket_frames_are_the_heartbeat_json() -> None:
    """What the node sends: the HTTP heartbeat's body and ack entries, with a type."""
    beat = Beat("tokyo-1", 1.5, 10, [{"id": "f", "version": "1.0.0", "state": "cached"}])
    assert json.loads(ws_encode("tokyo-1", beat)) == {"type": "heartbeat", **beat.to_json()}
    ack = InstructionAck(7, AckState.ERROR, "sha256 mismatch", "f", "1.0.0")
    assert json.loads(ws_encode("tokyo-1", ack)) == {
        "type": "ack", "node_id": "tokyo-1", "id": 7, "state": "error",
        "message": "sha256 mismatch"}
    hello = json.loads(ws_encode("tokyo-1", Hello("tokyo", {"region": "jp"}, "0.1.0", [])))
    assert hello["type"] == "hello" and hello["labels"] == {"region": "jp"}


def test_websocket_frames_from_the_cp_read_as_the_http_answer() -> None:
    """An instruction frame holds the instruction's JSON form, read as the HTTP
    heartbeat's answer is; unknown frames and instructions without an id are passed over."""
    instruction = DeployInstruction(id=9, function_id="f", version="1.2.0", sha256="ab" * 32)
    pushed = ws_decode(json.dumps({"type": "instruction",
                                   "instruction": instruction.model_dump(mode="json")}))
    assert isinstance(pushed, Pushed) and pushed.ack_id == 9
    assert pushed.decode() == instruction
    assert ws_decode('{"type": "heartbeat_ack", "heartbeat_interval_s": 5}') == HeartbeatAnswer(5)
    assert ws_decode('{"type": "from-the-future"}') is None
    assert ws_decode('{"type": "instruction", "instruction": {"type": "deploy"}}') is None
