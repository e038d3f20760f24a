"""`edgefn dev`: one command runs a control plane and a node with the examples deployed;
against it, a project from `edgefn init` in each language deploys as it is and is
served at the URL `edgefn deploy` prints."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from edgefn.builder.toolchains import driver
from edgefn.cli.build import detect_language
from edgefn.cli.init import LANGS
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
        assert httpx.get(edge + "/c/hello").text.startswith("Hello from edgefn!")
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


@dataclass
class Dev:
    """A running `edgefn dev`, and the environment the author's commands run in."""

    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    edge_port: int


def _start_dev(folder: Path, ports: dict[str, int], out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "edgefn", "dev", "--api-port", str(ports["api"]),
             "--edge-port", str(ports["edge"]), "--metrics-port", str(ports["metrics"]),
             "--grpc-port", str(ports["grpc"]), "--node-port", str(ports["node"])],
            cwd=folder, stdout=sink, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items()
                 if k not in ("EDGEFN_BOOTSTRAP_TOKEN", "EDGEFN_EDGE_URL")},
        )


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """One `edgefn dev` for every language's project, with the two examples of the
    quick start deployed (the routes a new project must not collide with)."""
    folder = tmp_path_factory.mktemp("dev")
    for example in ("hello-c", "hello-wagi"):
        shutil.copytree(ROOT / "examples" / example, folder / "examples" / example)
    ports = {name: free_port() for name in ("api", "edge", "metrics", "grpc", "node")}
    out = folder / "dev.out"
    proc = _start_dev(folder, ports, out)
    try:
        wait_until("edgefn dev to be ready",
                   lambda: proc.poll() is None and b"edgefn dev is running" in out.read_bytes(),
                   timeout=90)
        token = (folder / ".edgefn" / "dev-token").read_text().strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFN_")}
        env |= {"EDGEFN_CP_URL": f"http://127.0.0.1:{ports['api']}", "EDGEFN_TOKEN": token,
                "XDG_CONFIG_HOME": str(folder / "cli-config")}
        yield Dev(proc, env, ports["edge"])
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, out.read_text()[-3000:]


def _need_toolchain(lang: str) -> None:
    """The control plane builds the project: its toolchain must be here (CI: it is)."""
    probe = driver("assemblyscript" if lang == "as" else lang).probe()
    if not probe.ok:
        message = f"{lang}: {probe.detail}; install: {probe.install}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.parametrize("lang", LANGS)
def test_init_then_deploy_prints_a_live_url(dev: Dev, lang: str, tmp_path: Path) -> None:
    """`edgefn init NAME --lang L && cd NAME && edgefn deploy` against `edgefn dev`:
    the source is built on the control plane, and the URL printed answers with the
    template's golden responses."""
    _need_toolchain(lang)
    name = "hello" if lang == "c" else f"hello-{lang}"  # C: the quick start's own line

    def edgefn(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edgefn", *args], cwd=cwd, env=dev.env,
                              capture_output=True, text=True, timeout=300)

    made = edgefn("init", name, "--lang", lang, cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    project = tmp_path / name
    assert detect_language(project) is not None and not (project / "hello.wasm").exists()
    deployed = edgefn("deploy", cwd=project)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "building" in deployed.stdout and f"deployed {name} 0.1.0" in deployed.stdout
    urls = re.findall(r"^serving at (\S+)$", deployed.stdout, re.MULTILINE)
    assert urls == [f"http://127.0.0.1:{dev.edge_port}/{name}"], deployed.stdout

    served = urlsplit(urls[0]).path
    cases = json.loads((project / "golden.json").read_text())["cases"]
    assert cases
    for case in cases:
        path = case["request"]["path"]
        assert path.startswith(served), path
        got = httpx.get(urls[0] + path.removeprefix(served), timeout=10)
        want = case["response"]
        assert (got.status_code, got.text) == (want["status"], want["body"]), case["name"]
        for header, value in want["headers"].items():
            assert got.headers[header] == value, (case["name"], header)
