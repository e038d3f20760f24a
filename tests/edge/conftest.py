"""Edge test helpers: a runtime over fixture modules, a request builder, KV stores
(a fresh SQLite file, or the Redis at EDGEFN_TEST_REDIS_URL with every test in
namespaces of its own, removed after it), and HTTP servers on loopback (artifacts,
an OTLP collector)."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import redis

from edgefn.cluster import free_port
from edgefn.contract import ResourceCaps
from edgefn.edge.cache import ArtifactCache
from edgefn.edge.capabilities.secrets import SecretsCapability
from edgefn.edge.kv.base import KvStore
from edgefn.edge.kv.redis import RedisKvStore
from edgefn.edge.kv.sqlite import SqliteKvStore
from edgefn.edge.logs import JsonLog
from edgefn.edge.spec import FunctionSpec, NodeState
from edgefn.edge.tracing import Tracer
from edgefn.edge.worker.fairness import PenaltyBox
from edgefn.edge.worker.host_functions import FetchBinding, KvBinding
from edgefn.edge.worker.pool import PoolManager
from edgefn.edge.worker.runtime import HttpRequest, HttpResponse, Runtime
from edgefn.sandbox import Engine
from tests.conftest import wasm_path
from tests.loopback import QuietHandler, loopback


def fn(fid: str, module: str, path: str = "", host: str = "*", **extra: Any) -> FunctionSpec:
    """A function serving fixture `module` at `path` (default `/{fid}/*`) on `host`."""
    route = {"host": host, "path": path or f"/{fid}/*"}
    data: dict[str, Any] = {"id": fid, "version": "1.0.0", "artifact": str(wasm_path(module)),
                            "routes": [route]}
    data.update(extra)
    return FunctionSpec.model_validate(data)


class EdgeHarness:
    def __init__(self, runtime: Runtime, log_path: Path) -> None:
        self.runtime = runtime
        self.log_path = log_path

    def deploy(self, *specs: FunctionSpec, unavailable: dict[str, str] | None = None) -> None:
        gen = self.runtime.generation + 1
        self.runtime.apply_state(
            NodeState(generation=gen, functions=specs, unavailable=unavailable or {})
        )

    def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        host: str = "edge.test",
    ) -> HttpResponse:
        path, _, query = target.partition("?")
        hdrs = [(b"host", host.encode()), *(headers or [])]
        stream = BytesIO(body)
        return self.runtime.handle(
            HttpRequest(method=method, host=host, path=path, query=query, headers=hdrs,
                        read_body=stream.read, content_length=len(body))
        )

    def logs(self) -> list[dict[str, Any]]:
        self.runtime.log_sink.flush()
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]

    def pool(self, fid: str) -> Any:
        matches = [p for p in self.runtime.pools.pools() if p.spec.id == fid]
        assert matches, f"no pool for {fid}"
        return matches[-1]


HarnessFactory = Callable[..., EdgeHarness]


@pytest.fixture
def make_edge(tmp_path: Path, engine: Engine) -> Iterator[HarnessFactory]:
    made: list[Runtime] = []

    def factory(
        *,
        memory_budget_bytes: int = 256 * 1024 * 1024,
        max_request_body_bytes: int = 8 * 1024 * 1024,
        max_inflight_per_function: int = 64,
        kv_factory: Callable[[FunctionSpec], KvBinding | None] | None = None,
        fetch_factory: Callable[[FunctionSpec], FetchBinding | None] | None = None,
        secrets_factory: Callable[[FunctionSpec], SecretsCapability | None] | None = None,
        tracer: Tracer | None = None,
        caps: ResourceCaps | None = None,
        penalty: PenaltyBox | None = None,
    ) -> EdgeHarness:
        log_path = tmp_path / f"edge-{len(made)}.log"
        runtime = Runtime(
            engine=engine,
            cache=ArtifactCache(tmp_path / "cache"),
            pools=PoolManager(memory_budget_bytes=memory_budget_bytes),
            log_sink=JsonLog(log_path),
            node_id="node-test",
            max_request_body_bytes=max_request_body_bytes,
            max_inflight_per_function=max_inflight_per_function,
            kv_factory=kv_factory,
            fetch_factory=fetch_factory,
            secrets_factory=secrets_factory,
            tracer=tracer,
            caps=caps,
            penalty=penalty,
        )
        made.append(runtime)
        return EdgeHarness(runtime, log_path)

    yield factory
    for runtime in made:
        runtime.close()
        runtime.log_sink.close()


@pytest.fixture
def edge(make_edge: HarnessFactory) -> EdgeHarness:
    return make_edge()


REDIS_URL = os.environ.get("EDGEFN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"no Redis at {REDIS_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


class Namespaces:
    """Namespaces (valid function ids) unique to one test, all sharing one prefix."""

    def __init__(self) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:12]}"
        self._made = 0

    def __call__(self) -> str:
        self._made += 1
        return f"{self.prefix}-{self._made}"


@pytest.fixture
def new_namespace() -> Namespaces:
    return Namespaces()


@pytest.fixture(params=["sqlite", "redis"])
def kv_store(
    request: pytest.FixtureRequest, tmp_path: Path, new_namespace: Namespaces
) -> Iterator[KvStore]:
    if request.param == "sqlite":
        store: KvStore = SqliteKvStore(tmp_path / "kv.sqlite3")
        yield store
        store.close()
        return
    url = request.getfixturevalue("redis_url")
    store = RedisKvStore(url)
    yield store
    store.close()
    drop_redis_namespaces(url, new_namespace.prefix)


def drop_redis_namespaces(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for pattern in (f"edgefn:kv:{{{prefix}-*", f"edgefn:kvindex:{{{prefix}-*"):
            for key in client.scan_iter(match=pattern, count=1000):
                client.delete(key)
    finally:
        client.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    return free_port()


@dataclass
class Truncated:
    """An artifact whose download promises `data` and stops halfway."""

    data: bytes


@dataclass
class ArtifactServer:
    """A real HTTP server on loopback serving `blobs` by path."""

    url: str
    blobs: dict[str, bytes | Truncated]


@pytest.fixture
def artifact_server() -> Iterator[ArtifactServer]:
    blobs: dict[str, bytes | Truncated] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            item = blobs.get(self.path)
            if item is None:
                self.send_error(404)
                return
            data = item.data if isinstance(item, Truncated) else item
            self.send_response(200)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if isinstance(item, Truncated):
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield ArtifactServer(f"http://127.0.0.1:{httpd.server_address[1]}", blobs)
    httpd.shutdown()
    httpd.server_close()


@dataclass
class Collector:
    """A real HTTP server standing in for an OpenTelemetry collector."""

    url: str
    posts: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    arrived: threading.Event = field(default_factory=threading.Event)

    def spans(self) -> list[dict[str, Any]]:
        return [span for _, _, body in self.posts for rs in body["resourceSpans"]
                for ss in rs["scopeSpans"] for span in ss["spans"]]


@pytest.fixture
def collector() -> Iterator[Collector]:
    state = Collector(url="")

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            state.posts.append((self.path, self.headers["content-type"], json.loads(body)))
            self.send_response(state.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            state.arrived.set()

    with loopback(Handler) as state.url:
        yield state
