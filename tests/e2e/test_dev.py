"""`edgefn dev`: one command runs a control plane and a node with the examples deployed."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from edgefn.cluster import free_port, wait_until
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e


def test_dev_serves_the_examples_and_stops_cleanly(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    ports = {name: free_port() for name in ("api", "edge", "metrics", "grpc")}
    out = tmp_path / "dev.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgefn", "dev", "--api-port", str(ports["api"]),
             "--edge-port", str(ports["edge"]), "--metrics-port", str(ports["metrics"]),
             "--grpc-port", str(ports["grpc"])],
            cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k != "EDGEFN_BOOTSTRAP_TOKEN"},
        )
    try:
        wait_until("edgefn dev to be ready",
                   lambda: proc.poll() is None and b"edgefn dev is running" in out.read_bytes(),
                   timeout=90)
        text = out.read_text()
        token = (tmp_path / ".edgefn" / "dev-token").read_text().strip()
        assert f"token      {token}" in text
        edge = f"http://127.0.0.1:{ports['edge']}"
        assert httpx.get(edge + "/hello").text.startswith("Hello from edgefn!")
        assert httpx.get(edge + "/wagi/x").text.startswith("Hello from edgefn over WAGI!")
        nodes = httpx.get(f"http://127.0.0.1:{ports['api']}/api/v1/nodes",
                          headers={"authorization": f"Bearer {token}"}).json()
        assert [n["id"] for n in nodes] == ["dev-edge"]
        metrics = httpx.get(f"http://127.0.0.1:{ports['metrics']}/metrics").text
        assert "wasm_invoke_count_total" in metrics
        data = tmp_path / ".edgefn"
        node_token = (data / "dev-edge.token").read_text().strip()
        assert_no_token_in_argv_or_edge_env(proc.pid, token, node_token)
        assert_private(data)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    time.sleep(0.5)
    for port in ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)


def assert_no_token_in_argv_or_edge_env(pid: int, token: str, node_token: str) -> None:
    """What `ps` shows every user (/proc/PID/cmdline) holds no token, for any process
    of `edgefn dev`; the node's processes hold no admin token in their environment,
    and its workers no token at all."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    assert len(procs) >= 4, [p.cmdline() for p in procs]  # dev, cp, edge, its worker(s)
    for p in procs:
        cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline and node_token.encode() not in cmdline, cmdline
    edges = [p for p in procs if "edge" in p.cmdline() and "serve" in p.cmdline()]
    assert len(edges) == 1
    for p in [edges[0], *edges[0].children(recursive=True)]:
        environ = Path(f"/proc/{p.pid}/environ").read_bytes()
        assert token.encode() not in environ, p.cmdline()
    for worker in edges[0].children(recursive=True):
        environ = Path(f"/proc/{worker.pid}/environ").read_bytes()
        assert node_token.encode() not in environ, worker.cmdline()


def assert_private(data: Path) -> None:
    """Tokens, databases, artifacts, caches, compiled code and node state: 0600 files
    in 0700 directories."""
    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    secrets = [data / "dev-token", data / "dev-edge.token", data / "cp" / "controlplane.db",
               data / "cp" / "secret.key", data / "edge" / "state.json",
               data / "edge" / "compile.key"]
    for folder in ("cp/artifacts", "edge/cache", "edge/compiled"):
        files = [p for p in (data / folder).rglob("*") if p.is_file()]
        assert files, folder
        secrets += files
        assert all(mode(d) == 0o700 for d in [data / folder, *(data / folder).rglob("*")]
                   if d.is_dir()), folder
    wrong = [(str(p.relative_to(data)), oct(mode(p))) for p in secrets if mode(p) != 0o600]
    assert wrong == []
    assert [oct(mode(d)) for d in (data, data / "cp", data / "edge")] == ["0o700"] * 3
