"""Secrets end to end: a control plane, an edge node, and the real `secret.wasm` guest
reading a project secret with `secret_get`; the value never lands on the node's
disk, in either process's log, or in an instruction, and signed URLs and tokens
are redacted from the logs."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from edgefn.cluster import Cluster, Edge, wait_until
from tests.e2e.conftest import module

pytestmark = pytest.mark.e2e

VALUE = "sk_live_e2e-0123456789abcdef"
OTHER_PROJECT_VALUE = "beta-project-secret-value"


def _code(edge: Edge, name: str) -> tuple[int, bytes]:
    resp = edge.get(f"/secret?name={name}")
    if resp.status_code != 200:
        return -100, resp.content
    return int(resp.headers["x-code"]), resp.content


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_a_guest_reads_its_secret_and_the_value_stays_in_memory(cluster: Cluster) -> None:
    tokyo = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    fid = cluster.function("reader", secrets=["API_KEY", "NOT_SET"])
    cluster.call("POST", f"/projects/{cluster.project_id}/secrets",
                 json={"name": "API_KEY", "value": VALUE})
    beta = cluster.call("POST", "/projects", json={"name": "beta"})["id"]
    cluster.call("POST", f"/projects/{beta}/secrets",
                 json={"name": "B_KEY", "value": OTHER_PROJECT_VALUE})
    cluster.upload(fid, "1.0.0", module("secret"))
    cluster.route(fid, "/secret")
    dep = cluster.deploy(fid, "1.0.0")
    wait_until("the node serves the reader", lambda: _code(tokyo, "API_KEY")[0] != -100)
    wait_until("deployment acked", lambda: cluster.node_states(dep) == {"tokyo-1": "cached"})

    assert _code(tokyo, "API_KEY") == (len(VALUE), VALUE.encode())
    assert _code(tokyo, "NOT_SET") == (-1, b"")
    # Not listed by the function, and another project's secret: denied.
    assert _code(tokyo, "B_KEY") == (-2, b"")

    # The API never gives a value back.
    listed = httpx.get(f"{cluster.api}/projects/{cluster.project_id}/secrets",
                       headers=cluster.headers, timeout=5).text
    assert "API_KEY" in listed and VALUE not in listed

    # Not on the node's disk (state, cache, compiled code, KV), not in any log.
    for path in _files_under(tokyo.data_dir):
        assert VALUE.encode() not in path.read_bytes(), path
    cp_log = (cluster.root / "cp.log").read_text()
    node_log = (cluster.root / "tokyo-1.log").read_text()
    for text in (cp_log, node_log):
        assert VALUE not in text and OTHER_PROJECT_VALUE not in text
        # The node token and artifact signatures are redacted wherever logged.
        assert tokyo.token not in text
        assert not re.search(r"sig=(?!<redacted>)", text)
    # The signed artifact URL was logged (by the node's download), redacted.
    assert "sig=<redacted>" in cp_log + node_log
