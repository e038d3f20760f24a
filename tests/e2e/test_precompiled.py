"""Precompiled artifacts end to end, with real processes: a control plane that compiles
each version ahead for the tags its nodes report, and nodes that load that code when
their tag matches and its digest verifies, and compile the `.wasm` otherwise."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefn.cluster import Cluster, Edge, wait_until
from edgefn.sandbox import create_engine
from edgefn.sandbox.errors import EngineUnavailable
from tests.e2e.conftest import module
from tests.e2e.test_integrity import metric, serves

pytestmark = pytest.mark.e2e

HELLO = b"Hello from edgefn!"


@pytest.fixture(params=["wasmtime", "wasmedge"])
def engine_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    try:
        engine = create_engine(name)
    except EngineUnavailable as exc:
        pytest.skip(f"{name} is not available here: {exc}")
    try:
        if not engine.tag:
            pytest.skip(f"{name} compiles nothing ahead here (interpreter only)")
    finally:
        engine.close()
    return name


@pytest.fixture
def cluster(tmp_path: Path, engine_name: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, token="e2e-admin-token", project="e2e")
    c.env["EDGEFN_PRECOMPILE_POLL_S"] = "0.3"
    c.env["EDGEFN_ENGINE"] = engine_name  # read by `edgefn edge serve`
    c.start_timeout_s = 120  # two nodes and a control plane compiling share the cores
    c.start_cp()
    yield c
    c.close()


def add_edge(cluster: Cluster, node_id: str, **env: str) -> tuple[Edge, str]:
    """A node started with `env` on top of the cluster's, and the tag it reports."""
    saved = dict(cluster.env)
    cluster.env.update(env)
    try:
        edge = cluster.add_edge(node_id, "jp-t1", region="tokyo")
    finally:
        cluster.env.clear()
        cluster.env.update(saved)

    def reported() -> Any:
        nodes = cluster.call("GET", "/nodes")
        items = nodes["items"] if isinstance(nodes, dict) else nodes
        return next((n["engine_tags"] for n in items if n["id"] == node_id), None)

    (tag,) = wait_until(f"{node_id}'s engine tag", reported)
    return edge, tag


def precompiled(cluster: Cluster, fid: str, version: str) -> dict[str, dict[str, Any]]:
    rows = cluster.call("GET", f"/functions/{fid}/versions/{version}/precompiled")
    return {r["engine_tag"]: r for r in rows}


def ready(cluster: Cluster, fid: str, version: str, tag: str) -> dict[str, Any]:
    return dict(wait_until(f"{fid}@{version} precompiled for {tag}",
                           lambda: precompiled(cluster, fid, version).get(tag)))


def _labelled(edge: Edge, name: str, reason: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(f'{name}{{reason="{reason}"}}'))


# wasmtime only: its optimisation level is a node setting that changes the tag; no
# WasmEdge node setting does (the other test covers WasmEdge's precompiled code).
@pytest.mark.parametrize("engine_name", ["wasmtime"], indirect=True)
def test_a_node_of_the_control_planes_tag_loads_the_code_another_compiles(
    cluster: Cluster, engine_name: str
) -> None:
    tokyo, tag = add_edge(cluster, "tokyo-1")
    osaka, other = add_edge(cluster, "osaka-1", EDGEFN_WASMTIME_OPT_LEVEL="none")
    assert other != tag
    fid = cluster.function("hello")
    cluster.upload(fid, "1.0.0", module("hello-c"))
    cluster.route(fid, "/hello")
    row = ready(cluster, fid, "1.0.0", tag)
    assert row["state"] == "ready"
    assert other not in precompiled(cluster, fid, "1.0.0")

    cluster.deploy(fid, "1.0.0")
    for edge in (tokyo, osaka):
        wait_until(f"{edge.node_id} serving", lambda e=edge: serves(e, "/hello", HELLO))
    # tokyo loaded the control plane's code: no compile on the node.
    assert metric(tokyo, "edge_precompiled_loaded_total") == 1
    assert metric(tokyo, "edge_precompiled_fallback_total") == 0
    # osaka's tag is not one the control plane produces: it compiled the module.
    assert metric(osaka, "edge_precompiled_loaded_total") == 0
    assert _labelled(osaka, "edge_precompiled_fallback_total", "missing") == 1
    # Its workers loaded the code from the node's sealed cache, which took it.
    assert metric(tokyo, "edge_compiled_code_rejected_total") == 0
    assert len(list((tokyo.data_dir / "compiled").glob("*.cwasm"))) == 1


def test_tampered_precompiled_code_is_refused_and_the_node_compiles(
    cluster: Cluster, engine_name: str
) -> None:
    edge, tag = add_edge(cluster, "tokyo-1")
    victim = cluster.function("shop")
    cluster.upload(victim, "1.0.0", module("hello-c"))
    cluster.route(victim, "/shop")
    other = cluster.function("bank")
    cluster.upload(other, "1.0.0", module("counter"))
    victim_row = ready(cluster, victim, "1.0.0", tag)
    other_row = ready(cluster, other, "1.0.0", tag)
    store = cluster.root / "cp" / "artifacts" / "functions"
    target = store / victim / f"1.0.0.{tag}.{victim_row['sha256']}.cwasm"
    source = store / other / f"1.0.0.{tag}.{other_row['sha256']}.cwasm"
    # Someone with write access to the store puts another module's code in its place.
    target.write_bytes(source.read_bytes())
    assert hashlib.sha256(target.read_bytes()).hexdigest() != victim_row["sha256"]

    cluster.deploy(victim, "1.0.0")
    wait_until("the victim's function", lambda: serves(edge, "/shop", HELLO))
    shop = edge.get("/shop")
    assert shop.content.startswith(HELLO) and "x-init" not in shop.headers
    assert _labelled(edge, "edge_precompiled_fallback_total", "digest") == 1
    assert metric(edge, "edge_precompiled_loaded_total") == 0
    log = (cluster.root / "tokyo-1.log").read_text()
    assert "sha256 mismatch for precompiled code" in log
