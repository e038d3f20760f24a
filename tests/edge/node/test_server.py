"""`edgefn edge serve` as a real process: HTTP on loopback, workers, TLS, metrics, logs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from edgefn.cluster import free_port, spawn, stop_process
from tests.conftest import wasm_path
from tests.edge.conftest import Collector

CONTRACT_METRICS = (
    "edge_node_up",
    "wasm_invoke_count_total",
    "wasm_invoke_latency_seconds_bucket",
    "wasm_invoke_errors_total",
    "wasm_cache_hits_total",
    "wasm_cache_misses_total",
    "node_memory_bytes",
    "node_cpu_percent",
)


def write_function(root: Path, fid: str, module: str, routes: list[dict], **extra: object) -> None:
    folder = root / fid
    folder.mkdir(parents=True)
    shutil.copy(wasm_path(module), folder / f"{module}.wasm")
    manifest = {"id": fid, "version": "1.0.0", "artifact": f"{module}.wasm", "routes": routes}
    manifest.update(extra)
    (folder / "function.json").write_text(json.dumps(manifest))


@dataclass
class Node:
    url: str
    metrics_url: str
    log_file: Path
    proc: subprocess.Popen[bytes]


def start_node(tmp_path: Path, functions: Path | None, *extra: str, scheme: str = "http",
               env: dict[str, str] | None = None, start_timeout_s: float = 90) -> Node:
    """`edge serve` on `functions`, or on the state in its data directory when None."""
    port, mport = free_port(), free_port()
    log_file = tmp_path / "edge.log"
    source = ["--functions", str(functions)] if functions is not None else []
    cmd = [sys.executable, "-m", "edgefn", "edge", "serve", *source,
           "--port", str(port), "--metrics-port", str(mport), "--data-dir",
           str(tmp_path / "data"), "--workers", "2", "--threads", "8",
           "--log-file", str(log_file), "--node-id", "node-http", *extra]
    with open(tmp_path / "stderr", "wb") as stderr:
        proc = spawn(cmd, env={**os.environ, **(env or {})},
                     stdout=subprocess.DEVNULL, stderr=stderr)
    node = Node(f"{scheme}://127.0.0.1:{port}", f"http://127.0.0.1:{mport}", log_file, proc)
    deadline = time.monotonic() + start_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((tmp_path / "stderr").read_text())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return node
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("edge did not start:\n" + (tmp_path / "stderr").read_text())


def stop(node: Node) -> None:
    stop_process(node.proc)


@pytest.fixture
def functions(tmp_path: Path) -> Path:
    root = tmp_path / "functions"
    write_function(root, "echo", "echo", [{"host": "*", "path": "/echo/*",
                                           "methods": ["GET", "POST"]}])
    write_function(root, "shop", "headers", [{"host": "shop.test", "path": "/*"}])
    write_function(root, "hello", "wagi_hello", [{"host": "*", "path": "/wagi"}])
    write_function(root, "slow", "loop", [{"host": "*", "path": "/slow"}],
                   max_execution_ms=100)
    return root


@pytest.fixture(params=["native", "python"])
def node(request: pytest.FixtureRequest, tmp_path: Path, functions: Path) -> Iterator[Node]:
    """A node with its C parts, and one running their Python versions of record
    (`EDGEFN_NATIVE=off`): the same tests hold for both."""
    n = start_node(tmp_path, functions, env={"EDGEFN_MAX_REQUEST_BODY_BYTES": "100000",
                                             "EDGEFN_NATIVE": "on" if request.param == "native"
                                             else "off"})
    yield n
    stop(n)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def test_requests_over_http(node: Node) -> None:
    with httpx.Client(base_url=node.url, timeout=10) as c:
        r = c.post("/echo/x?y=1", content=b"over http")
        assert r.status_code == 200 and r.content == b"over http"
        assert r.headers["x-path"] == "/echo/x?y=1"
        assert len(r.headers["x-request-id"]) == 32
        assert c.get("/", headers={"host": "shop.test"}).status_code == 200
        assert c.get("/", headers={"host": "other.test"}).status_code == 404
        assert c.delete("/echo/x").status_code == 405
        assert c.get("/wagi").content == b"hello from wagi\n"
        assert c.get("/slow").status_code == 504
        assert c.head("/echo/x").status_code == 200


def test_413_is_decided_from_content_length_before_the_body_is_read(node: Node) -> None:
    # Announce a body over the limit and send none of it: the answer must not wait for it.
    host, port = node.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /echo/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100001\r\n\r\n")
        head = s.recv(4096).decode("latin-1")
    assert head.startswith("HTTP/1.1 413")
    assert "x-request-id:" in head.lower()
    # A body within the limit passes.
    with httpx.Client(base_url=node.url, timeout=10) as c:
        assert c.post("/echo/x", content=b"x" * 60_000).status_code == 200


def test_metrics_count_every_request_across_workers(node: Node) -> None:
    n = 60
    with httpx.Client(base_url=node.url, timeout=10) as c:
        for i in range(n):
            assert c.post(f"/echo/{i}", content=b"m").status_code == 200
        c.get("/slow")
    text = httpx.get(node.metrics_url + "/metrics", timeout=10).text
    for name in CONTRACT_METRICS:
        assert name in text, name
    assert metric_value(text, "wasm_invoke_count_total", function_id="echo") == n
    assert metric_value(text, "wasm_invoke_errors_total", function_id="slow", code="timeout") == 1
    assert metric_value(text, "edge_node_up") == 1
    assert metric_value(text, "node_memory_bytes") > 10_000_000


def test_one_json_log_line_per_invocation(node: Node) -> None:
    with httpx.Client(base_url=node.url, timeout=10) as c:
        ids = [c.post("/echo/l", content=b"x").headers["x-request-id"] for _ in range(10)]
    deadline = time.monotonic() + 10
    lines: list[dict] = []
    while time.monotonic() < deadline:
        if node.log_file.exists():
            lines = [json.loads(x) for x in node.log_file.read_text().splitlines() if x]
            if len([x for x in lines if x.get("type") == "invocation"]) >= 10:
                break
        time.sleep(0.2)
    invocations = {x["request_id"]: x for x in lines if x.get("type") == "invocation"}
    assert set(ids) <= set(invocations)
    assert all(invocations[i]["node_id"] == "node-http" for i in ids)


def test_workers_export_spans_to_an_otlp_collector(
    tmp_path: Path, functions: Path, collector: Collector
) -> None:
    n = start_node(tmp_path, functions, "--otlp-endpoint", collector.url)
    try:
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        with httpx.Client(base_url=n.url, timeout=10) as c:
            ids = {c.post("/echo/t", content=b"x",
                          headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
                          ).headers["x-request-id"] for _ in range(10)}
        deadline = time.monotonic() + 10
        while len(collector.spans()) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        spans = collector.spans()
        got = {a["value"]["stringValue"] for s in spans for a in s["attributes"]
               if a["key"] == "edgefn.request_id"}
        assert got == ids
        assert all(s["traceId"] == trace and s["parentSpanId"] == "00f067aa0ba902b7"
                   for s in spans)
    finally:
        stop(n)


def test_tls_with_a_self_signed_certificate(tmp_path: Path, functions: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    n = start_node(tmp_path, functions, "--tls-cert", str(cert_file), "--tls-key",
                   str(key_file), scheme="https")
    try:
        trusted = ssl.create_default_context(cafile=str(ca_file))
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.post(n.url + "/echo/tls", content=b"secure", verify=trusted, timeout=5)
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert r.status_code == 200 and r.content == b"secure"
        with pytest.raises(httpx.ConnectError):
            httpx.get(n.url + "/echo/tls", timeout=5)  # not trusted without the CA
    finally:
        stop(n)


def test_a_worker_that_dies_is_replaced(node: Node) -> None:
    import psutil

    def workers() -> list[psutil.Process]:
        found = []
        for p in psutil.Process(node.proc.pid).children():
            try:
                if "spawn_main" in " ".join(p.cmdline()) and p.status() != "zombie":
                    found.append(p)
            except psutil.Error:
                pass  # exited while we looked
        return found

    deadline = time.monotonic() + 20
    while len(workers()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    first = workers()
    assert len(first) == 2
    first[0].kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = workers()
        if len(now) == 2 and first[0].pid not in {p.pid for p in now}:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the dead worker was not replaced")
    # The new worker serves too: enough fresh connections reach both workers.
    deadline = time.monotonic() + 20
    while True:
        try:
            for _ in range(20):
                assert httpx.post(node.url + "/echo/r", content=b"r", timeout=5).content == b"r"
            break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_workers_stop_when_their_node_is_killed(node: Node) -> None:
    import psutil

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        spawned = [p for p in psutil.Process(node.proc.pid).children()
                   if "spawn_main" in " ".join(p.cmdline())]
        if len(spawned) >= 2:
            break
        time.sleep(0.1)
    assert len(spawned) >= 2
    node.proc.kill()  # SIGKILL: the node cannot tell its workers anything
    node.proc.wait()
    _gone, alive = psutil.wait_procs(spawned, timeout=20)
    assert alive == [], f"workers outlived their node: {[p.pid for p in alive]}"
    with pytest.raises(httpx.TransportError):
        httpx.get(node.url + "/echo/x", timeout=2)
