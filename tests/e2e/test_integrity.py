"""Integrity of what a node runs, and the credentials it holds, with real processes:
a control plane, edge nodes, their workers."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import httpx
import psutil
import pytest

from edgefn.cluster import Cluster, Edge, wait_until
from tests.e2e.conftest import module

pytestmark = pytest.mark.e2e

HELLO = b"Hello from edgefn!"
URL_TTL_S = 3


def serves(edge: Edge, path: str, needle: bytes) -> bool:
    resp = edge.get(path)
    return resp.status_code == 200 and needle in resp.content


def project_function(cluster: Cluster, project: str, name: str, wasm: bytes, path: str) -> str:
    pid = cluster.call("POST", "/projects", json={"name": project})["id"]
    fid = str(cluster.call("POST", "/functions", json={"name": name,
                                                       "owner_project_id": pid})["id"])
    cluster.upload(fid, "1.0.0", wasm)
    cluster.route(fid, path)
    return fid


def metric(edge: Edge, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def test_a_swapped_compiled_file_is_refused_and_each_tenant_runs_its_own_code(
    cluster: Cluster,
) -> None:
    edge = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    compiled = edge.data_dir / "compiled"
    victim = project_function(cluster, "victim", "shop", module("hello-c"), "/shop")
    cluster.deploy(victim, "1.0.0")
    wait_until("the victim's function", lambda: serves(edge, "/shop", HELLO))
    (victim_code,) = compiled.glob("*.cwasm")
    other = project_function(cluster, "other", "bank", module("counter"), "/bank")
    cluster.deploy(other, "1.0.0")
    wait_until("the other function", lambda: edge.get("/bank").headers.get("x-init") == "1")
    (other_code,) = set(compiled.glob("*.cwasm")) - {victim_code}

    # Someone with write access to the cache puts the other function's machine code
    # where the victim's is; the node restarts and its workers load from disk.
    cluster.stop_edge(edge)
    shutil.copyfile(other_code, victim_code)
    cluster.start_edge(edge)
    wait_until("the victim's function again", lambda: edge.get("/shop").status_code == 200)
    shop = edge.get("/shop")
    assert shop.content.startswith(HELLO) and "x-init" not in shop.headers
    assert edge.get("/bank").headers.get("x-init") == "1"
    assert metric(edge, "edge_compiled_code_rejected_total") >= 1
    assert victim_code.read_bytes() != other_code.read_bytes()  # compiled again, resealed
    log = (cluster.root / "tokyo-1.log").read_text()
    assert "refused: its seal does not match" in log


def test_a_corrupt_cached_artifact_comes_back_through_a_fresh_url(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, token="e2e-admin-token", project="e2e")
    # URLs expire fast here, so that the one saved in the node's state is dead.
    cluster.env["EDGEFN_DOWNLOAD_URL_TTL_S"] = str(URL_TTL_S)
    cluster.start_cp()
    try:
        edge = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
        fid = cluster.function("hello")
        cluster.upload(fid, "1.0.0", module("hello-c"))
        cluster.route(fid, "/hello")
        cluster.deploy(fid, "1.0.0")
        wait_until("v1", lambda: serves(edge, "/hello", HELLO))
        saved_url = json.loads((edge.data_dir / "state.json").read_text())[
            "functions"][0]["artifact_url"]
        time.sleep(URL_TTL_S + 1)
        assert httpx.get(saved_url, timeout=5).status_code == 403  # expired

        cached = edge.data_dir / "cache" / fid / "1.0.0.wasm"
        good = cached.read_bytes()
        cluster.stop_edge(edge)
        cached.write_bytes(good[:300] + bytes([good[300] ^ 0xFF]) + good[301:])
        cluster.start_edge(edge)
        wait_until("served again without a redeploy", lambda: serves(edge, "/hello", HELLO))
        assert hashlib.sha256(cached.read_bytes()).digest() == hashlib.sha256(good).digest()
        assert len(cluster.call("GET", f"/functions/{fid}/deployments")) == 1

        # While it runs: a file gone from the cache is back within seconds.
        cached.unlink()
        wait_until("fetched again", lambda: cached.exists() and cached.read_bytes() == good,
                   timeout=20)
        assert serves(edge, "/hello", HELLO)
        log = (tmp_path / "tokyo-1.log").read_text()
        assert log.count("fetched again through a fresh URL") >= 2
    finally:
        cluster.close()


def test_workers_hold_no_control_plane_credential(cluster: Cluster) -> None:
    token = cluster.register_node("tokyo-1", "jp-t1", {"region": "tokyo"})
    edge = Edge("tokyo-1", "jp-t1", {"region": "tokyo"}, token, cluster.root / "tokyo-1",
                workers=2)
    cluster.edges[edge.node_id] = edge
    # An operator's shell with the token in the environment, and the admin token too.
    cluster.start_edge(edge, env=dict(cluster.env))
    fid = cluster.function("hello")
    cluster.upload(fid, "1.0.0", module("hello-c"))
    cluster.route(fid, "/hello")
    cluster.deploy(fid, "1.0.0")
    wait_until("the node, holding its token, got the deploy",
               lambda: serves(edge, "/hello", HELLO))

    assert edge.proc is not None
    main = psutil.Process(edge.proc.pid)
    workers = [p for p in main.children(recursive=True) if "python" in p.name().lower()]
    assert len(workers) >= 2, [p.cmdline() for p in workers]
    for proc in [main, *workers]:
        assert token not in " ".join(proc.cmdline())
    for worker in workers:
        environ = worker.environ()
        leaked = [k for k, v in environ.items() if token in v or cluster.token in v]
        assert leaked == [], leaked
        assert "EDGEFN_NODE_TOKEN" not in environ and "EDGEFN_BOOTSTRAP_TOKEN" not in environ
