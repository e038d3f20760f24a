"""Edge test helpers: a runtime over fixture modules, and a request builder."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from edgefn.edge.cache import ArtifactCache
from edgefn.edge.host import FetchBinding, KvBinding
from edgefn.edge.logs import JsonLog
from edgefn.edge.pool import PoolManager
from edgefn.edge.runtime import HttpRequest, HttpResponse, Runtime
from edgefn.edge.spec import FunctionSpec, NodeState
from edgefn.sandbox import Engine
from tests.conftest import wasm_path


def fn(fid: str, module: str, path: str = "", **extra: Any) -> FunctionSpec:
    """A function serving fixture `module` at `path` (default `/{fid}/*`)."""
    route = {"host": "*", "path": path or f"/{fid}/*"}
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
        hdrs = [(b"host", host.encode())] + list(headers or [])
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
        kv_factory: Callable[[FunctionSpec], KvBinding | None] | None = None,
        fetch_factory: Callable[[FunctionSpec], FetchBinding | None] | None = None,
    ) -> EdgeHarness:
        log_path = tmp_path / f"edge-{len(made)}.log"
        runtime = Runtime(
            engine=engine,
            cache=ArtifactCache(tmp_path / "cache"),
            pools=PoolManager(memory_budget_bytes=memory_budget_bytes),
            log_sink=JsonLog(log_path),
            node_id="node-test",
            max_request_body_bytes=max_request_body_bytes,
            kv_factory=kv_factory,
            fetch_factory=fetch_factory,
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
