"""`HttpFetchCapability` against real HTTP servers on loopback (127.0.0.1 and 127.0.0.2).

Most tests run as on a node whose operator opened loopback
(`--allow-private-egress 127.0.0.0/8 ::1/128`), so the server is reachable to a
function that sets `allow_private`; the egress tests at the end open less.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from edgefn.contract import HttpFetchPolicy
from edgefn.edge.capabilities.egress_rules import EgressRules
from edgefn.edge.capabilities.http_fetch import HttpFetchCapability
from edgefn.edge.spec import FunctionSpec
from edgefn.sandbox.abi import GuestResponse, parse_response
from edgefn.sandbox.hostcodes import DENIED, FAILED, QUOTA_EXCEEDED


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's pool is exercised
    hits: list[str] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "1000000")
        self.end_headers()

    def _serve(self) -> None:
        self.hits.append(self.path)
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path == "/redirect":
            self._send(int(query.get("status", "302")), b"", [("location", query["to"])])
        elif url.path.startswith("/chain/"):
            left = int(url.path.rsplit("/", 1)[1])
            if left:
                self._send(302, b"", [("location", f"/chain/{left - 1}")])
            else:
                self._send(200, b"end of chain")
        elif url.path == "/slow":
            time.sleep(float(query.get("s", "3")))
            self._send(200, b"late")
        elif url.path == "/dribble":
            # Headers at once, then a byte every 0.1 s: no single read ever times out.
            self.send_response(200)
            self.send_header("content-length", "40")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b".")
                self.wfile.flush()
                time.sleep(0.1)
        elif url.path == "/big":
            self._send(200, b"x" * int(query["n"]))
        elif url.path == "/unsized":
            # No content-length: the cap must be enforced while reading.
            self.send_response(200)
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(b"y" * int(query["n"]))
            self.close_connection = True
        elif url.path == "/set-cookie":
            self._send(200, b"set", [("set-cookie", "session=alice; Path=/")])
        elif url.path == "/hop":
            self._send(
                200,
                b"hop",
                [("connection", "x-private"), ("x-private", "1"), ("keep-alive", "timeout=5")],
            )
        else:
            echo = {
                "method": self.command,
                "path": self.path,
                "headers": [[k.lower(), v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
            }
            self._send(200, json.dumps(echo).encode(), [("content-type", "application/json")])

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client hanging up mid-body (caps, timeouts) is what several tests do


def _serve(address: str) -> Iterator[int]:
    server = _Server((address, 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    yield from _serve("127.0.0.1")


@pytest.fixture(scope="module")
def port2() -> Iterator[int]:
    """A server on 127.0.0.2 only: another machine on the node's private network."""
    yield from _serve("127.0.0.2")


LOOPBACK = ("127.0.0.0/8", "::1/128")


@pytest.fixture
def hits() -> list[str]:
    _Handler.hits.clear()
    return _Handler.hits


@pytest.fixture
def make_fetch() -> Iterator[Callable[..., HttpFetchCapability]]:
    made: list[HttpFetchCapability] = []

    def make(
        *hosts: str,
        networks: tuple[str, ...] = LOOPBACK,
        node_ports: tuple[int, ...] = (),
        **policy: object,
    ) -> HttpFetchCapability:
        """A function allowing `hosts`, on a node whose operator opened `networks` and
        listens on `node_ports`."""
        spec = FunctionSpec(
            id="fn",
            http_fetch=HttpFetchPolicy(allow_hosts=hosts, **policy),  # type: ignore[arg-type]
        )
        fetch = HttpFetchCapability.configure(
            spec, EgressRules(networks, node_ports=node_ports)
        )
        assert fetch is not None
        made.append(fetch)
        return fetch

    yield make
    for fetch in made:
        fetch.close()


def request(url: str, method: str = "GET", headers: str = "", body: bytes = b"") -> bytes:
    return f"{method} {url}\n{headers}\n".encode() + body


def ok(result: bytes | int) -> GuestResponse:
    assert isinstance(result, bytes), f"expected a response, got code {result}"
    return parse_response(result)


def echoed(result: bytes | int) -> dict[str, object]:
    response = ok(result)
    assert response.status == 200
    return json.loads(response.body)  # type: ignore[no-any-return]


def header(echo: dict[str, object], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k == name]  # type: ignore[attr-defined]


def test_an_allowed_fetch(make_fetch: Callable[..., HttpFetchCapability], port: int) -> None:
    fetch = make_fetch("localhost", allow_private=True)
    raw = fetch.fetch(
        request(f"http://localhost:{port}/echo?q=1", "POST", "x-one: 1\nx-one: 2\n", b"a\n\nb"),
        timeout_s=5,
    )
    response = ok(raw)
    assert response.status == 200
    assert (b"content-type", b"application/json") in response.headers
    assert all(name == name.lower() for name, _ in response.headers)
    assert not [n for n, _ in response.headers if n in (b"content-length", b"connection")]
    echo = json.loads(response.body)
    assert echo["method"] == "POST"
    assert echo["path"] == "/echo?q=1"
    assert echo["body"] == "a\n\nb"
    assert header(echo, "x-one") == ["1", "2"]
    assert header(echo, "host") == [f"localhost:{port}"]


def test_ip_allowlist_entries(make_fetch: Callable[..., HttpFetchCapability], port: int) -> None:
    fetch = make_fetch("127.0.0.1", allow_private=True)
    assert echoed(fetch.fetch(request(f"http://127.0.0.1:{port}/"), timeout_s=5))["method"] == "GET"
    assert fetch.fetch(request(f"http://localhost:{port}/"), timeout_s=5) == DENIED


def test_no_allowlist_no_capability() -> None:
    assert HttpFetchCapability.configure(FunctionSpec(id="fn")) is None


def test_private_addresses_refused_even_when_allowlisted(
    make_fetch: Callable[..., HttpFetchCapability], port: int, hits: list[str]
) -> None:
    fetch = make_fetch("localhost", "127.0.0.1", "[::1]", "0.0.0.0")
    for host in ("127.0.0.1", "localhost", "[::1]", "0.0.0.0"):
        assert fetch.fetch(request(f"http://{host}:{port}/"), timeout_s=5) == DENIED, host
    assert hits == []


def test_host_not_on_the_allowlist(
    make_fetch: Callable[..., HttpFetchCapability], port: int, hits: list[str]
) -> None:
    fetch = make_fetch("api.example.com", "*.example.org", allow_private=True)
    for url in (
        f"http://127.0.0.1:{port}/",
        f"http://localhost:{port}/",
        "http://example.org/",  # `*.` covers subdomains, not the apex
        "http://api.example.com.evil.net/",
        "http://notexample.org/",
    ):
        assert fetch.fetch(request(url), timeout_s=5) == DENIED, url
    assert hits == []


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433:{port}/",
        "http://0x7f.1:{port}/",
        "http://0x7f000001:{port}/",
        "http://127.1:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://[::ffff:7f00:1]:{port}/",
        "http://[::]:{port}/",
        "http://0.0.0.0:{port}/",
        "http://[fe80::1%25lo]:{port}/",
    ],
)
def test_ip_literal_tricks_are_refused(
    make_fetch: Callable[..., HttpFetchCapability], port: int, hits: list[str], url: str
) -> None:
    fetch = make_fetch("*")
    assert fetch.fetch(request(url.format(port=port)), timeout_s=5) == DENIED
    assert hits == []


def test_octal_ipv4_is_refused_though_not_even_a_url(
    make_fetch: Callable[..., HttpFetchCapability], port: int, hits: list[str]
) -> None:
    # The URL parser itself rejects leading zeros; the guest is still told "denied".
    fetch = make_fetch("*", allow_private=True)
    assert fetch.fetch(request(f"http://0177.0.0.1:{port}/"), timeout_s=5) == DENIED
    assert hits == []


@pytest.mark.parametrize(
    "url", ["http://2130706433:{port}/", "http://0x7f.1:{port}/", "http://127.1:{port}/"]
)
def test_non_canonical_ipv4_is_refused_even_where_private_is_allowed(
    make_fetch: Callable[..., HttpFetchCapability], port: int, hits: list[str], url: str
) -> None:
    fetch = make_fetch("*", allow_private=True)
    assert fetch.fetch(request(url.format(port=port)), timeout_s=5) == DENIED
    assert hits == []


def test_other_schemes_and_userinfo_refused(
    make_fetch: Callable[..., HttpFetchCapability], port: int, hits: list[str]
) -> None:
    fetch = make_fetch("localhost", allow_private=True)
    for url in (
        f"ftp://localhost:{port}/",
        "file:///etc/passwd",
        f"http://user:pw@localhost:{port}/",
        f"http://localhost:{port}@evil.example/",
    ):
        assert fetch.fetch(request(url), timeout_s=5) == DENIED, url
    assert hits == []


def test_redirects_are_followed_and_rechecked(
    make_fetch: Callable[..., HttpFetchCapability], port: int, hits: list[str]
) -> None:
    fetch = make_fetch("localhost", allow_private=True)
    base = f"http://localhost:{port}"
    followed = fetch.fetch(request(f"{base}/redirect?to=/echo"), timeout_s=5)
    assert echoed(followed)["path"] == "/echo"
    # 303 turns a POST into a GET without the body; 307 keeps both.
    see_other = echoed(
        fetch.fetch(request(f"{base}/redirect?status=303&to=/echo", "POST", "", b"b"), timeout_s=5)
    )
    assert (see_other["method"], see_other["body"]) == ("GET", "")
    temporary = echoed(
        fetch.fetch(request(f"{base}/redirect?status=307&to=/echo", "POST", "", b"b"), timeout_s=5)
    )
    assert (temporary["method"], temporary["body"]) == ("POST", "b")
    hits.clear()
    elsewhere = f"{base}/redirect?to=http://127.0.0.1:{port}/echo"
    assert fetch.fetch(request(elsewhere), timeout_s=5) == DENIED
    assert hits == ["/redirect?to=http://127.0.0.1:" + str(port) + "/echo"]


def test_redirect_to_a_private_address_is_refused(
    make_fetch: Callable[..., HttpFetchCapability], port: int
) -> None:
    # The first hop is allowed; the second names an allowlisted host on loopback.
    private = make_fetch("localhost", "127.0.0.1", allow_private=True)
    strict = make_fetch("localhost", "127.0.0.1")
    url = f"http://localhost:{port}/redirect?to=http://127.0.0.1:{port}/echo"
    assert echoed(private.fetch(request(url), timeout_s=5))["path"] == "/echo"
    assert strict.fetch(request(url), timeout_s=5) == DENIED


def test_redirect_chain_over_the_max(
    make_fetch: Callable[..., HttpFetchCapability], port: int
) -> None:
    fetch = make_fetch("localhost", allow_private=True, max_redirects=2)
    assert ok(fetch.fetch(request(f"http://localhost:{port}/chain/2"), timeout_s=5)).body == (
        b"end of chain"
    )
    assert fetch.fetch(request(f"http://localhost:{port}/chain/3"), timeout_s=5) == FAILED
    none = make_fetch("localhost", allow_private=True, max_redirects=0)
    assert none.fetch(request(f"http://localhost:{port}/chain/1"), timeout_s=5) == FAILED


def test_credentials_do_not_follow_a_redirect_to_another_origin(
    make_fetch: Callable[..., HttpFetchCapability], port: int
) -> None:
    fetch = make_fetch("localhost", "127.0.0.1", allow_private=True)
    secret = "authorization: Bearer s3cret\ncookie: a=b\nx-kept: 1\n"
    same = echoed(
        fetch.fetch(
            request(f"http://localhost:{port}/redirect?to=/echo", headers=secret), timeout_s=5
        )
    )
    assert header(same, "authorization") == ["Bearer s3cret"]
    other = f"http://localhost:{port}/redirect?to=http://127.0.0.1:{port}/echo"
    moved = echoed(fetch.fetch(request(other, headers=secret), timeout_s=5))
    assert header(moved, "authorization") == [] and header(moved, "cookie") == []
    assert header(moved, "x-kept") == ["1"]


def test_slow_server_times_out_within_the_budget(
    make_fetch: Callable[..., HttpFetchCapability], port: int
) -> None:
    fetch = make_fetch("localhost", allow_private=True)
    for path in ("/slow?s=3", "/dribble"):
        started = time.monotonic()
        assert fetch.fetch(request(f"http://localhost:{port}{path}"), timeout_s=0.3) == FAILED
        # Generous bound: the point is that it returns long before the server finishes (3-4 s).
        assert time.monotonic() - started < 2.0, path


def test_no_budget_left_fails_at_once(
    make_fetch: Callable[..., HttpFetchCapability], port: int, hits: list[str]
) -> None:
    fetch = make_fetch("localhost", allow_private=True)
    assert fetch.fetch(request(f"http://localhost:{port}/"), timeout_s=0) == FAILED
    assert fetch.fetch(request(f"http://localhost:{port}/"), timeout_s=-1) == FAILED
    assert hits == []


def test_response_size_cap(make_fetch: Callable[..., HttpFetchCapability], port: int) -> None:
    fetch = make_fetch("localhost", allow_private=True, max_response_bytes=1000)
    base = f"http://localhost:{port}"
    assert ok(fetch.fetch(request(f"{base}/big?n=1000"), timeout_s=5)).body == b"x" * 1000
    assert fetch.fetch(request(f"{base}/big?n=1001"), timeout_s=5) == QUOTA_EXCEEDED
    assert ok(fetch.fetch(request(f"{base}/unsized?n=1000"), timeout_s=5)).body == b"y" * 1000
    assert fetch.fetch(request(f"{base}/unsized?n=5000"), timeout_s=5) == QUOTA_EXCEEDED
    # HEAD: the declared size is of a body that never comes.
    head = ok(fetch.fetch(request(f"{base}/big", "HEAD"), timeout_s=5))
    assert (head.status, head.body) == (200, b"")


def test_traceparent_is_forwarded(
    make_fetch: Callable[..., HttpFetchCapability], port: int
) -> None:
    fetch = make_fetch("localhost", allow_private=True)
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    echo = echoed(
        fetch.fetch(
            request(f"http://localhost:{port}/", headers="traceparent: 00-guest-chosen-00\n"),
            timeout_s=5,
            traceparent=trace,
        )
    )
    assert header(echo, "traceparent") == [trace]
    untraced = echoed(fetch.fetch(request(f"http://localhost:{port}/"), timeout_s=5))
    assert header(untraced, "traceparent") == []


def test_hop_by_hop_headers_are_dropped_both_ways(
    make_fetch: Callable[..., HttpFetchCapability], port: int
) -> None:
    fetch = make_fetch("localhost", allow_private=True)
    sent = "connection: x-secret\nx-secret: 1\nkeep-alive: 5\nupgrade: h2c\nhost: evil.example\n"
    echo = echoed(fetch.fetch(request(f"http://localhost:{port}/", headers=sent), timeout_s=5))
    assert header(echo, "x-secret") == [] and header(echo, "upgrade") == []
    assert header(echo, "host") == [f"localhost:{port}"]
    response = ok(fetch.fetch(request(f"http://localhost:{port}/hop"), timeout_s=5))
    names = {name for name, _ in response.headers}
    assert not names & {b"connection", b"x-private", b"keep-alive"}


def test_no_state_carries_from_one_invocation_to_the_next(
    make_fetch: Callable[..., HttpFetchCapability], port: int
) -> None:
    # One function version shares a connection pool, never a cookie jar: a cookie one
    # end user's request received is not sent on another's.
    fetch = make_fetch("localhost", allow_private=True)
    got = ok(fetch.fetch(request(f"http://localhost:{port}/set-cookie"), timeout_s=5))
    assert (b"set-cookie", b"session=alice; Path=/") in got.headers
    echo = echoed(fetch.fetch(request(f"http://localhost:{port}/echo"), timeout_s=5))
    assert header(echo, "cookie") == []
    assert header(echo, "user-agent") == ["edgefn-http-fetch"]
    assert header(echo, "accept-encoding") == ["identity"]
    own = echoed(fetch.fetch(
        request(f"http://localhost:{port}/echo", headers="user-agent: mine\n"), timeout_s=5))
    assert header(own, "user-agent") == ["mine"]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"GET\n\n",
        b"get http://localhost/\n\n",
        b"GET http://localhost/ HTTP/1.1\n\n",
        b"GET  http://localhost/\n\n",
        b"BREW http://localhost/\n\n",
        b"GET http://localhost/\nno colon here\n\n",
        b"GET http://localhost/\nx-a: b\x00c\n\n",
        b"GET http://\n\n",
        b"GET http://local host/\n\n",
        b"GET http://localhost:99999/\n\n",
        "GET http://localhost/\xe9\n\n".encode("latin-1"),
    ],
)
def test_malformed_requests_fail(
    make_fetch: Callable[..., HttpFetchCapability], raw: bytes, hits: list[str]
) -> None:
    fetch = make_fetch("localhost", allow_private=True)
    assert fetch.fetch(raw, timeout_s=5) == FAILED
    assert hits == []


def test_concurrent_fetches_share_one_client(
    make_fetch: Callable[..., HttpFetchCapability], port: int
) -> None:
    fetch = make_fetch("localhost", allow_private=True)
    results: list[bytes | int] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        mine = [
            fetch.fetch(request(f"http://localhost:{port}/{t}/{i}"), timeout_s=10)
            for i in range(10)
        ]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80
    assert all(ok(r).status == 200 for r in results)


# -- egress: the operator's decision --------------------------------------------------

# Every spelling of an address a guest must not reach on a node whose operator opened
# nothing, or opened only 127.0.0.2 (where `port2` serves).
LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "localhost",  # a name resolving to loopback
    "LOCALHOST",
    "127.0.0.1.",  # trailing dots
    "localhost.",
    "2130706433",  # decimal
    "017700000001",  # octal, whole
    "0177.0.0.1",  # octal, dotted
    "0x7f000001",  # hex
    "0x7f.0.0.1",
    "127.1",  # short forms
    "127.0.1",
    "0",
    "0.0.0.0",  # unspecified: Linux connects it to the node itself
    "[::]",
    "[::1]",  # IPv6 loopback, bracketed, long and short
    "[0:0:0:0:0:0:0:1]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:7f00:1]",
    "[::127.0.0.1]",  # IPv4-compatible
    "[64:ff9b::7f00:1]",  # NAT64
    "[2002:7f00:1::]",  # 6to4
]
ELSEWHERE_PRIVATE = [
    "169.254.169.254",  # cloud metadata (link-local)
    "[fd00:ec2::254]",  # cloud metadata over IPv6 (unique-local)
    "[fe80::1]",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.0.1",
    "100.64.0.1",  # carrier-grade NAT
    "224.0.0.1",  # multicast
    "[ff02::1]",
    "[fc00::1]",
    "[::ffff:169.254.169.254]",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + ELSEWHERE_PRIVATE)
def test_private_addresses_need_the_operator_whatever_the_function_says(
    make_fetch: Callable[..., HttpFetchCapability], port: int, hits: list[str], host: str
) -> None:
    fetch = make_fetch("*", networks=(), allow_private=True)
    started = time.monotonic()
    assert fetch.fetch(request(f"http://{host}:{port}/"), timeout_s=5) == DENIED
    # Refused before any connection is tried (10.0.0.1 would otherwise wait for a timeout).
    assert time.monotonic() - started < 1.0
    assert hits == []


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + ELSEWHERE_PRIVATE)
def test_redirects_to_private_addresses_are_refused(
    make_fetch: Callable[..., HttpFetchCapability], port: int, port2: int, hits: list[str],
    host: str,
) -> None:
    # The operator opened 127.0.0.2 only: the first hop is allowed, the redirect is not.
    fetch = make_fetch("*", networks=("127.0.0.2/32",), allow_private=True)
    first = f"http://127.0.0.2:{port2}/redirect?to=http://{host}:{port}/echo"
    assert fetch.fetch(request(first), timeout_s=5) == DENIED
    assert hits == [first.removeprefix(f"http://127.0.0.2:{port2}")]


def test_non_ascii_hosts_are_malformed(
    make_fetch: Callable[..., HttpFetchCapability], port: int, hits: list[str]
) -> None:
    # Ideographic full stops, which IDNA would map to dots: the request line is ASCII.
    fetch = make_fetch("*", networks=(), allow_private=True)
    url = f"http://127\u30020\u30020\u30021:{port}/"
    assert fetch.fetch(request(url), timeout_s=5) == FAILED
    assert hits == []


def test_the_operators_network_is_reachable_to_functions_that_ask(
    make_fetch: Callable[..., HttpFetchCapability], port: int, port2: int, hits: list[str]
) -> None:
    url = f"http://127.0.0.2:{port2}/echo"
    opened = ("127.0.0.2/32",)
    asks = make_fetch("127.0.0.2", networks=opened, allow_private=True)
    assert echoed(asks.fetch(request(url), timeout_s=5))["path"] == "/echo"
    # The operator alone does not open it to a function that did not ask.
    silent = make_fetch("127.0.0.2", networks=opened)
    assert silent.fetch(request(url), timeout_s=5) == DENIED
    # Nor does it open anything beside the network it named.
    assert asks.fetch(request(f"http://127.0.0.1:{port}/echo"), timeout_s=5) == DENIED
    elsewhere = make_fetch("127.0.0.2", networks=("10.0.0.0/8",), allow_private=True)
    assert elsewhere.fetch(request(url), timeout_s=5) == DENIED
    assert hits == ["/echo"]


def test_an_ipv4_mapped_spelling_reaches_the_network_it_maps_to(
    make_fetch: Callable[..., HttpFetchCapability], port2: int
) -> None:
    fetch = make_fetch("*", networks=("127.0.0.2/32",), allow_private=True)
    got = fetch.fetch(request(f"http://[::ffff:127.0.0.2]:{port2}/echo"), timeout_s=5)
    assert echoed(got)["path"] == "/echo"


@pytest.mark.parametrize(
    "host", ["127.0.0.2", "127.0.0.1", "localhost", "[::ffff:127.0.0.2]", "0.0.0.0", "[::1]"]
)
def test_the_nodes_own_ports_are_never_reachable(
    make_fetch: Callable[..., HttpFetchCapability], port: int, port2: int, hits: list[str],
    host: str,
) -> None:
    # The operator opened all of loopback, and `port2` is one of the node's own ports
    # (its edge or metrics port): still refused, under any spelling of a node address.
    fetch = make_fetch("*", networks=LOOPBACK, node_ports=(port2,), allow_private=True)
    assert fetch.fetch(request(f"http://{host}:{port2}/"), timeout_s=5) == DENIED
    # Another port in the same network is fine; a redirect to the node's port is not.
    assert echoed(fetch.fetch(request(f"http://127.0.0.1:{port}/echo"), timeout_s=5))
    hits.clear()
    hop = f"http://127.0.0.1:{port}/redirect?to=http://{host}:{port2}/metrics"
    assert fetch.fetch(request(hop), timeout_s=5) == DENIED
    assert len(hits) == 1
