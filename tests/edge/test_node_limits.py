"""What a node's operator decides for every function on it: resource caps (a function
over them is not run; the others are) and egress (private networks only where opened,
the node's own ports never), in the runtime and in a real `edgefn edge serve`."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from edgefn.contract import ResourceCaps
from tests.edge.conftest import HarnessFactory, fn
from tests.edge.node.test_server import start_node, stop, write_function


def test_the_runtime_does_not_run_a_function_over_the_nodes_caps(
    make_edge: HarnessFactory,
) -> None:
    edge = make_edge(caps=ResourceCaps(memory_pages=32, max_hot_instances=10))
    edge.deploy(fn("small", "echo"), fn("big", "echo", memory_pages=64),
                fn("hot", "echo", max_hot_instances=11))
    assert edge.request("GET", "/small/x").status == 200
    for fid, refusal in (("big", "memory_pages 64 is over the cap of 32"),
                         ("hot", "max_hot_instances 11 is over the cap of 10")):
        resp = edge.request("GET", f"/{fid}/x")
        assert resp.status == 503, fid
        assert b"over this node's resource caps" in resp.body and refusal.encode() in resp.body
    assert not [p for p in edge.runtime.pools.pools() if p.spec.id in ("big", "hot")]


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "8")
        self.end_headers()
        self.wfile.write(b"upstream")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    """A service on the node's private network (127.0.0.2)."""
    httpd = ThreadingHTTPServer(("127.0.0.2", 0), _Upstream)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def functions(tmp_path: Path) -> Path:
    root = tmp_path / "functions"
    write_function(root, "echo", "echo", [{"host": "*", "path": "/echo/*"}])
    write_function(root, "long", "echo", [{"host": "*", "path": "/long/*"}],
                   max_execution_ms=60_000)
    # A developer opening everything their policy can: it must not open the node.
    write_function(root, "fetch", "hostcalls", [{"host": "*", "path": "/*"}],
                   http_fetch={"allow_hosts": ["*"], "allow_private": True})
    return root


def _fetch(client: httpx.Client, url: str) -> int:
    resp = client.post("/fetch", content=f"GET {url}\n\n".encode())
    assert resp.status_code == 200, resp.text
    return int(resp.headers["x-code"])


def test_a_node_with_the_default_caps_and_no_private_egress(
    tmp_path: Path, functions: Path, upstream: str
) -> None:
    node = start_node(tmp_path, functions)
    try:
        with httpx.Client(base_url=node.url, timeout=10) as client:
            assert client.get("/echo/x").status_code == 200
            refused = client.get("/long/x")
            assert refused.status_code == 503
            assert "max_execution_ms 60000 is over the cap of 30000" in refused.text
            edge_port = urlsplit(node.url).port
            metrics_port = urlsplit(node.metrics_url).port
            for url in (f"http://127.0.0.1:{metrics_port}/metrics",
                        f"http://localhost:{edge_port}/echo/x",
                        f"http://2130706433:{metrics_port}/metrics",
                        f"http://[::ffff:127.0.0.1]:{metrics_port}/metrics",
                        "http://169.254.169.254/latest/meta-data/",
                        upstream):
                assert _fetch(client, url) == -2, url
            assert client.get("/echo/x").status_code == 200
    finally:
        stop(node)


def test_a_node_whose_operator_opened_a_network_and_raised_a_cap(
    tmp_path: Path, functions: Path, upstream: str
) -> None:
    node = start_node(tmp_path, functions, "--allow-private-egress", "127.0.0.0/8",
                      "--allow-private-egress", "::1/128", "--cap-execution-ms", "60000")
    try:
        with httpx.Client(base_url=node.url, timeout=10) as client:
            assert client.get("/long/x").status_code == 200
            assert _fetch(client, upstream) > 0
            edge_port = urlsplit(node.url).port
            metrics_port = urlsplit(node.metrics_url).port
            # Inside the opened network, the node's own ports stay out of reach.
            for url in (f"http://127.0.0.1:{metrics_port}/metrics",
                        f"http://127.0.0.2:{metrics_port}/metrics",
                        f"http://[::1]:{edge_port}/echo/x",
                        f"http://localhost:{edge_port}/echo/x",
                        f"http://0.0.0.0:{metrics_port}/metrics",
                        "http://169.254.169.254/latest/meta-data/"):
                assert _fetch(client, url) == -2, url
    finally:
        stop(node)


def test_caps_below_the_function_defaults_are_refused() -> None:
    low = re.escape("max_execution_ms 100 (functions default to 500)")
    with pytest.raises(ValueError, match=low):
        ResourceCaps(max_execution_ms=100)
    with pytest.raises(ValueError, match="memory_pages"):
        ResourceCaps(memory_pages=70_000)  # past the absolute bound
