"""`edgefn dev`: one command runs a control plane and a node with the examples deployed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
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
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    time.sleep(0.5)
    for port in ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
