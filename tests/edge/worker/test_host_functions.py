"""Host functions through a real guest (`hostcalls`) in the edge runtime: allowed and denied."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgefn.edge.capabilities.egress_rules import EgressRules
from edgefn.edge.capabilities.http_fetch import HttpFetchCapability
from edgefn.edge.capabilities.kv import KvCapability
from edgefn.edge.kv.sqlite import SqliteKvStore
from edgefn.edge.spec import FunctionSpec
from tests.edge.conftest import EdgeHarness, HarnessFactory, fn


def code(resp) -> int:  # type: ignore[no-untyped-def]
    return int(dict(resp.headers)["x-code"])


# The node's own ports in these tests (as its edge and metrics ports would be).
NODE_PORTS = (18000, 19090)


@pytest.fixture
def edge_caps(make_edge: HarnessFactory, tmp_path: Path) -> Iterator[EdgeHarness]:
    """A node whose operator opened loopback to the functions that ask for it."""
    store = SqliteKvStore(tmp_path / "kv.sqlite3")

    def kv(spec: FunctionSpec) -> KvCapability | None:
        return KvCapability.configure(spec, store)

    egress = EgressRules(["127.0.0.0/8"], node_ports=NODE_PORTS)
    fetch = functools.partial(HttpFetchCapability.configure, egress=egress)
    yield make_edge(kv_factory=kv, fetch_factory=fetch)
    store.close()


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"upstream saw {self.path} tp={self.headers.get('traceparent', '-')}".encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def test_env_get_sees_only_declared_variables(edge: EdgeHarness) -> None:
    edge.deploy(fn("h", "hostcalls", path="/*", env={"GREETING": "hi there"}))
    ok = edge.request("GET", "/env?name=GREETING")
    assert code(ok) == 8 and ok.body == b"hi there"
    assert code(edge.request("GET", "/env?name=PATH")) == -1
    assert code(edge.request("GET", "/env?name=HOME")) == -1


def test_lookups_return_the_full_length_and_truncate_at_the_cap(edge: EdgeHarness) -> None:
    edge.deploy(fn("h", "hostcalls", path="/*", env={"LONG": "0123456789abcdef"}))
    resp = edge.request("GET", "/env?name=LONG&cap=4")
    assert code(resp) == 16 and resp.body == b"0123"


def test_request_id_and_request_header(edge: EdgeHarness) -> None:
    edge.deploy(fn("h", "hostcalls", path="/*"))
    resp = edge.request("GET", "/reqid", headers=[(b"x-request-id", b"my-request-1")])
    assert resp.body == b"my-request-1"
    hdr = edge.request("GET", "/header?name=x-thing", headers=[(b"x-thing", b"value 1")])
    assert hdr.body == b"value 1"
    assert code(edge.request("GET", "/header?name=x-missing")) == -1


def test_log_lines_reach_the_json_log(edge: EdgeHarness) -> None:
    edge.deploy(fn("h", "hostcalls", path="/*"))
    rid = dict(edge.request("GET", "/log").headers)["x-request-id"]
    logs = [r for r in edge.logs() if r.get("type") == "function_log" and r["source"] == "log"]
    assert [r["level"] for r in logs] == ["debug", "info", "notice", "warn", "error"]
    assert all(r["request_id"] == rid and r["function_id"] == "h" for r in logs)


def test_metrics_increment_counts_with_bounded_series(edge: EdgeHarness) -> None:
    from edgefn.edge import metrics

    edge.deploy(fn("hm", "hostcalls", path="/*"))
    before = metrics.GUEST_METRIC.labels("hm", "", "hits", "route=a")._value.get()
    for _ in range(3):
        assert edge.request("GET", "/metric").status == 200
    after = metrics.GUEST_METRIC.labels("hm", "", "hits", "route=a")._value.get()
    assert after - before == pytest.approx(4.5)


def test_kv_is_denied_unless_enabled(edge_caps: EdgeHarness) -> None:
    edge_caps.deploy(fn("off", "hostcalls", path="/*"))
    assert code(edge_caps.request("GET", "/kv/put?key=a&value=1")) == -2
    assert code(edge_caps.request("GET", "/kv/get?key=a")) == -2


def test_kv_round_trip_namespaced_per_function(edge_caps: EdgeHarness) -> None:
    edge_caps.deploy(
        fn("a", "hostcalls", path="/*", host="a.test", kv={"enabled": True}),
        fn("b", "hostcalls", path="/*", host="b.test",
           kv={"enabled": True, "max_value_bytes": 4}),
    )
    assert code(edge_caps.request("GET", "/kv/put?key=k&value=hello", host="a.test")) == 0
    got = edge_caps.request("GET", "/kv/get?key=k", host="a.test")
    assert code(got) == 5 and got.body == b"hello"
    # Another function's key is not visible; and b's value quota refuses 5 bytes.
    assert code(edge_caps.request("GET", "/kv/get?key=k", host="b.test")) == -1
    assert code(edge_caps.request("GET", "/kv/put?key=k&value=hello", host="b.test")) == -3


def test_http_fetch_is_denied_without_an_allowlist(edge_caps: EdgeHarness, upstream: int) -> None:
    edge_caps.deploy(fn("f", "hostcalls", path="/*"))
    req = f"GET http://127.0.0.1:{upstream}/x\n\n".encode()
    assert code(edge_caps.request("POST", "/fetch", req)) == -2


def test_http_fetch_to_loopback_is_refused_even_when_allowlisted(
    edge_caps: EdgeHarness, upstream: int
) -> None:
    edge_caps.deploy(fn("f", "hostcalls", path="/*", http_fetch={"allow_hosts": ["127.0.0.1"]}))
    req = f"GET http://127.0.0.1:{upstream}/x\n\n".encode()
    assert code(edge_caps.request("POST", "/fetch", req)) == -2


def test_http_fetch_to_the_nodes_ports_and_metadata_is_refused_from_a_guest(
    edge_caps: EdgeHarness, upstream: int
) -> None:
    edge_caps.deploy(fn("f", "hostcalls", path="/*", http_fetch={"allow_hosts": ["*"],
                                                      "allow_private": True}))
    for url in (f"http://127.0.0.1:{NODE_PORTS[1]}/metrics", f"http://2130706433:{upstream}/",
                f"http://[::ffff:127.0.0.1]:{NODE_PORTS[0]}/", "http://169.254.169.254/",
                "http://0177.0.0.1/"):
        assert code(edge_caps.request("POST", "/fetch", f"GET {url}\n\n".encode())) == -2, url


def test_http_fetch_allowed_with_trace_context(edge_caps: EdgeHarness, upstream: int) -> None:
    edge_caps.deploy(fn("f", "hostcalls", path="/*", http_fetch={"allow_hosts": ["127.0.0.1"],
                                                      "allow_private": True}))
    req = f"GET http://127.0.0.1:{upstream}/data\n\n".encode()
    parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    resp = edge_caps.request("POST", "/fetch", req, headers=[(b"traceparent", parent)])
    assert code(resp) > 0
    status, _, rest = resp.body.partition(b"\n")
    assert status == b"200"
    assert b"upstream saw /data tp=00-0af7651916cd43dd8448eb211c80319c-" in rest
