"""WAGI programs served as WAGI serves them (docs/wagi.md), through a real `edgefn
edge serve --functions` on loopback: the CGI variables and argv of exact, wildcard
and dynamic routes (the expectations of WAGI's own tests), named entrypoints,
read-only volumes, the 500 rule, trap messages and stderr lines, on each engine."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgefn.contract import DeployInstruction, FunctionPolicy
from edgefn.edge.spec import FunctionSpec
from edgefn.edge.worker.dispatch import wagi_entrypoint
from edgefn.sandbox import create_engine
from edgefn.sandbox.abi import WagiRoute, parse_wagi_routes
from edgefn.sandbox.errors import EngineUnavailable, GuestError
from tests.edge.conftest import EdgeHarness, fn
from tests.edge.node.test_server import Node, start_node, stop, write_function

# A deadline a busy test machine does not reach: these tests are about answers.
SLACK: dict[str, Any] = {"max_execution_ms": 10_000}


def _engine_or_skip(name: str) -> str:
    try:
        create_engine(name).close()
    except EngineUnavailable as exc:
        pytest.skip(f"{name} engine unavailable: {exc}")
    return name


@pytest.fixture(scope="module", params=["wasmtime", "wasmedge"])
def wagi_node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Node, Path]]:
    engine = _engine_or_skip(request.param)
    tmp = tmp_path_factory.mktemp(f"wagi-{engine}")
    root = tmp / "functions"
    # Few functions, several routes each: a loaded machine starts the node in time.
    write_function(root, "routes", "wagi_routes", [
        {"path": "/"}, {"path": "/test/*"}, {"path": "/exactparent"},
        {"path": "/wildcardparent/*"}, {"path": "/exactparentslash/"}], **SLACK)
    write_function(root, "entry", "wagi_routes", [{"path": "/entry1"}], entrypoint="entry1",
                   argv="tool ${SCRIPT_NAME} --flags ${ARGS}", **SLACK)
    data = tmp / "data"
    for d, name in ((data / "root", "top.txt"), (data / "one", "a.txt"),
                    (data / "two", "b.txt")):
        d.mkdir(parents=True)
        (d / name).write_text(f"{d.name} {name}\n")
    (data / "secret.txt").write_text("outside\n")
    # `/files` is relative: the function folder's `files`.
    write_function(root, "cases", "wagi_cases", [{"path": "/cases"}],
                   volumes={"/": str(data / "root"), "/data/one": str(data / "one"),
                            "/two": str(data / "two"), "/files": "files"}, **SLACK)
    (root / "cases" / "files").mkdir()
    (root / "cases" / "files" / "f.txt").write_text("relative\n")
    # Four modules compiled by the node and each worker: minutes on a busy machine.
    node = start_node(tmp, root, "--engine", engine, start_timeout_s=180)
    yield node, data
    stop(node)


def raw_get(node: Node, target: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    """GET `target` exactly as written (no client-side normalisation)."""
    host, port = node.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: wagi.test:{port}\r\n{headers}"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    hdrs = {k.lower(): v for k, v in fields.items()}
    if hdrs.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if not n:
                break
            out, rest = out + rest[:n], rest[n + 2 :]
        body = out
    return int(lines[0].split()[1]), hdrs, body


def report(node: Node, target: str, headers: str = "") -> tuple[str, list[str], dict[str, str]]:
    status, hdrs, body = raw_get(node, target, headers)
    assert status == 200, (target, status, body)
    assert hdrs["content-type"] == "text/plain"
    first, *rest = body.decode().splitlines()
    argv = [line.split("=", 1)[1] for line in rest if line.startswith("argv[")]
    env = dict(line.split("=", 1) for line in rest if not line.startswith("argv["))
    return first, argv, env


def paths(env: dict[str, str]) -> tuple[str, str, str, str, str]:
    return (env["SCRIPT_NAME"], env["PATH_INFO"], env["PATH_TRANSLATED"],
            env["X_MATCHED_ROUTE"], env["X_RAW_PATH_INFO"])


MAIN = "This is the main entry point"
EXACT = "This is the .../exact handler"
WILD = "This is the .../wildcard/... handler"


def test_exact_route_variables(wagi_node: tuple[Node, Path]) -> None:
    node, _ = wagi_node
    first, argv, env = report(node, "/")
    assert first == MAIN
    assert paths(env) == ("/", "", "", "/", "")
    assert argv == ["/"]


def test_wildcard_route_variables(wagi_node: tuple[Node, Path]) -> None:
    node, _ = wagi_node
    first, argv, env = report(node, "/test/fizz/buzz?a=1&b=2",
                              "Authorization: Basic c2VjcmV0\r\nX-Thing: T\r\n")
    port = node.url.rsplit(":", 1)[1]
    assert first == MAIN
    assert paths(env) == ("/test", "/fizz/buzz", "/fizz/buzz", "/test/...", "/fizz/buzz")
    assert argv == ["/test/fizz/buzz", "a=1", "b=2"]
    assert env["X_FULL_URL"] == f"http://wagi.test:{port}/test/fizz/buzz?a=1&b=2"
    assert env["SERVER_NAME"] == "wagi.test" and env["SERVER_PORT"] == port
    assert env["REMOTE_ADDR"] == env["REMOTE_HOST"] == "127.0.0.1"
    assert env["AUTH_TYPE"] == env["REMOTE_USER"] == ""
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1" and env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["QUERY_STRING"] == "a=1&b=2" and env["HTTP_X_THING"] == "T"
    for absent in ("HTTP_AUTHORIZATION", "HTTP_CONNECTION", "HTTP_CONTENT_LENGTH",
                   "HTTP_CONTENT_TYPE"):
        assert absent not in env


def test_path_info_is_decoded_and_raw_path_info_is_not(wagi_node: tuple[Node, Path]) -> None:
    node, _ = wagi_node
    _, argv, env = report(node, "/test/a%2Fb%20c+d%7E")
    assert env["PATH_INFO"] == env["PATH_TRANSLATED"] == "/a/b c+d~"
    assert env["X_RAW_PATH_INFO"] == "/a%2Fb%20c+d%7E"
    assert env["X_FULL_URL"].endswith("/test/a%2Fb%20c+d%7E")
    assert argv == ["/test/a%2Fb%20c+d%7E"]


@pytest.mark.parametrize(("target", "first", "expected"), [
    ("/exactparent", MAIN, ("/exactparent", "", "", "/exactparent", "")),
    ("/exactparent/exact", EXACT, ("/exactparent/exact", "", "", "/exactparent/exact", "")),
    ("/exactparent/wildcard/fizz/buzz", WILD,
     ("/exactparent/wildcard", "/fizz/buzz", "/fizz/buzz", "/exactparent/wildcard/...",
      "/fizz/buzz")),
    ("/wildcardparent", MAIN, ("/wildcardparent", "", "", "/wildcardparent/...", "")),
    ("/wildcardparent/fizz/buzz", MAIN,
     ("/wildcardparent", "/fizz/buzz", "/fizz/buzz", "/wildcardparent/...", "/fizz/buzz")),
    ("/wildcardparent/exact", EXACT,
     ("/wildcardparent/exact", "", "", "/wildcardparent/exact", "")),
    ("/wildcardparent/wildcard/fizz/buzz", WILD,
     ("/wildcardparent/wildcard", "/fizz/buzz", "/fizz/buzz", "/wildcardparent/wildcard/...",
      "/fizz/buzz")),
    ("/exactparentslash/exact", EXACT,
     ("/exactparentslash/exact", "", "", "/exactparentslash/exact", "")),
    ("/exactparentslash/wildcard/fizz/buzz", WILD,
     ("/exactparentslash/wildcard", "/fizz/buzz", "/fizz/buzz",
      "/exactparentslash/wildcard/...", "/fizz/buzz")),
    ("/exact", EXACT, ("/exact", "", "", "/exact", "")),
])
def test_dynamic_routes(wagi_node: tuple[Node, Path], target: str, first: str,
                        expected: tuple[str, ...]) -> None:
    node, _ = wagi_node
    got_first, _, env = report(node, target)
    assert got_first == first
    assert paths(env) == expected


def test_dynamic_routes_do_not_widen_an_exact_route(wagi_node: tuple[Node, Path]) -> None:
    node, _ = wagi_node
    assert raw_get(node, "/exactparent/other")[0] == 404
    assert raw_get(node, "/exactparent/exactly")[0] == 404


def test_the_named_entrypoint_is_called(wagi_node: tuple[Node, Path]) -> None:
    node, _ = wagi_node
    first, argv, env = report(node, "/entry1?x=1&y=2")
    assert first == "Entrypoint 1" and env["SCRIPT_NAME"] == "/entry1"
    # With its argv template.
    assert argv == ["tool", "/entry1", "--flags", "x=1", "y=2"]


def _cases(node: Node, query: str) -> tuple[int, bytes]:
    status, _, body = raw_get(node, "/cases?" + query)
    return status, body


def test_volumes(wagi_node: tuple[Node, Path]) -> None:
    node, data = wagi_node
    assert _cases(node, "case=read&path=/top.txt") == (200, b"root top.txt\n")
    assert _cases(node, "case=read&path=/data/one/a.txt") == (200, b"one a.txt\n")
    assert _cases(node, "case=read&path=/two/b.txt") == (200, b"two b.txt\n")
    assert raw_get(node, "/cases?case=read&path=/files/f.txt")[2] == b"relative\n"
    for path in ("/new.txt", "/two/new.txt", "/data/one/a.txt"):
        assert _cases(node, f"case=write&path={path}")[1].startswith(b"denied errno=")
    assert not (data / "root" / "new.txt").exists()
    assert (data / "one" / "a.txt").read_text() == "one a.txt\n"
    for path in ("/../secret.txt", "/two/../../secret.txt", "/etc/passwd"):
        assert _cases(node, f"case=read&path={path}")[1].startswith(b"denied errno=")


def _log_records(node: Node, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        text = node.log_file.read_text() if node.log_file.exists() else ""
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        found = [r for r in records if predicate(r)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_cgi_errors(wagi_node: tuple[Node, Path]) -> None:
    node, _ = wagi_node
    status, body = _cases(node, "case=noheader")
    assert status == 500
    assert "'location' or 'content-type'" in json.loads(body)["error"]["message"]
    assert _cases(node, "case=status") == (404, b"missing\n")
    status, body = _cases(node, "case=trap")
    assert status == 500
    assert "unreachable" in json.loads(body)["error"]["message"]


def test_stderr_is_logged_one_line_per_text_line(wagi_node: tuple[Node, Path]) -> None:
    node, _ = wagi_node
    with httpx.Client(base_url=node.url, timeout=10) as c:
        r = c.get("/cases", params={"case": "stderr"})
    assert r.status_code == 200 and r.content == b"logged\n"
    rid = r.headers["x-request-id"]
    lines = _log_records(node, lambda rec: rec.get("request_id") == rid
                         and rec.get("source") == "stderr")
    assert [rec["message"] for rec in lines] == ["first line", "second line", "third"], lines


# -- in one process (wasmtime): loading, refusals, the route text --------------


def test_sub_routes_of_a_function_loaded_on_demand(edge: EdgeHarness) -> None:
    edge.deploy(fn("dyn", "wagi_routes", path="/dyn", min_hot_instances=0, **SLACK))
    resp = edge.request("GET", "/dyn/exact")
    assert resp.status == 200 and resp.body.startswith(EXACT.encode() + b"\n")
    assert edge.request("GET", "/dyn").body.startswith(MAIN.encode() + b"\n")


def test_an_entrypoint_the_module_lacks_makes_it_unavailable(edge: EdgeHarness) -> None:
    edge.deploy(fn("bad", "wagi_routes", path="/bad", entrypoint="nope", **SLACK),
                fn("good", "wagi_routes", path="/good", entrypoint="entry1", **SLACK))
    resp = edge.request("GET", "/bad")
    assert resp.status == 503 and b"nope" in resp.body
    assert edge.request("GET", "/good").body.startswith(b"Entrypoint 1\n")


def test_the_route_text_of_a_routes_export() -> None:
    routes = parse_wagi_routes("/hello hello\n\n  /files/... serve  \n")
    assert routes == [(WagiRoute("/hello"), "hello"), (WagiRoute("/files", True), "serve")]
    for bad in ("", "/hello", "/hello hello\n/goodbye", "/a b c"):
        with pytest.raises(GuestError):
            parse_wagi_routes(bad)


@pytest.mark.parametrize(("parent", "sub", "joined"), [
    ("/exactparent", "/exact", "/exactparent/exact"),
    ("/exactparentslash/", "/wildcard/...", "/exactparentslash/wildcard/..."),
    ("/wildcardparent/...", "/exact", "/wildcardparent/exact"),
    ("/...", "/x/...", "/x/..."),
    ("/", "/exact", "/exact"),
])
def test_sub_routes_join_as_in_wagi(parent: str, sub: str, joined: str) -> None:
    assert WagiRoute.parse(parent).append(WagiRoute.parse(sub)).text == joined


def test_a_deploy_instruction_carries_the_entrypoint_and_argv() -> None:
    instr = DeployInstruction(function_id="f", version="1.0.0", sha256="ab" * 32, abi="wagi",
                              entrypoint="entry1", policy=FunctionPolicy(argv="x ${ARGS}"))
    spec = FunctionSpec.of(instr)
    assert (spec.entrypoint, spec.argv, wagi_entrypoint(spec)) == ("entry1", "x ${ARGS}", "entry1")
    plain = FunctionSpec.of(DeployInstruction(function_id="f", version="1.0.0", sha256="ab" * 32))
    assert (plain.entrypoint, plain.argv, wagi_entrypoint(plain)) == ("handle", None, "_start")
