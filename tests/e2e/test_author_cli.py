"""The author's listing commands and rollback, as processes against a real control
plane and edge node: `edgefn functions list`, `edgefn versions`, `edgefn rollback`."""

from __future__ import annotations

import hashlib
import json

import pytest

from edgefn.cluster import Cluster, wait_until
from tests.e2e.conftest import edgefn, module

pytestmark = pytest.mark.e2e
HELLO = b"Hello from edgefn!"


def test_list_versions_and_rollback(cluster: Cluster) -> None:
    edge = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    fid = cluster.function("api")
    other = cluster.call("POST", "/projects", json={"name": "elsewhere"})["id"]
    cluster.call("POST", "/functions", json={"name": "side", "owner_project_id": other})
    v1, v2 = module("hello-c"), module("counter")
    cluster.upload(fid, "1.0.0", v1)
    cluster.upload(fid, "2.0.0", v2)
    cluster.route(fid, "/hello")
    cluster.deploy(fid, "1.0.0")
    wait_until("v1", lambda: HELLO in edge.get("/hello").content)
    cluster.deploy(fid, "2.0.0")
    wait_until("v2", lambda: edge.get("/hello").headers.get("x-init") == "1")

    # Every project the token sees, or one of them; JSON for scripts.
    listed = edgefn(cluster, "functions", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {f["name"] for f in json.loads(listed.stdout)} == {"api", "side"}
    mine = edgefn(cluster, "functions", "list", "--project", "e2e")
    assert mine.returncode == 0 and "api" in mine.stdout and "side" not in mine.stdout
    assert mine.stdout.splitlines()[0].split() == ["NAME", "PROJECT", "ACTIVE", "ID", "UPDATED"]

    # Versions with their digest, size, and the node running the active one.
    wait_until("the node reports 2.0.0", lambda: "tokyo-1:cached" in edgefn(
        cluster, "versions", "api").stdout)
    table = edgefn(cluster, "versions", "api")
    assert hashlib.sha256(v1).hexdigest()[:12] in table.stdout
    rows = json.loads(edgefn(cluster, "versions", "api", "--json").stdout)
    assert [(r["version"], r["active"], r["size"]) for r in rows] == [
        ("1.0.0", False, len(v1)), ("2.0.0", True, len(v2))]
    assert rows[1]["nodes"] == ["tokyo-1:cached"] and rows[0]["nodes"] == []

    # Back to the version before, followed until the node runs it.
    back = edgefn(cluster, "rollback", "api")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "back to 1.0.0 (was 2.0.0)" in back.stdout and "node tokyo-1: cached" in back.stdout
    assert HELLO in edge.get("/hello").content
    # Not a terminal: no progress bar in what a script reads.
    assert "[#" not in back.stderr
    forward = edgefn(cluster, "rollback", "api", "--to", "2.0.0", "--json")
    assert forward.returncode == 0, forward.stderr
    dep = json.loads(forward.stdout)
    assert dep["version"] == "2.0.0" and dep["state"] == "succeeded"

    # Exit codes: 5 for a name nobody has, 5 for an unknown version, 2 for usage.
    assert edgefn(cluster, "versions", "nothing").returncode == 5
    assert edgefn(cluster, "rollback", "api", "--to", "9.9.9").returncode == 5
    assert edgefn(cluster, "versions").returncode == 2
