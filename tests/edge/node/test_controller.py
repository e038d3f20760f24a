"""Applying control-plane instructions: verified artifacts, atomic state, idempotence."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path

import pytest

from edgefn.contract import (
    POLICY_FIELDS,
    FunctionPolicy,
    HttpFetchPolicy,
    KvPolicy,
    LoadState,
    ResourceCaps,
)
from edgefn.edge.cache import ArtifactCache
from edgefn.edge.node.controller import Instruction, NodeController
from edgefn.edge.spec import read_state
from edgefn.sandbox import Engine
from tests.conftest import wasm_path
from tests.edge.conftest import ArtifactServer

ECHO = wasm_path("echo").read_bytes()
COUNTER = wasm_path("counter").read_bytes()
JUNK = b"\x00asm\x01\x00\x00\x00\xff\xff"


@pytest.fixture
def store(artifact_server: ArtifactServer) -> str:
    artifact_server.blobs.update({
        "/echo.wasm": ECHO, "/counter.wasm": COUNTER,
        "/tampered.wasm": COUNTER[:100] + bytes([COUNTER[100] ^ 0xFF]) + COUNTER[101:],
        "/junk.wasm": JUNK,
    })
    return artifact_server.url


@pytest.fixture
def controller(tmp_path: Path, engine: Engine) -> NodeController:
    return NodeController(tmp_path / "state.json", ArtifactCache(tmp_path / "cache"), engine)


def deploy(
    i: int, store: str, name: str, version: str, sha_of: bytes, **extra: object
) -> Instruction:
    return Instruction.from_json({
        "id": i, "type": "deploy", "function_id": "fn", "version": version,
        "artifact_url": f"{store}/{name}.wasm", "sha256": hashlib.sha256(sha_of).hexdigest(),
        "abi": "edge-v1", "memory_pages": 16, "max_execution_ms": 200,
        "routes": [{"id": "r1", "host": "*", "path": "/fn/*", "methods": [], "priority": 0}],
        **extra,
    })


def test_deploy_downloads_verifies_and_writes_state(controller: NodeController, store: str) -> None:
    ack = controller.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    assert (ack.id, ack.state) == (1, "cached")
    state = read_state(controller.state_path)
    assert [(f.id, f.version, f.max_execution_ms) for f in state.functions] == [
        ("fn", "1.0.0", 200)]
    assert [(r.path, r.function_id) for r in state.routes()] == [("/fn/*", "fn")]
    assert controller.cache.get("fn", "1.0.0", hashlib.sha256(ECHO).hexdigest()) == ECHO
    assert controller.statuses() == [{"id": "fn", "version": "1.0.0", "state": "cached"}]


def test_applying_the_same_instruction_twice_changes_nothing(
    controller: NodeController, store: str
) -> None:
    controller.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    generation = read_state(controller.state_path).generation
    assert controller.apply(deploy(1, store, "echo", "1.0.0", ECHO)).state == "cached"
    assert read_state(controller.state_path).generation == generation


def test_tampered_artifact_is_refused_and_the_old_version_keeps_serving(
    controller: NodeController, store: str
) -> None:
    controller.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    ack = controller.apply(deploy(2, store, "tampered", "2.0.0", COUNTER))
    assert ack.state == "error" and "sha256 mismatch" in ack.message
    state = read_state(controller.state_path)
    assert [(f.id, f.version) for f in state.functions] == [("fn", "1.0.0")]
    assert controller.statuses() == [{"id": "fn", "version": "2.0.0", "state": "error"}]
    assert not (controller.cache.root / "fn" / "2.0.0.wasm").exists()


def test_a_module_that_does_not_compile_is_refused(
    controller: NodeController, store: str
) -> None:
    ack = controller.apply(deploy(1, store, "junk", "1.0.0", JUNK))
    assert ack.state == "error"
    assert not controller.state_path.exists()


def test_the_policy_reaches_the_written_spec(controller: NodeController, store: str) -> None:
    ack = controller.apply(deploy(
        1, store, "echo", "1.0.0", ECHO,
        kv={"enabled": True, "max_keys": 5},
        http_fetch={"allow_hosts": ["api.example.com", "*.cdn.example"], "allow_private": False,
                    "max_response_bytes": 4096, "max_redirects": 0},
        isolation="per-request", min_hot_instances=0, max_hot_instances=2,
        idle_timeout_s=30.0, max_request_bytes=1024,
    ))
    assert ack.state == "cached", ack.message
    (spec,) = read_state(controller.state_path).functions
    assert spec.kv == KvPolicy(enabled=True, max_keys=5)
    assert spec.http_fetch == HttpFetchPolicy(
        allow_hosts=("api.example.com", "*.cdn.example"), max_response_bytes=4096,
        max_redirects=0)
    assert (spec.isolation, spec.min_hot_instances, spec.max_hot_instances) == (
        "per-request", 0, 2)
    assert (spec.idle_timeout_s, spec.max_request_bytes) == (30.0, 1024)

    # The same version without a policy (an older control plane): back to the defaults.
    assert controller.apply(deploy(2, store, "echo", "1.0.0", ECHO)).state == "cached"
    (spec,) = read_state(controller.state_path).functions
    assert {k: getattr(spec, k) for k in POLICY_FIELDS} == dict(FunctionPolicy())
    assert not spec.kv.enabled and spec.http_fetch.allow_hosts == ()


def test_null_policy_fields_are_the_defaults(controller: NodeController, store: str) -> None:
    """How undeploy-shaped blanks and older payloads spell "not set"."""
    instr = deploy(1, store, "echo", "1.0.0", ECHO, kv=None, http_fetch=None, isolation=None,
                   max_request_bytes=None)
    assert instr.policy is None
    assert controller.apply(instr).state == "cached"
    (spec,) = read_state(controller.state_path).functions
    assert spec.kv == KvPolicy() and spec.max_request_bytes is None


def test_a_policy_the_node_cannot_read_is_refused(controller: NodeController, store: str) -> None:
    controller.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    for i, bad in enumerate(({"kv": {"enabled": True, "max_keys": 0}},
                             {"kv": {"enabled": True, "shared": True}},
                             {"http_fetch": {"allow_hosts": ["2130706433"]}}), start=2):
        # Refused where it is read: the agent hands the controller its decoding.
        ack = controller.receive(i, partial(deploy, i, store, "counter", "2.0.0", COUNTER, **bad))
        assert ack.state == "error", bad
    (spec,) = read_state(controller.state_path).functions
    assert spec.version == "1.0.0" and not spec.kv.enabled


def test_new_version_replaces_the_old(controller: NodeController, store: str) -> None:
    controller.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    controller.apply(deploy(2, store, "counter", "2.0.0", COUNTER))
    state = read_state(controller.state_path)
    assert [(f.id, f.version) for f in state.functions] == [("fn", "2.0.0")]


def test_the_previous_version_stays_cached_for_a_rollback(
    tmp_path: Path, engine: Engine, store: str
) -> None:
    cache = ArtifactCache(tmp_path / "cache", max_files=2)
    node = NodeController(tmp_path / "state.json", cache, engine)
    node.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    node.apply(deploy(2, store, "counter", "2.0.0", COUNTER))
    node.apply(deploy(3, store, "counter", "1.0.0", COUNTER, function_id="other"))
    assert cache.has("fn", "1.0.0")  # the least recent, yet kept: it is fn's previous
    # Back to 1.0.0 with a URL that no longer answers: served from the cache.
    ack = node.apply(deploy(4, store, "gone", "1.0.0", ECHO))
    assert ack.state == "cached", ack.message
    state = read_state(node.state_path)
    assert {(f.id, f.version) for f in state.functions} == {("fn", "1.0.0"), ("other", "1.0.0")}


def test_config_replaces_the_route_table_and_undeploy_removes(
    controller: NodeController, store: str
) -> None:
    controller.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    controller.apply(Instruction.from_json({"id": 2, "type": "config", "routes": [
        {"id": "a", "host": "api.test", "path": "/x", "methods": ["GET"], "priority": 1,
         "function_id": "fn"}]}))
    state = read_state(controller.state_path)
    assert [(r.host, r.path) for r in state.routes()] == [("api.test", "/x")]
    controller.apply(Instruction.from_json({"id": 3, "type": "undeploy", "function_id": "fn"}))
    state = read_state(controller.state_path)
    assert state.functions == () and state.routes() == []


def test_state_survives_a_restart(tmp_path: Path, engine: Engine, store: str) -> None:
    first = NodeController(tmp_path / "state.json", ArtifactCache(tmp_path / "cache"), engine)
    first.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    again = NodeController(tmp_path / "state.json", ArtifactCache(tmp_path / "cache"), engine)
    assert [(f.id, f.version) for f in again.state.functions] == [("fn", "1.0.0")]


def test_unknown_instruction_type_is_an_error_ack(controller: NodeController) -> None:
    ack = controller.apply(Instruction.from_json({"id": 9, "type": "reboot"}))
    assert ack.state == "error" and "unknown" in ack.message


def test_repair_fetches_a_missing_or_corrupt_artifact_through_a_fresh_url(
    controller: NodeController, store: str, artifact_server: ArtifactServer
) -> None:
    controller.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    generation = read_state(controller.state_path).generation
    asked: list[tuple[str, str]] = []

    def fresh_url(function_id: str, version: str) -> str:
        asked.append((function_id, version))
        return f"{store}/fresh/echo.wasm"

    controller.fresh_url = fresh_url
    # The URL the deploy came with has expired: the store no longer answers it.
    del artifact_server.blobs["/echo.wasm"]
    artifact_server.blobs["/fresh/echo.wasm"] = ECHO
    assert controller.repair() == []  # all there: nothing fetched, nothing asked
    assert asked == []

    path = controller.cache.path_for("fn", "1.0.0")
    path.write_bytes(ECHO[:-1] + bytes([ECHO[-1] ^ 0xFF]))  # corrupt, still present
    assert controller.repair() == []  # the cheap check only looks
    assert controller.repair(verify=True) == ["fn@1.0.0"]
    assert path.read_bytes() == ECHO and asked == [("fn", "1.0.0")]

    path.unlink()  # as a worker does when it finds it corrupt
    assert controller.repair() == ["fn@1.0.0"]
    assert path.read_bytes() == ECHO
    # The workers reload: the state moved on, the function itself did not change.
    state = read_state(controller.state_path)
    assert state.generation == generation + 2
    assert [(f.id, f.version) for f in state.functions] == [("fn", "1.0.0")]


def test_repair_that_cannot_get_a_url_keeps_trying_later(
    controller: NodeController, store: str
) -> None:
    import time

    from edgefn.edge.errors import ArtifactError
    from edgefn.edge.node.controller import REPAIR_RETRY_S

    controller.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    generation = read_state(controller.state_path).generation

    def refused(function_id: str, version: str) -> str:
        raise ArtifactError("no fresh artifact URL: HTTP 404")

    controller.fresh_url = refused
    controller.cache.path_for("fn", "1.0.0").unlink()
    assert controller.repair() == []
    assert read_state(controller.state_path).generation == generation
    controller.fresh_url = lambda f, v: f"{store}/echo.wasm"
    assert controller.repair() == []  # not asked again at once: it backs off
    later = time.monotonic() + REPAIR_RETRY_S + 1
    assert controller.repair(now=later) == ["fn@1.0.0"]


def test_a_deploy_whose_url_fails_falls_back_to_a_fresh_one(
    controller: NodeController, store: str, artifact_server: ArtifactServer
) -> None:
    artifact_server.blobs["/fresh/echo.wasm"] = ECHO
    controller.fresh_url = lambda f, v: f"{store}/fresh/echo.wasm"
    ack = controller.apply(deploy(1, store, "expired", "1.0.0", ECHO))
    assert ack.state == "cached", ack.message


@pytest.mark.parametrize(
    ("asked", "refusal"),
    [
        ({"memory_pages": 1025}, "memory_pages 1025 is over the cap of 1024"),
        ({"max_execution_ms": 30_001}, "max_execution_ms 30001 is over the cap of 30000"),
        ({"max_response_bytes": 8 * 1024 * 1024 + 1}, "max_response_bytes 8388609"),
        ({"max_request_bytes": 8 * 1024 * 1024 + 1}, "max_request_bytes 8388609"),
        ({"max_hot_instances": 17}, "max_hot_instances 17 is over the cap of 16"),
        ({"min_hot_instances": 17, "max_hot_instances": 2}, "min_hot_instances 17"),
        ({"http_fetch": {"max_response_bytes": 8 * 1024 * 1024 + 1}},
         "http_fetch.max_response_bytes 8388609 is over the cap of 8388608"),
    ],
)
def test_a_deploy_over_the_nodes_caps_is_refused_and_the_rest_keeps_serving(
    controller: NodeController, store: str, asked: dict[str, object], refusal: str
) -> None:
    assert controller.apply(deploy(1, store, "echo", "1.0.0", ECHO)).state == "cached"
    other = Instruction.from_json({**deploy(2, store, "counter", "1.0.0", COUNTER).__dict__,
                                   "function_id": "other", "routes": []})
    assert controller.apply(other).state == "cached"
    generation = read_state(controller.state_path).generation

    ack = controller.apply(deploy(3, store, "counter", "2.0.0", COUNTER, **asked))
    assert ack.state == "error"
    assert ack.message.startswith("over this node's resource caps: ") and refusal in ack.message
    state = read_state(controller.state_path)
    assert state.generation == generation
    assert [(f.id, f.version) for f in state.functions] == [("fn", "1.0.0"), ("other", "1.0.0")]
    # Refused before any download.
    assert not (controller.cache.root / "fn" / "2.0.0.wasm").exists()
    assert {s["id"]: s["state"] for s in controller.statuses()} == {
        "fn": "error", "other": "cached"}


def test_the_operator_sets_the_nodes_caps(tmp_path: Path, engine: Engine, store: str) -> None:
    caps = ResourceCaps(memory_pages=32, max_execution_ms=600)
    node = NodeController(tmp_path / "state.json", ArtifactCache(tmp_path / "cache"), engine,
                          caps=caps)
    ack = node.apply(deploy(1, store, "echo", "1.0.0", ECHO, max_execution_ms=1000))
    assert ack.state == "error" and "max_execution_ms 1000 is over the cap of 600" in ack.message
    ack = node.apply(deploy(2, store, "echo", "1.0.0", ECHO, max_execution_ms=600,
                            memory_pages=32))
    assert ack.state == "cached", ack.message
    # Raised: what the default caps would refuse is fine here.
    generous = NodeController(tmp_path / "g.json", ArtifactCache(tmp_path / "gcache"), engine,
                              caps=ResourceCaps(memory_pages=4096, max_execution_ms=120_000))
    ack = generous.apply(deploy(1, store, "echo", "1.0.0", ECHO, memory_pages=2048,
                                max_execution_ms=60_000))
    assert ack.state == "cached", ack.message


def test_a_split_deploy_keeps_the_previous_version_until_promoted_or_undeployed(
    controller: NodeController, store: str
) -> None:
    controller.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    split = {"percent": 10, "key": "header:X-User"}
    assert controller.apply(deploy(2, store, "counter", "2.0.0", COUNTER, split=split)).state == (
        "cached")
    state = read_state(controller.state_path)
    assert [f.version for f in state.functions] == ["2.0.0"]
    held = state.splits["fn"]
    assert (held.percent, held.key, held.previous.version) == (10, "header:x-user", "1.0.0")
    assert controller.cache.has("fn", "1.0.0")
    # Both versions serve, and both are reported.
    assert [(s["id"], s["version"]) for s in controller.served()] == [
        ("fn", "2.0.0"), ("fn", "1.0.0")]
    # The same version again moves the percentage and keeps what it is split with.
    controller.apply(deploy(3, store, "counter", "2.0.0", COUNTER, split={"percent": 0}))
    held = read_state(controller.state_path).splits["fn"]
    assert (held.percent, held.key, held.previous.version) == (0, "", "1.0.0")
    controller.apply(deploy(4, store, "counter", "2.0.0", COUNTER, split={"percent": 100}))
    assert read_state(controller.state_path).splits == {}
    assert [s["version"] for s in controller.served()] == ["2.0.0"]
    controller.apply(deploy(5, store, "echo", "3.0.0", ECHO, split={"percent": 5}))
    assert read_state(controller.state_path).splits["fn"].previous.version == "2.0.0"
    controller.apply(Instruction.from_json({"id": 6, "type": "undeploy", "function_id": "fn"}))
    assert read_state(controller.state_path).splits == {}


def test_the_version_serving_while_its_successor_loads_is_reported(
    controller: NodeController, store: str
) -> None:
    controller.apply(deploy(1, store, "echo", "1.0.0", ECHO))
    # What `_deploy` says while it downloads and compiles 2.0.0: 1.0.0 still serves.
    controller.function_states["fn"] = ("2.0.0", LoadState.LOADING)
    assert [(s["version"], s["state"]) for s in controller.served()] == [
        ("2.0.0", "loading"), ("1.0.0", "cached")]


def test_a_split_with_nothing_before_it_is_no_split(
    controller: NodeController, store: str
) -> None:
    controller.apply(deploy(1, store, "echo", "1.0.0", ECHO, split={"percent": 10}))
    assert read_state(controller.state_path).splits == {}
