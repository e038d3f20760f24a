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

On PostgreSQL (`database_url`) the cluster can run several control-plane
replicas (`add_replica`) sharing their keys, artifacts and node CA, with a
`Balancer` in front of their HTTP (and, under mTLS, one passing TLS through to
their node HTTPS ports); nodes then name every replica in their gRPC target
(`grpc_targets`).
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from edgefn.atomicfile import open_private, private_dir, write_atomic, write_secret
from edgefn.controlplane.pki.ca import CertificateAuthority
from edgefn.edge.node.credentials import NodeCertificate, without_credentials, write_new_key


class ClusterError(Exception):
    """A process of the cluster failed to start, or the API refused a call."""


# How long a process of the cluster may take to answer once started. Its death ends
# the wait at once; a live one importing on a loaded machine (tests on parallel
# workers, a busy CI runner) can take tens of seconds.
START_TIMEOUT_S = 90.0


_handed_out: set[int] = set()
_handed_lock = threading.Lock()


# Where `free_port` looks: from here up to the kernel's ephemeral range.
_PORTS_FROM = 20000


def _port_range() -> range:
    """The ports `free_port` hands out: below the kernel's ephemeral range, which
    outgoing connections take theirs from (a port found free there may be some
    connection's before the server that was to listen on it binds), and, under
    pytest-xdist, a share of them for each worker, so that two never hand out the
    same one. Empty where the range is not known: the kernel's choice then."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    start, stop = _PORTS_FROM, ephemeral
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker[2:].isdigit() and workers.isdigit() and int(workers) > 1:
        share = (stop - start) // int(workers)
        start += int(worker[2:]) * share
        stop = start + share
    return range(start, stop) if stop - start >= 1000 else range(0)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback port free now and never handed out before by this process (the
    kernel may give the same port to two calls in a row: a cluster's API and gRPC
    ports were once the same one, and the second server could not bind), taken from
    `_port_range`."""
    ports = _port_range()
    offset = secrets.randbelow(len(ports)) if ports else 0
    for i in range(len(ports)):
        port = ports[(offset + i) % len(ports)]
        with _handed_lock:
            if port in _handed_out or not _bindable(port):
                continue
            _handed_out.add(port)
            return port
    while True:  # no range here, or all of it taken: the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with _handed_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port


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
    stop_processes([proc], timeout)


def stop_processes(procs: Iterable[subprocess.Popen[bytes] | None],
                   timeout: float = 15.0) -> None:
    """`stop_process` for several at once: all are told to stop before any is waited
    for, so they wind down side by side."""
    running = [p for p in procs if p is not None]
    for proc in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in running:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
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


@dataclass
class Replica:
    """One control-plane process of a cluster on a shared database."""

    name: str
    data_dir: Path
    api_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    node_port: int = field(default_factory=free_port)  # its node HTTPS listener (mTLS)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/api/v1"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


class Balancer:
    """One HTTP address for several control planes, as a load balancer gives
    replicas in production: nodes download artifacts and send heartbeats through
    it, and the replicas sign artifact URLs with it (`EDGEFN_PUBLIC_URL`), so a URL
    minted by a replica that died still works.

    With `passthrough` it forwards a connection, not requests (TLS to the replicas'
    node HTTPS ports, which it cannot read): to the next backend that accepts it,
    closed when that backend closes; the client's retry goes to the next one.

    Otherwise it forwards bytes, not requests, but retries as an HTTP balancer does: a request
    sent to a backend that refuses it, or closes before answering (a replica dying
    takes connections into its backlog, then resets them), goes to the next
    backend, also on a keep-alive connection; one whose backend closed after
    answering goes to the next at its next request. A backend closing halfway
    through an answer closes the client's connection. HTTP/1.1 without pipelining:
    what the client sends after an answer began is taken as the next request.
    """

    def __init__(self, *, passthrough: bool = False) -> None:
        self.backends: list[int] = []
        self.passthrough = passthrough
        self._next = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            serve = self._pipe if self.passthrough else self._serve
            threading.Thread(target=serve, args=(client,), daemon=True).start()

    def _connect(self, request: list[bytes]) -> socket.socket | None:
        """A connection to the next backend that takes `request`; None if none does."""
        backends = list(self.backends)
        self._next = first = self._next + 1  # threads race on it: any start will do
        for i in range(len(backends)):
            try:
                upstream = socket.create_connection(
                    ("127.0.0.1", backends[(first + i) % len(backends)]), timeout=10)
                upstream.settimeout(None)
                for chunk in request:
                    upstream.sendall(chunk)
                return upstream
            except OSError:
                continue
        return None

    def _pipe(self, client: socket.socket) -> None:
        upstream = self._connect([])
        if upstream is None:
            client.close()
            return
        with contextlib.closing(client), contextlib.closing(upstream), \
                contextlib.suppress(OSError), selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ, upstream)
            sel.register(upstream, selectors.EVENT_READ, client)
            while True:
                for key, _ in sel.select():
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)

    def _serve(self, client: socket.socket) -> None:
        request: list[bytes] = []  # the client's bytes since its last answer began
        answer = _Answer()  # of `request`
        upstream: socket.socket | None = None

        def close() -> None:
            for sock in (client, upstream):
                if sock is not None:
                    sock.close()

        with contextlib.ExitStack() as cleanup, selectors.DefaultSelector() as sel:
            cleanup.callback(close)
            cleanup.enter_context(contextlib.suppress(OSError))  # the client went away
            sel.register(client, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is client:
                        data = client.recv(65536)
                        if not data:
                            return
                        if answer.began:
                            request, answer = [], _Answer()
                        request.append(data)
                        if upstream is not None:
                            try:
                                upstream.sendall(data)
                                continue
                            except OSError:
                                sel.unregister(upstream)
                                upstream.close()
                    else:
                        assert upstream is not None
                        try:
                            data = upstream.recv(65536)
                        except OSError:
                            data = b""
                        if data:
                            client.sendall(data)
                            answer.feed(data)
                            continue
                        sel.unregister(upstream)
                        upstream.close()
                        upstream = None
                        if answer.complete:
                            continue  # the next request goes to the next backend
                        if answer.began:
                            return  # cut halfway: so is the client's connection
                    upstream = self._connect(request)
                    if upstream is None:
                        return
                    sel.register(upstream, selectors.EVENT_READ)

    def close(self) -> None:
        self._server.close()


class _Answer:
    """How much of an HTTP answer has come: complete once its head and the body its
    Content-Length announces have (never, without one)."""

    def __init__(self) -> None:
        self.began = False
        self._head = bytearray()
        self._left: int | None = None  # body bytes still to come; -1: unknown

    def feed(self, data: bytes) -> None:
        self.began = True
        if self._left is not None:
            if self._left >= 0:
                self._left -= len(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            return
        length = -1
        for line in bytes(self._head[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
        self._left = -1 if length < 0 else end + 4 + length - len(self._head)

    @property
    def complete(self) -> bool:
        return self._left == 0


def fixed_response_module(status: int, body: str) -> bytes:
    """An edge-v1 module whose every answer is `status` with `body` (ASCII, no
    headers): a version to deploy in tests and benchmarks that tells itself apart."""
    import wasmtime

    response = f"{status}\n\n{body}".encode()
    escaped = "".join(f"\\{b:02x}" for b in response)
    return bytes(wasmtime.wat2wasm(f"""
      (module
        (memory (export "memory") 2)
        (data (i32.const 0) "{escaped}")
        (func (export "alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
          (memory.copy (local.get 8) (i32.const 0) (i32.const {len(response)}))
          (i32.const {len(response)})))
    """))


def grpc_targets(replicas: list[Replica]) -> str:
    """One gRPC target naming every replica: a node connects to the first that
    answers and, when its stream breaks, reconnects to the next."""
    return "ipv4:" + ",".join(r.grpc_target for r in replicas)


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
        database_url: str | None = None,
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
        # Flags every edge node of the cluster starts with, besides its own.
        self.edge_args: list[str] = []
        self.project_id = ""
        self.env = {**os.environ, "EDGEFN_BOOTSTRAP_TOKEN": token,
                    "EDGEFN_HEARTBEAT_INTERVAL_S": str(heartbeat_interval_s),
                    "PYTHONUNBUFFERED": "1"}
        # Control planes beyond the first (`add_replica`), on `database_url`.
        self.replicas: dict[str, Replica] = {}
        # What control planes get and edge nodes never see (`share_database`).
        self.cp_env: dict[str, str] = {}
        # In front of the replicas' HTTP, once there may be several.
        self.balancer: Balancer | None = None
        # How long a control plane or node may take to listen (more on a loaded machine).
        self.start_timeout_s = START_TIMEOUT_S
        # In front of the replicas' node HTTPS ports, under mTLS.
        self.node_balancer: Balancer | None = None
        if database_url is not None:
            self.share_database(database_url)

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
             *self._mtls_flags(self.node_port)],
            env={**self.env, **self.cp_env}, stdout=log, stderr=log,
        )

        def up() -> bool:
            if self.cp_proc is not None and self.cp_proc.poll() is not None:
                raise ClusterError((self.root / "cp.log").read_text()[-3000:])
            return httpx.get(f"{self.api}/nodes", headers=self.headers,
                             timeout=2).status_code == 200

        wait_until("the control plane", up, self.start_timeout_s)
        if self.balancer is not None:
            self.balancer.backends.append(self.api_port)
        if self.node_balancer is not None:
            self.node_balancer.backends.append(self.node_port)

    def _mtls_flags(self, node_port: int) -> list[str]:
        return ["--node-mtls", "--node-port", str(node_port)] if self.mtls else []

    def stop_cp(self) -> None:
        stop_process(self.cp_proc)

    # -- several control planes -------------------------------------------------
    def share_database(self, database_url: str) -> None:
        """Every control plane of this cluster runs on `database_url` (PostgreSQL)
        with the keys, the artifact directory and (under mTLS) the node CA of the
        first: what replicas of one cluster must share (docs/operations.md, Several
        control planes).

        The node CA is made here, once, in a directory every replica is given (as an
        operator gives them the same `--node-ca-cert/--node-ca-key` files), rather
        than by the first replica at its start: replicas starting together would
        each make one, and its key stays out of the database and its backups."""
        self.cp_env.update({
            "EDGEFN_DATABASE_URL": database_url,
            "EDGEFN_SECRET_KEY": secrets.token_urlsafe(48),
            "EDGEFN_AUDIT_KEY": secrets.token_urlsafe(48),
            "EDGEFN_SECRETS_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "EDGEFN_ARTIFACT_DIR": str(self.root / "artifacts"),
            "EDGEFN_REPLICA_ID": "cp",
        })
        self.balancer = Balancer()
        self.cp_env["EDGEFN_PUBLIC_URL"] = self.balancer.url
        if self.mtls:
            ca_dir = private_dir(self.root / "node-ca")
            CertificateAuthority.load_or_create(ca_dir)
            self.cp_env.update({"EDGEFN_NODE_CA_CERT": str(ca_dir / "ca.pem"),
                                "EDGEFN_NODE_CA_KEY": str(ca_dir / "ca.key")})
            self.node_balancer = Balancer(passthrough=True)

    @property
    def cp_url(self) -> str:
        """Where nodes reach the control plane's HTTP: the balancer, once there is one."""
        if self.balancer is not None:
            return self.balancer.url
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def first_replica(self) -> Replica:
        """The control plane `start_cp` runs, as a replica."""
        return Replica("cp", self.root / "cp", self.api_port, self.grpc_port, self.cp_proc,
                       self.node_port)

    def add_replica(self, name: str) -> Replica:
        """Start another control plane on the cluster's database (after `start_cp`,
        which migrated it)."""
        replica = Replica(name, self.root / name)
        log = open_private(self.root / f"{name}.log")
        replica.proc = spawn(
            [sys.executable, "-m", "edgefn", "cp", "serve", "--port", str(replica.api_port),
             "--grpc-port", str(replica.grpc_port), "--data-dir", str(replica.data_dir),
             *self._mtls_flags(replica.node_port)],
            env={**self.env, **self.cp_env, "EDGEFN_REPLICA_ID": name}, stdout=log, stderr=log,
        )
        self.replicas[name] = replica
        if self.balancer is not None:
            self.balancer.backends.append(replica.api_port)
        if self.node_balancer is not None:
            self.node_balancer.backends.append(replica.node_port)

        def up() -> bool:
            if replica.proc is not None and replica.proc.poll() is not None:
                raise ClusterError((self.root / f"{name}.log").read_text()[-3000:])
            return httpx.get(f"{replica.api}/nodes", headers=self.headers,
                             timeout=2).status_code == 200

        wait_until(f"control plane {name}", up, self.start_timeout_s)
        return replica

    def use(self, replica: Replica) -> None:
        """Send the cluster's API calls to `replica` from now on."""
        self.api_port = replica.api_port

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
        """Where nodes send HTTP heartbeats: the node HTTPS port under mTLS (through
        the balancer in front of every replica's, once there is one)."""
        if self.node_balancer is not None:
            return self.node_balancer.url.replace("http://", "https://")
        if self.mtls:
            return f"https://127.0.0.1:{self.node_port}"
        return f"http://127.0.0.1:{self.api_port}"

    def add_edge(self, node_id: str, pop_id: str, *, workers: int = 1,
                 **labels: str) -> Edge:
        return self.add_edges([(node_id, pop_id)], workers=workers, **labels)[0]

    def add_edges(self, nodes: list[tuple[str, str]], *, workers: int = 1,
                  **labels: str) -> list[Edge]:
        """Register and start a node for each (node id, POP id); they start side by
        side, and this returns once every one listens."""
        edges = []
        for node_id, pop_id in nodes:
            token = self.register_node(node_id, pop_id, labels)
            edge = Edge(node_id, pop_id, labels, token, self.root / node_id, workers=workers)
            self.edges[node_id] = edge
            self._spawn_edge(edge, None)
            edges.append(edge)
        for edge in edges:
            self._wait_edge(edge)
        return edges

    def start_edge(self, edge: Edge, *, env: dict[str, str] | None = None) -> None:
        """Start the node with its token in a file; or, when `env` is given, in that
        environment as EDGEFN_NODE_TOKEN (the operator's other way)."""
        self._spawn_edge(edge, env)
        self._wait_edge(edge)

    def _spawn_edge(self, edge: Edge, env: dict[str, str] | None) -> None:
        log = open_private(self.root / f"{edge.node_id}.log")
        cmd = [sys.executable, "-m", "edgefn", "edge", "serve", "--port", str(edge.port),
               "--metrics-port", str(edge.metrics_port), "--data-dir", str(edge.data_dir),
               "--cp-url", self.node_url,
               "--grpc-url", edge.grpc_url or f"127.0.0.1:{self.grpc_port}",
               "--node-id", edge.node_id,
               "--pop-id", edge.pop_id, "--workers", str(edge.workers), "--threads", "4",
               *self.edge_args]
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

    def _wait_edge(self, edge: Edge) -> None:
        def listening() -> bool:
            if edge.proc is not None and edge.proc.poll() is not None:
                raise ClusterError((self.root / f"{edge.node_id}.log").read_text()[-3000:])
            with socket.create_connection(("127.0.0.1", edge.port), timeout=0.2):
                return True

        wait_until(f"edge {edge.node_id}", listening, self.start_timeout_s)

    def stop_edge(self, edge: Edge) -> None:
        stop_process(edge.proc)

    def close(self) -> None:
        stop_processes([*(edge.proc for edge in self.edges.values()),
                        *(replica.proc for replica in self.replicas.values()), self.cp_proc])
        for balancer in (self.balancer, self.node_balancer):
            if balancer is not None:
                balancer.close()

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
