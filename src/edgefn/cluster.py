"""A local cluster of real processes: a control plane and edge nodes on loopback.

`edgefn dev` runs one with a single node; the end-to-end tests and the
deployment benchmark run several. Each part is the same `edgefn` command an
operator runs, started as a child process with its own data directory. No
credential is ever on a command line (where `ps` shows it to every user): the
control plane gets its admin token in its environment, each node its node token
in a 0600 file, and nodes get no other credential.

Nodes and the control plane talk over mutual TLS unless the cluster is made with
`mtls=False`: each node makes its key, is registered with a CSR for it, and
connects with the certificate it got (files beside its data directory).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgefn.atomicfile import open_private, write_atomic, write_secret
from edgefn.edge.node.credentials import NodeCertificate, without_credentials, write_new_key


class ClusterError(Exception):
    """A process of the cluster failed to start, or the API refused a call."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise ClusterError(f"timed out waiting for {what}; last: {last!r}")


def spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    """Start a process in a session of its own, so that stopping it reaches its workers."""
    return subprocess.Popen(cmd, start_new_session=True, **kw)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left of it."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def node_files(directory: Path, node_id: str) -> NodeCertificate:
    """Where a node of the cluster keeps its certificate, key and the CA it trusts."""
    return NodeCertificate(directory / f"{node_id}.pem", directory / f"{node_id}.key",
                           directory / f"{node_id}-ca.pem")


@dataclass
class Edge:
    node_id: str
    pop_id: str
    labels: dict[str, str]
    token: str
    data_dir: Path
    workers: int = 1
    # Where the node looks for the gRPC stream; None: the cluster's control plane.
    grpc_url: str | None = None
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_file(self) -> Path:
        """Where the node reads its token: beside its data directory, not in it."""
        return self.data_dir.parent / f"{self.node_id}.token"

    @property
    def tls(self) -> NodeCertificate:
        """Its client certificate, key and CA files, beside its token file."""
        return node_files(self.data_dir.parent, self.node_id)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5, **kw)


class Cluster:
    def __init__(
        self,
        root: Path,
        *,
        token: str,
        api_port: int | None = None,
        grpc_port: int | None = None,
        heartbeat_interval_s: float = 1.0,
        project: str = "default",
        mtls: bool = True,
        node_port: int | None = None,
    ) -> None:
        self.root = root
        self.mtls = mtls
        self.node_port = node_port or free_port()
        self.token = token
        self.project = project
        self.api_port = api_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.cp_proc: subprocess.Popen[bytes] | None = None
        self.edges: dict[str, Edge] = {}
        self.project_id = ""
        self.env = {**os.environ, "EDGEFN_BOOTSTRAP_TOKEN": token,
                    "EDGEFN_HEARTBEAT_INTERVAL_S": str(heartbeat_interval_s),
                    "PYTHONUNBUFFERED": "1"}

    # -- processes ------------------------------------------------------------
    @property
    def edge_env(self) -> dict[str, str]:
        """What an edge node starts with: `env` without anything that opens the API."""
        return without_credentials(self.env)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v1"

    def start_cp(self) -> None:
        log = open_private(self.root / "cp.log")
        self.cp_proc = spawn(
            [sys.executable, "-m", "edgefn", "cp", "serve", "--port", str(self.api_port),
             "--grpc-port", str(self.grpc_port), "--data-dir", str(self.root / "cp"),
             *(["--node-mtls", "--node-port", str(self.node_port)] if self.mtls else [])],
            env=self.env, stdout=log, stderr=log,
        )

        def up() -> bool:
            if self.cp_proc is not None and self.cp_proc.poll() is not None:
                raise ClusterError((self.root / "cp.log").read_text()[-3000:])
            return httpx.get(f"{self.api}/nodes", headers=self.headers,
                             timeout=2).status_code == 200

        wait_until("the control plane", up)

    def stop_cp(self) -> None:
        stop_process(self.cp_proc)

    def register_node(self, node_id: str, pop_id: str, labels: dict[str, str]) -> str:
        """Register a node with the control plane; its token is shown only now. Under
        mTLS the node's key is made first, in its files, and the answer's certificate
        and CA are kept beside it."""
        body: dict[str, Any] = {"id": node_id, "pop_id": pop_id, "labels": labels}
        files = node_files(self.root, node_id)
        if self.mtls:
            assert files.key_file is not None
            body["csr"] = write_new_key(files.key_file, node_id)
        resp = self.call("POST", "/nodes", json=body)
        if self.mtls:
            for path, pem in ((files.cert_file, resp["certificate"]),
                              (files.ca_file, resp["ca_certificate"])):
                assert path is not None
                write_atomic(path, [pem.encode()])
        return str(resp["token"])

    @property
    def node_url(self) -> str:
        """Where nodes send HTTP heartbeats: the node HTTPS port under mTLS."""
        if self.mtls:
            return f"https://127.0.0.1:{self.node_port}"
        return f"http://127.0.0.1:{self.api_port}"

    def add_edge(self, node_id: str, pop_id: str, *, workers: int = 1,
                 **labels: str) -> Edge:
        token = self.register_node(node_id, pop_id, labels)
        edge = Edge(node_id, pop_id, labels, token, self.root / node_id, workers=workers)
        self.edges[node_id] = edge
        self.start_edge(edge)
        return edge

    def start_edge(self, edge: Edge, *, env: dict[str, str] | None = None) -> None:
        """Start the node with its token in a file; or, when `env` is given, in that
        environment as EDGEFN_NODE_TOKEN (the operator's other way)."""
        log = open_private(self.root / f"{edge.node_id}.log")
        cmd = [sys.executable, "-m", "edgefn", "edge", "serve", "--port", str(edge.port),
               "--metrics-port", str(edge.metrics_port), "--data-dir", str(edge.data_dir),
               "--cp-url", self.node_url,
               "--grpc-url", edge.grpc_url or f"127.0.0.1:{self.grpc_port}",
               "--node-id", edge.node_id,
               "--pop-id", edge.pop_id, "--workers", str(edge.workers), "--threads", "4"]
        for k, v in edge.labels.items():
            cmd += ["--label", f"{k}={v}"]
        if self.mtls:
            tls = edge.tls
            cmd += ["--node-cert", str(tls.cert_file), "--node-key", str(tls.key_file),
                    "--cp-ca-file", str(tls.ca_file)]
        if env is None:
            write_secret(edge.token_file, edge.token)
            cmd += ["--node-token-file", str(edge.token_file)]
            env = self.edge_env
        else:
            env = {**env, "EDGEFN_NODE_TOKEN": edge.token}
        edge.proc = spawn(cmd, env=env, stdout=log, stderr=log)

        def listening() -> bool:
            if edge.proc is not None and edge.proc.poll() is not None:
                raise ClusterError((self.root / f"{edge.node_id}.log").read_text()[-3000:])
            with socket.create_connection(("127.0.0.1", edge.port), timeout=0.2):
                return True

        wait_until(f"edge {edge.node_id}", listening)

    def stop_edge(self, edge: Edge) -> None:
        stop_process(edge.proc)

    def close(self) -> None:
        for edge in self.edges.values():
            stop_process(edge.proc)
        stop_process(self.cp_proc)

    # -- the API --------------------------------------------------------------
    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def call(self, method: str, path: str, **kw: Any) -> Any:
        resp = httpx.request(method, self.api + path, headers=self.headers, timeout=10, **kw)
        if resp.status_code >= 300:
            raise ClusterError(f"{method} {path}: {resp.status_code} {resp.text}")
        return resp.json() if resp.content else None

    def function(self, name: str, **fields: Any) -> str:
        if not self.project_id:
            self.project_id = self.call("POST", "/projects", json={"name": self.project})["id"]
        body = {"name": name, "owner_project_id": self.project_id, **fields}
        return str(self.call("POST", "/functions", json=body)["id"])

    def upload(self, fid: str, version: str, wasm: bytes) -> dict[str, Any]:
        return dict(self.call("POST", f"/functions/{fid}/versions", data={"version": version},
                              files={"artifact": ("f.wasm", wasm, "application/wasm")}))

    def route(self, fid: str, path: str, host: str = "*") -> None:
        self.call("POST", "/routes", json={"host": host, "path": path, "function_id": fid})

    def deploy(self, fid: str, version: str, **extra: Any) -> str:
        return str(self.call("POST", f"/functions/{fid}/deploy",
                             json={"version": version, **extra})["deployment_id"])

    def deployment(self, dep_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/deployments/{dep_id}"))

    def node_states(self, dep_id: str) -> dict[str, str]:
        return {n["node_id"]: n["state"] for n in self.deployment(dep_id)["nodes"]}
