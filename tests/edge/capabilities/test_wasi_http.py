"""A WAGI program's `wasi_experimental_http` on the edge runtime, from `function.json`
settings, against a real server on loopback: the same `http_fetch` capability, its
allowlist, address rules and size cap."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest

from edgefn.edge.capabilities.egress_rules import EgressRules
from edgefn.edge.capabilities.http_fetch import HttpFetchCapability
from edgefn.edge.spec import FunctionSpec
from tests.edge.conftest import EdgeHarness, HarnessFactory, fn
from tests.loopback import QuietHandler, loopback


class Upstream(QuietHandler):
    def do_POST(self) -> None:  # a name http.server chooses
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.path == "/elsewhere":
            self.send_response(302)
            self.send_header("location", "http://127.0.0.2:9/x")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        answer = f"{self.command} {self.headers.get('x-test')} ".encode() + body
        if self.path == "/big":
            answer *= 1000
        self.send_response(200)
        self.send_header("x-upstream", "seen")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


@pytest.fixture
def upstream() -> Iterator[str]:
    with loopback(Upstream) as url:
        yield url


def program(fid: str, url: str, **policy: Any) -> FunctionSpec:
    """The fixture program as a function.json would give it."""
    extra = {"http_fetch": policy} if policy else {}
    return fn(fid, "wagi_http", env={"UPSTREAM": url}, **extra)


def node(make_edge: HarnessFactory, *opened: str) -> EdgeHarness:
    """A runtime on a node whose operator opened `opened` (`--allow-private-egress`)."""
    return make_edge(fetch_factory=functools.partial(
        HttpFetchCapability.configure, egress=EgressRules(list(opened))))


def test_through_the_allowlist_and_the_address_rules(
    make_edge: HarnessFactory, upstream: str
) -> None:
    edge = node(make_edge, "127.0.0.0/8")
    edge.deploy(
        program("ok", upstream + "/echo", allow_hosts=["127.0.0.1"], allow_private=True),
        program("public", upstream + "/echo", allow_hosts=["127.0.0.1"]),
        program("other", upstream + "/echo", allow_hosts=["example.com"]),
        program("redirect", upstream + "/elsewhere", allow_hosts=["127.0.0.1"],
                allow_private=True),
        program("capped", upstream + "/big", allow_hosts=["127.0.0.1"], allow_private=True,
                max_response_bytes=1000),
        program("none", upstream + "/echo"),
    )
    resp = edge.request("GET", "/ok/")
    assert resp.status == 200
    assert resp.body.decode().splitlines() == [
        "req=0", "status=200", "header_get=0 seen", "missing=5", "small=4",
        "body=POST wagi ping", "closed=1",
    ]
    # Loopback without allow_private: refused when connecting (DestinationNotAllowed).
    assert edge.request("GET", "/public/").body == b"req=7\n"
    assert edge.request("GET", "/other/").body == b"req=7\n"
    # The redirect goes to a host the allowlist does not name.
    assert edge.request("GET", "/redirect/").body == b"req=7\n"
    # Over http_fetch.max_response_bytes: the request failed.
    assert edge.request("GET", "/capped/").body == b"req=11\n"
    refused = edge.request("GET", "/none/")
    assert refused.status == 503
    assert b"wasi_experimental_http" in refused.body


def test_a_node_that_opened_no_private_network(make_edge: HarnessFactory, upstream: str) -> None:
    edge = node(make_edge)
    edge.deploy(program("ok", upstream + "/echo", allow_hosts=["127.0.0.1"], allow_private=True))
    assert edge.request("GET", "/ok/").body == b"req=7\n"
