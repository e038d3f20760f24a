"""`edgefn test DIR`: a function folder's golden test, `golden.json`, run in-process by
the edge runtime `edgefn edge serve` uses (routing, host functions, KV, egress), with
an optional stub upstream on loopback for functions that fetch."""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ConfigDict, Field

from edgefn.edge.spec import FunctionSpec, NodeState, load_function_dir

GOLDEN_FILE = "golden.json"
LOOPBACK = "127.0.0.0/8"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GoldenRequest(_Model):
    method: str = "GET"
    path: str = "/"
    host: str = "localhost"
    headers: dict[str, str] = Field(default_factory=dict)
    body: str = ""


class GoldenResponse(_Model):
    status: int = 200
    # Headers the response must carry (names without case); others may be present.
    headers: dict[str, str] = Field(default_factory=dict)
    # Exactly one way to check the body, or none to leave it unchecked.
    body: str | None = None
    body_json: Any = None
    body_contains: str | None = None


class GoldenCase(_Model):
    name: str = ""
    request: GoldenRequest
    response: GoldenResponse


class Upstream(_Model):
    """A stub HTTP server on loopback, its URL given to the function as env `env`."""

    env: str = "UPSTREAM_URL"
    status: int = 200
    content_type: str = "text/plain"
    body: str = ""


class Golden(_Model):
    """`golden.json`: requests in order (state such as KV carries over between them)
    and the response each must get."""

    cases: tuple[GoldenCase, ...]
    upstream: Upstream | None = None


@dataclass(frozen=True)
class CaseResult:
    name: str
    failures: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.failures


def read_golden(folder: Path) -> Golden:
    return Golden.model_validate_json((folder / GOLDEN_FILE).read_bytes())


def compare(expected: GoldenResponse, status: int, headers: list[tuple[str, str]],
            body: bytes) -> tuple[str, ...]:
    """What differs between a response and the golden one, empty when it matches."""
    failures = []
    if status != expected.status:
        failures.append(f"status {status}, expected {expected.status}")
    got: dict[str, str] = {}
    for name, value in headers:
        got.setdefault(name.lower(), value)
    for name, value in expected.headers.items():
        if got.get(name.lower()) != value:
            failures.append(f"header {name}: {got.get(name.lower())!r}, expected {value!r}")
    text = body.decode("utf-8", "replace")
    if expected.body is not None and text != expected.body:
        failures.append(f"body {text!r}, expected {expected.body!r}")
    if expected.body_contains is not None and expected.body_contains not in text:
        failures.append(f"body {text!r} does not contain {expected.body_contains!r}")
    if expected.body_json is not None:
        try:
            parsed = json.loads(body)
        except ValueError:
            failures.append(f"body {text!r} is not JSON")
        else:
            if parsed != expected.body_json:
                failures.append(f"JSON body {parsed!r}, expected {expected.body_json!r}")
    return tuple(failures)


@contextmanager
def stub_upstream(stub: Upstream) -> Iterator[str]:
    """Serves `stub` on loopback while the block runs; yields its URL."""
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            data = stub.body.encode()
            self.send_response(stub.status)
            self.send_header("content-type", stub.content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


def with_upstream(manifest: dict[str, Any], env: str, url: str) -> dict[str, Any]:
    """A `function.json` object with the stub's URL in `env` and loopback allowed for
    its fetches (the node must also open loopback: `allow_private_egress`)."""
    fetch = dict(manifest.get("http_fetch") or {})
    fetch["allow_hosts"] = [*fetch.get("allow_hosts", ()), "127.0.0.1"]
    fetch["allow_private"] = True
    return {**manifest, "env": {**manifest.get("env", {}), env: url}, "http_fetch": fetch}


def run_golden(folder: Path, *, kv_url: str = "") -> list[CaseResult]:
    """Loads the function in `folder` into a fresh edge runtime and replays its golden
    cases; KV goes to `kv_url` (default: a SQLite file of its own)."""
    from edgefn.edge.bootstrap import build_runtime
    from edgefn.edge.logs import JsonLog
    from edgefn.edge.settings import EdgeSettings
    from edgefn.edge.worker.runtime import HttpRequest

    golden = read_golden(folder)
    spec = load_function_dir(folder)
    if not Path(spec.artifact).is_file():
        raise ValueError(f"{spec.artifact} does not exist: build the function first")
    with tempfile.TemporaryDirectory(prefix="edgefn-test-") as tmp, \
            _maybe_upstream(golden.upstream) as upstream_url:
        if golden.upstream is not None:
            spec = FunctionSpec.model_validate(
                with_upstream(spec.model_dump(mode="json"), golden.upstream.env, upstream_url))
        settings = EdgeSettings(data_dir=Path(tmp), kv_url=kv_url, node_id="edgefn-test",
                                allow_private_egress=[LOOPBACK] if upstream_url else [],
                                penalty_threads=0)
        runtime = build_runtime(settings, log_sink=JsonLog(Path(tmp) / "edge.log"))
        try:
            runtime.apply_state(NodeState(generation=1, functions=(spec,)))
            results = []
            for i, case in enumerate(golden.cases):
                req = case.request
                body = req.body.encode()
                target, _, query = req.path.partition("?")
                headers = [(b"host", req.host.encode())]
                headers += [(k.lower().encode(), v.encode()) for k, v in req.headers.items()]
                resp = runtime.handle(HttpRequest(
                    method=req.method, host=req.host, path=target, query=query,
                    headers=headers, read_body=BytesIO(body).read, content_length=len(body),
                ))
                failures = compare(case.response, resp.status, resp.headers, resp.body)
                results.append(CaseResult(case.name or f"case {i + 1}", failures))
            return results
        finally:
            runtime.close()


@contextmanager
def _maybe_upstream(stub: Upstream | None) -> Iterator[str]:
    if stub is None:
        yield ""
        return
    with stub_upstream(stub) as url:
        yield url


@click.command("test")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False, exists=True),
                default=Path("."))
@click.option("--kv-url", default="", help="KV store for the run (redis://...) "
              "[a fresh SQLite file].")
def test_cmd(folder: Path, kv_url: str) -> None:
    """Run the golden test of the function in FOLDER (its function.json, built module and
    golden.json) in an edge runtime; exits 1 when a response differs."""
    if not (folder / GOLDEN_FILE).is_file():
        raise click.UsageError(f"{folder / GOLDEN_FILE} does not exist")
    try:
        results = run_golden(folder, kv_url=kv_url)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    for result in results:
        click.echo(f"{'ok  ' if result.ok else 'FAIL'} {result.name}")
        for failure in result.failures:
            click.echo(f"     {failure}")
    failed = sum(not r.ok for r in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        raise SystemExit(1)
