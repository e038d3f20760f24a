"""Project quotas on the control plane: who may read and set them, the audit row, and
the config instruction that carries them to a node (over real gRPC) and makes it
answer 429."""

from __future__ import annotations

import asyncio
import time
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgefn.contract import QuotaSpec
from edgefn.edge.bootstrap import build_runtime
from edgefn.edge.cache import ArtifactCache
from edgefn.edge.logs import JsonLog
from edgefn.edge.node.controller import NodeController
from edgefn.edge.node.grpc_transport import instruction_from_proto
from edgefn.edge.settings import EdgeSettings
from edgefn.edge.spec import FunctionSpec
from edgefn.edge.worker.runtime import HttpRequest
from tests.conftest import wasm_path
from tests.controlplane.conftest import ADMIN, CP
from tests.controlplane.nodelink import NodeLink
from tests.controlplane.test_stream import connected


def test_members_read_the_admin_sets(cp: CP, team: SimpleNamespace) -> None:
    path = f"/projects/{team.a}/quotas"
    assert cp.ok("GET", path, team.a_viewer) == {
        "project_id": team.a, "max_concurrency": None, "invocations_per_minute": None,
        "cpu_seconds_per_day": None, "updated_at": None,
    }
    body = {"max_concurrency": 5, "invocations_per_minute": 600, "cpu_seconds_per_day": 1.5}
    # Only the admin sets quotas, not even the project's owner.
    for who in (team.a_owner, team.a_dev, team.b_dev):
        assert cp.call("PUT", path, who, json=body).status_code == 403
    got = cp.ok("PUT", path, ADMIN, json=body)
    assert {k: got[k] for k in body} == body and got["updated_at"]
    assert cp.ok("GET", path, team.a_dev) == got
    # Another project's member does not see them at all.
    assert cp.call("GET", path, team.b_dev).status_code == 404
    assert cp.call("GET", "/projects/nope/quotas", ADMIN).status_code == 404
    # Fields left out return to the nodes' defaults.
    again = cp.ok("PUT", path, ADMIN, json={"invocations_per_minute": 0})
    assert (again["max_concurrency"], again["invocations_per_minute"]) == (None, 0)
    rows = [r for r in cp.ok("GET", "/audit", ADMIN) if r["action"] == "project.quotas"]
    assert len(rows) == 2 and rows[0]["project_id"] == team.a
    assert rows[0]["details"]["before"]["max_concurrency"] == 5
    assert rows[0]["details"]["after"]["invocations_per_minute"] == 0


@pytest.mark.parametrize("body", [
    {"max_concurrency": -1},
    {"invocations_per_minute": 1.5},
    {"cpu_seconds_per_day": "lots"},
    {"cpu_seconds_per_day": False},  # not taken for 0
    {"invocations_per_minute": 2**61},
    {"burst": 3},
])
def test_bad_quotas_are_400(cp: CP, team: SimpleNamespace, body: dict[str, Any]) -> None:
    r = cp.call("PUT", f"/projects/{team.a}/quotas", ADMIN, json=body)
    assert r.status_code == 400, r.text
    assert cp.ok("GET", f"/projects/{team.a}/quotas", ADMIN)["max_concurrency"] is None


def test_quotas_reach_a_node_which_answers_429(
    cp_factory: Any, tmp_path: Path
) -> None:
    gcp: CP = cp_factory(grpc_port=0, stream_recheck_s=60)
    a, b = gcp.project("alpha"), gcp.project("beta")
    node = gcp.node("tokyo", "tokyo-1")
    controller = NodeController(tmp_path / "state.json", ArtifactCache(tmp_path / "cache"), None)

    async def scenario() -> None:
        link: NodeLink = await connected(gcp, node)
        gcp.ok("PUT", f"/projects/{a}/quotas", ADMIN, json={"invocations_per_minute": 2})
        msg = await link.recv_kind("config")
        assert [(q.project_id, q.invocations_per_minute, q.HasField("max_concurrency"))
                for q in msg.config.quotas] == [(a, 2, False)]
        ack = controller.apply(instruction_from_proto(msg))
        assert ack.state == "cached", ack.message
        await link.ack(msg)
        await link.close()

    asyncio.run(scenario())
    assert controller.state.quotas == {a: QuotaSpec(invocations_per_minute=2)}

    # The node's runtime, given that state with a function of each project.
    functions = tuple(
        FunctionSpec.model_validate({"id": fid, "project_id": pid,
                                     "artifact": str(wasm_path("echo")),
                                     "routes": [{"path": f"/{fid}/*"}]})
        for fid, pid in (("fa", a), ("fb", b))
    )
    state = controller.state.model_copy(update={"functions": functions, "generation": 9})
    runtime = build_runtime(EdgeSettings(data_dir=tmp_path / "edge", node_id="tokyo-1"),
                            log_sink=JsonLog(tmp_path / "edge.log"))
    try:
        runtime.apply_state(state)

        def get(path: str) -> int:
            return runtime.handle(HttpRequest(
                method="GET", host="x", path=path, query="", headers=[],
                read_body=BytesIO().read, content_length=0)).status

        if time.time() % 60 > 55:
            time.sleep(60.5 - time.time() % 60)
        assert [get("/fa/x") for _ in range(3)] == [200, 200, 429]
        assert [get("/fb/x") for _ in range(3)] == [200, 200, 200]  # seed defaults
    finally:
        runtime.close()


def test_the_document_states_the_quota_bounds(cp: CP) -> None:
    """The bounds sit on the integer branch, where clients and fuzzers read them."""
    props = cp.client.get("/openapi.json").json()["components"]["schemas"]["QuotasIn"][
        "properties"]
    for field in ("max_concurrency", "invocations_per_minute"):
        (branch,) = [b for b in props[field]["anyOf"] if b.get("type") == "integer"]
        assert (branch["minimum"], branch["maximum"]) == (0, 2**53 - 1), field
