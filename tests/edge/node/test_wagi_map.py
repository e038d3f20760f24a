"""`edgefn edge serve --modules-toml` as a real process: a WAGI application directory
(modules in WebAssembly text and C, a volume, outbound HTTP to a loopback server)
served from its `modules.toml` as it is, on every engine available here."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgefn.edge.wagi_map import allow_hosts, load_modules_toml, wagi_route
from edgefn.sandbox import create_engine
from edgefn.sandbox.errors import EngineUnavailable
from tests.conftest import wasm_path
from tests.edge.node.test_server import Node, start_node, stop
from tests.loopback import QuietHandler, loopback

CORPUS = Path(__file__).parents[2] / "fixtures" / "wagi"


class Upstream(QuietHandler):
    """Answers with what it was sent: method, the X-Test header and the body."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        answer = f"{self.command} {self.headers.get('x-test')} ".encode() + body
        self.send_response(200)
        self.send_header("x-upstream", "seen")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


def write_app(root: Path, upstream: str) -> Path:
    """The application directory: the corpus, two C modules and its modules.toml."""
    app = root / "app"
    shutil.copytree(CORPUS, app)
    for name in ("wagi_http", "wagi_volume"):
        shutil.copy(wasm_path(name), app / f"{name}.wasm")
    (app / "modules.toml").write_text(f"""
default_host = "localhost:3000"

[[module]]
route = "/"
module = "hello.wat"

[[module]]
route = "/hello/..."
module = "file://{app}/hello.wat"

[[module]]
route = "/error"
module = "error.wat"

[[module]]
route = "/crlf"
module = "crlf.wat"
colour = "blue"

[[module]]
route = "/http"
module = "wagi_http.wasm"
allowed_hosts = ["http://127.0.0.1"]
environment = {{ UPSTREAM = "{upstream}/echo" }}
http_max_concurrency = 2

[[module]]
route = "/http-elsewhere"
module = "wagi_http.wasm"
allowed_hosts = ["https://example.com"]
environment = {{ UPSTREAM = "{upstream}/echo" }}

[[module]]
route = "/http-none"
module = "wagi_http.wasm"
environment = {{ UPSTREAM = "{upstream}/echo" }}

[[module]]
route = "/broken"
module = "missing.wasm"

[[module]]
route = "/defaultep"
module = "entrypoints.wat"

[[module]]
route = "/ep1"
module = "entrypoints.wat"
entrypoint = "ep1"

[[module]]
route = "/volume"
module = "wagi_volume.wasm"
volumes = {{ "/data" = "static" }}
""")
    return app / "modules.toml"


def _engines() -> list[str]:
    return ["wasmtime", "wasmedge"]


@pytest.fixture(scope="module", params=_engines())
def engine_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name != "wasmtime":
        try:
            create_engine(name).close()
        except EngineUnavailable as exc:
            pytest.skip(f"{name} unavailable here: {exc}")
    return name


# Ten functions compiled and warmed before the port opens: slow on a loaded machine.
START_S = 120


@pytest.fixture(scope="module")
def app_node(tmp_path_factory: pytest.TempPathFactory,
             engine_name: str) -> Iterator[tuple[Node, Path]]:
    tmp_path = tmp_path_factory.mktemp(f"wagi-{engine_name}")
    with loopback(Upstream) as upstream:
        toml = write_app(tmp_path, upstream)
        node = start_node(tmp_path, None, "--modules-toml", str(toml), "--engine", engine_name,
                          "--allow-private-egress", "127.0.0.1/32", "--workers", "1",
                          start_timeout_s=START_S)
        try:
            yield node, tmp_path
        finally:
            stop(node)


def test_a_module_map_is_served_as_it_is(app_node: tuple[Node, Path]) -> None:
    node, tmp = app_node
    with httpx.Client(base_url=node.url, timeout=10) as c:
        r = c.get("/")
        assert (r.status_code, r.text) == (200, "hello from wat\n")
        assert r.headers["content-type"] == "text/plain"
        for path in ("/hello", "/hello/a/b"):
            assert c.get(path).text == "hello from wat\n"
        r = c.get("/error")
        assert (r.status_code, r.text) == (404, "no such thing\n")
        r = c.get("/crlf")
        assert (r.status_code, r.headers["x-line-end"], r.text) == (
            201, "crlf", "lines ended with CRLF\r\n")
        assert c.get("/nothing-here").status_code == 404
        assert c.get("/broken").status_code == 404
    stderr = (tmp / "stderr").read_text()
    assert "unknown key 'colour' ignored" in stderr
    assert "missing.wasm does not exist" in stderr
    assert "default_host" not in stderr


def test_outbound_http_goes_through_the_egress_policy(app_node: tuple[Node, Path]) -> None:
    node, _ = app_node
    with httpx.Client(base_url=node.url, timeout=10) as c:
        r = c.get("/http")
        assert r.status_code == 200
        assert r.text.splitlines() == [
            "req=0", "status=200", "header_get=0 seen", "missing=5", "small=4",
            "body=POST wagi ping", "closed=1",
        ]
        # Not on its allowlist: DestinationNotAllowed, nothing sent.
        assert c.get("/http-elsewhere").text == "req=7\n"
        # No allowlist at all: the module is not loaded.
        r = c.get("/http-none")
        assert r.status_code == 503
        assert "wasi_experimental_http" in r.text


def test_entrypoints_and_volumes(app_node: tuple[Node, Path]) -> None:
    node, _ = app_node
    with httpx.Client(base_url=node.url, timeout=10) as c:
        assert c.get("/defaultep").text == "Default entrypoint\n"
        assert c.get("/ep1").text == "Entrypoint 1\n"
        r = c.get("/volume")
        assert (r.status_code, r.text) == (200, "greetings from a volume\n")


def test_loopback_needs_the_operator_too(tmp_path: Path) -> None:
    """A map naming a loopback host asks for private egress; a node that opened none
    still refuses it (the same protection as http_fetch)."""
    with loopback(Upstream) as upstream:
        toml = write_app(tmp_path, upstream)
        node = start_node(tmp_path, None, "--modules-toml", str(toml), "--workers", "1",
                          start_timeout_s=START_S)
        try:
            r = httpx.get(node.url + "/http", timeout=10)
        finally:
            stop(node)
    assert r.status_code == 200
    assert r.text.startswith("req=") and r.text != "req=0\n"


def test_the_map_reads_as_wagi_reads_it(tmp_path: Path) -> None:
    toml = write_app(tmp_path, "http://127.0.0.1:9")
    warnings: list[str] = []
    loaded = load_modules_toml(toml, warn=warnings.append)
    specs = {m.spec.routes[0].path: m.spec for m in loaded.modules}
    assert set(specs) == {"/", "/hello/*", "/error", "/crlf", "/http", "/http-elsewhere",
                          "/http-none", "/defaultep", "/ep1", "/volume"}
    assert [s.id for s in specs.values()][:3] == ["hello", "hello-2", "error"]
    assert all(s.abi == "wagi" for s in specs.values())
    assert specs["/"].entrypoint == "_start" and specs["/ep1"].entrypoint == "ep1"
    # WAGI sets no limits; Rust programs start above the node's 1 MiB default.
    assert (specs["/"].memory_pages, specs["/"].max_execution_ms) == (1024, 30_000)
    assert specs["/volume"].volumes == {"/data": str((tmp_path / "app" / "static").resolve())}
    http = specs["/http"]
    assert http.http_fetch.allow_hosts == ("127.0.0.1",) and http.http_fetch.allow_private
    assert http.http_max_concurrency == 2 and http.limits.max_http_responses == 2
    assert http.env == {"UPSTREAM": "http://127.0.0.1:9/echo"}
    assert specs["/http-elsewhere"].http_fetch.allow_hosts == ("example.com",)
    assert not specs["/http-elsewhere"].http_fetch.allow_private
    assert list(loaded.problems) == ["module 8 (missing.wasm)"]
    assert warnings == [f"{toml}: module 4 (crlf.wat): unknown key 'colour' ignored"]


@pytest.mark.parametrize(("route", "path"), [("/", "/"), ("/...", "/*"), ("/a/...", "/a/*"),
                                             ("/a/", "/a/")])
def test_routes(route: str, path: str) -> None:
    assert wagi_route(route) == path


@pytest.mark.parametrize("route", ["a", "/a...", "/a/.../b", "/a/*"])
def test_bad_routes(route: str) -> None:
    with pytest.raises(ValueError, match="route"):
        wagi_route(route)


def test_allowed_hosts() -> None:
    assert allow_hosts(["insecure:allow-all"]) == (("*",), False)
    assert allow_hosts(["https://api.brigade.sh", "https://API.brigade.sh:8443/x"]) == (
        ("api.brigade.sh",), False)
    assert allow_hosts(["http://localhost:3000", "http://192.168.0.1"]) == (
        ("localhost", "192.168.0.1"), True)
    with pytest.raises(ValueError):
        allow_hosts("https://one.example")


def test_unreadable_map_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "modules.toml"
    bad.write_text("[[module]\nroute = ")
    with pytest.raises(ValueError, match=r"modules\.toml"):
        load_modules_toml(bad)
    bad.write_text('[[module]]\nroute = "/"\nmodule = "bindle:example.com/x/1.0.0"\n')
    assert "bindle: references are not served" in next(iter(
        load_modules_toml(bad).problems.values()))
