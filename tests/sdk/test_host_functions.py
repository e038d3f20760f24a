"""Every `edge` host function through the Rust and AssemblyScript SDKs, in the edge
runtime: values longer than the SDK's first buffer arrive whole, codes map to their
errors, and a response over the cap is 502 rather than cut."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefn.edge import metrics
from edgefn.edge.capabilities.secrets import FileSecrets, SecretsCapability
from edgefn.edge.spec import FunctionSpec
from tests.conftest import SharedBuilds
from tests.edge.conftest import EdgeHarness, HarnessFactory
from tests.sdk.conftest import examples, find_tool

GUESTS = Path(__file__).parent / "guests"
SECRET = "s3cr3t-" + "v" * 2000  # over the SDKs' first 1024-byte buffer
LONG = "L" * 3000
CAP = 8192


@pytest.fixture(scope="session")
def hostcalls(shared_builds: SharedBuilds) -> Callable[[str], Path]:
    """The hostcalls guest of a language, compiled at most once a run."""

    def module(lang: str) -> Path:
        tool = find_tool(lang)
        source = GUESTS / {"rust": "hostcalls.rs", "as": "hostcalls.ts"}[lang]

        def build(folder: Path) -> None:
            out = folder / "hostcalls.wasm"
            examples.build(examples.Example(GUESTS, lang, source, out.name, False), out, tool)

        return shared_builds(f"hostcalls-{lang}", build) / "hostcalls.wasm"

    return module


def _edge(make_edge: HarnessFactory, tmp_path: Path, module: Path, fid: str) -> EdgeHarness:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({fid: {"API_KEY": SECRET}}))
    os.chmod(path, 0o600)
    source = FileSecrets(path)

    def secrets(spec: FunctionSpec) -> SecretsCapability | None:
        return SecretsCapability.configure(spec, source)

    edge = make_edge(secrets_factory=secrets)
    edge.deploy(FunctionSpec.model_validate({
        "id": fid, "version": "1.0.0", "artifact": str(module), "memory_pages": 32,
        "max_response_bytes": CAP, "env": {"GREETING": "hi", "LONG": LONG},
        "secrets": ["API_KEY"], "routes": [{"host": "*", "path": "/*"}],
    }))
    return edge


@pytest.mark.parametrize("lang", ["rust", "as"])
def test_every_host_function(lang: str, hostcalls: Callable[[str], Path],
                             make_edge: HarnessFactory, tmp_path: Path) -> None:
    fid = f"hostcalls-{lang}"
    edge = _edge(make_edge, tmp_path, hostcalls(lang), fid)

    def body(target: str, headers: list[tuple[bytes, bytes]] | None = None) -> str:
        resp = edge.request("GET", target, headers=headers)
        assert resp.status == 200, resp.body
        return resp.body.decode()

    resp = edge.request("GET", "/id")
    assert resp.body.decode() == dict(resp.headers)["x-request-id"]
    assert body("/header?name=x-a", [(b"x-a", b"b")]) == "b"
    assert body("/header?name=x-none") == "error -1"
    assert body("/secret?name=API_KEY") == SECRET
    assert body("/secret?name=OTHER") == "error -2"
    assert body("/env?name=GREETING") == "hi"
    assert body("/env?name=LONG") == LONG
    assert body("/env?name=NOPE") == "error -1"
    assert body("/kv?key=k") == "error -2"  # KV not enabled

    assert body("/log") == "logged"
    logs = [r for r in edge.logs() if r.get("type") == "function_log" and r["source"] == "log"]
    assert [r["level"] for r in logs] == ["debug", "info", "notice", "warn", "error"]
    counter = metrics.GUEST_METRIC.labels(fid, "", "hits", "route=a")
    before = counter._value.get()
    assert body("/metric") == "counted"
    assert counter._value.get() == before + 1.5

    assert len(edge.request("GET", "/big?n=100").body) == 100
    assert edge.request("GET", f"/big?n={CAP}").status == 502
