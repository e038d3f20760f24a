"""The instruction models: one JSON shape for every kind, the same instruction through
either transport, and protobuf messages that name their fields as the models do."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import Message
from pydantic import BaseModel

from edgefn.contract import (
    POLICY_FIELDS,
    ConfigInstruction,
    DataArchive,
    DeployInstruction,
    FunctionPolicy,
    HttpFetchPolicy,
    Instruction,
    KvPolicy,
    QuotaSpec,
    RouteSpec,
    UndeployInstruction,
)
from edgefn.controlplane.stream.messages import instruction_to_proto
from edgefn.edge.node.grpc_transport import instruction_from_proto
from edgefn.proto import edge_control_pb2 as pb

ROUTE = RouteSpec(id="r1", host="a.test", path="/x/*", methods=("GET",), priority=-3,
                  function_id="f", project_id="p")
INSTRUCTIONS: list[Instruction] = [
    DeployInstruction(
        id=7, function_id="f", project_id="p", version="1.2.0", artifact_url="http://cp/a",
        sha256="ab" * 32, abi="wagi", entrypoint="serve", memory_pages=32, max_execution_ms=250,
        max_response_bytes=1000, env={"K": "V"}, routes=(ROUTE,), deployment_id="d",
        policy=FunctionPolicy(
            max_request_bytes=0, kv=KvPolicy(enabled=True, max_keys=5),
            http_fetch=HttpFetchPolicy(allow_hosts=("api.example.com",), max_redirects=0),
            isolation="per-request", min_hot_instances=0, idle_timeout_s=2.5,
            secrets=("B", "A"), argv="prog ${SCRIPT_NAME} ${ARGS}"),
    ),
    DeployInstruction(id=8, function_id="f", version="1.0.0", sha256="cd" * 32),
    DeployInstruction(id=12, function_id="f", version="1.1.0", sha256="cd" * 32, abi="wagi",
                      data=DataArchive(url="http://cp/d", sha256="ef" * 32, size=1234,
                                       mounts={"/": "site", "/static": "volume-1/files"})),
    UndeployInstruction(id=9, function_id="f", deployment_id="d"),
    UndeployInstruction(id=10, function_id="f"),
    ConfigInstruction(id=11, routes=(ROUTE,),
                      quotas={"p": QuotaSpec(max_concurrency=0, cpu_seconds_per_day=1.5),
                              "q": QuotaSpec()}),
]


@pytest.mark.parametrize("instruction", INSTRUCTIONS, ids=lambda i: f"{i.type}-{i.id}")
def test_either_transport_carries_the_same_instruction(instruction: Instruction) -> None:
    as_json = instruction.model_dump(mode="json")
    assert Instruction.from_json(as_json) == instruction
    assert instruction_from_proto(instruction_to_proto(instruction)) == instruction


def test_every_kind_has_the_one_json_shape() -> None:
    shapes = {frozenset(i.model_dump(mode="json")) - {"quotas"} for i in INSTRUCTIONS}
    assert len(shapes) == 1
    (shape,) = shapes
    assert set(POLICY_FIELDS) <= shape and "policy" not in shape
    undeploy = UndeployInstruction(function_id="f").model_dump(mode="json")
    assert (undeploy["artifact_url"], undeploy["kv"], undeploy["routes"]) == (None, None, [])


def test_a_deploy_without_a_policy_keeps_none() -> None:
    (deploy,) = [i for i in INSTRUCTIONS if i.id == 8]
    assert isinstance(deploy, DeployInstruction) and deploy.policy is None
    assert not instruction_to_proto(deploy).deploy.HasField("policy")


def test_an_unknown_type_reads_as_the_bare_instruction() -> None:
    instr = Instruction.from_json({"id": 3, "type": "reboot", "function_id": "f"})
    assert type(instr) is Instruction and (instr.id, instr.type) == (3, "reboot")
    with pytest.raises(ValueError, match="unknown instruction type"):
        instruction_to_proto(instr)


def _names(message: type[Message]) -> set[str]:
    return {f.name for f in message.DESCRIPTOR.fields}


def _fields(model: type[BaseModel]) -> set[str]:
    """An instruction's id and type are the ControlMessage's ack_id and payload kind."""
    own = set(model.model_fields)
    return own - {"id", "type"} if issubclass(model, Instruction) else own


@pytest.mark.parametrize(
    ("message", "model", "extra"),
    [
        (pb.DeployInstruction, DeployInstruction, set()),
        (pb.UndeployInstruction, UndeployInstruction, set()),
        (pb.ConfigUpdate, ConfigInstruction, set()),
        (pb.Route, RouteSpec, set()),
        (pb.FunctionPolicy, FunctionPolicy, set()),
        (pb.KvPolicy, KvPolicy, set()),
        (pb.HttpFetchPolicy, HttpFetchPolicy, set()),
        (pb.ProjectQuota, QuotaSpec, {"project_id"}),
        (pb.DataArchive, DataArchive, set()),
    ],
)
def test_messages_name_their_fields_as_the_models_do(
    message: type[Message], model: type[BaseModel], extra: set[str]
) -> None:
    """The two converters read and write fields by name."""
    assert _names(message) == _fields(model) | extra


def test_json_from_an_older_control_plane() -> None:
    """Nulls are fields left out, unknown keys are ignored."""
    old: dict[str, Any] = {
        "id": 4, "type": "deploy", "function_id": "f", "version": "1.0.0",
        "artifact_url": None, "sha256": "ab" * 32, "abi": None, "memory_pages": None,
        "env": None, "routes": None, "deployment_id": None, "kv": None, "retired": 1,
    }
    instr = Instruction.from_json(old)
    assert instr == DeployInstruction(id=4, function_id="f", version="1.0.0", sha256="ab" * 32)


@pytest.mark.parametrize("mounts", [
    {"data": "d"}, {"/a/../b": "d"}, {"/a/./b": "d"}, {"/a": "../d"}, {"/a": "/etc"},
    {"/a": "d/../../x"}, {"/a": "d", "/a/": "e"}, {}, {"/c:": "d"},
])
def test_a_mount_map_names_guest_paths_and_directories_inside_the_archive(
    mounts: dict[str, str],
) -> None:
    """No instruction can name a directory of the node: a mount's source is a path
    inside the archive, checked on both sides."""
    with pytest.raises(ValueError):
        DataArchive(sha256="ab" * 32, size=1, mounts=mounts)


def test_a_mount_map_is_normalised() -> None:
    data = DataArchive(sha256="ab" * 32, size=1, mounts={"/": "", "/s/": "./a//b/"})
    assert data.mounts == {"/": ".", "/s": "a/b"}
