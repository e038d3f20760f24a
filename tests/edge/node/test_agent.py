"""The agent's pieces that need no control plane: backoff and instruction decoding."""

from __future__ import annotations

import itertools

from edgefn.contract import RouteSpec
from edgefn.edge.node.agent import BACKOFF_CAP_S, backoff_delays
from edgefn.edge.node.grpc_transport import instruction_from_proto
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
