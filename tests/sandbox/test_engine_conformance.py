"""The guest contract of docs/edge.md (ABIs, host functions, limits) against every
engine: the same modules, the same answers.

Runs once per engine (`any_engine`); an engine whose library is not installed is
skipped with the reason, and the run's summary says which engines really ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgefn.sandbox import Engine, GuestRequest, Instance, Limits, Module, WasiOptions
from edgefn.sandbox.abi import (
    GuestResponse,
    WagiRoute,
    cgi_environ,
    parse_cgi,
    parse_response,
    wagi_argv,
)
from edgefn.sandbox.errors import (
    GuestError,
    GuestTimeout,
    GuestTrap,
    InvalidModule,
    InvocationError,
    ResponseTooLarge,
)
from edgefn.sandbox.wat import wat_to_wasm
from tests.conftest import wasm_path


class FakeHost:
    """A `Host` with the contract's policy in its simplest form, recording every call."""

    def __init__(
        self,
        *,
        kv_enabled: bool = False,
        fetch_allowed: bool = False,
        env: dict[bytes, bytes] | None = None,
        headers: dict[bytes, bytes] | None = None,
        secrets: dict[bytes, bytes | int] | None = None,
        seconds: float = 5.0,
    ) -> None:
        self.logs: list[tuple[int, bytes]] = []
        self.outputs: list[tuple[int, bytes]] = []
        self.metrics: list[tuple[bytes, float, bytes]] = []
        self.kv: dict[bytes, bytes] = {}
        self.kv_enabled = kv_enabled
        self.fetch_allowed = fetch_allowed
        self.fetches: list[bytes] = []
        self.env = env or {}
        self.headers = headers or {}
        # What the function lists: a value, or the code the host answers for it.
        self.secrets = secrets or {}
        self.deadline = time.monotonic() + seconds
        self.raise_in: str | None = None

    def _maybe_raise(self, name: str) -> None:
        if self.raise_in == name:
            raise KeyError(f"raised in {name}")

    def log(self, level: int, message: bytes) -> None:
        self._maybe_raise("log")
        self.logs.append((level, message))

    def output(self, stream: int, data: bytes) -> None:
        self.outputs.append((stream, data))

    def metrics_increment(self, name: bytes, value: float, tags: bytes) -> None:
        self.metrics.append((name, value, tags))

    def kv_get(self, key: bytes) -> bytes | int:
        if not self.kv_enabled:
            return -2
        return self.kv.get(key, -1)

    def kv_put(self, key: bytes, value: bytes, ttl_seconds: int) -> int:
        self._maybe_raise("kv_put")
        if not self.kv_enabled:
            return -2
        self.kv[key] = value
        return 0

    def http_fetch(self, request: bytes) -> bytes | int:
        self.fetches.append(request)
        if not self.fetch_allowed:
            return -2
        return b"200\ncontent-type: text/plain\n\nfetched"

    def env_get(self, key: bytes) -> bytes | int:
        return self.env.get(key, -1)

    def request_id(self) -> bytes | int:
        return b"req-0123456789"

    def request_header(self, name: bytes) -> bytes | int:
        return self.headers.get(name, -1)

    def secret_get(self, name: bytes) -> bytes | int:
        return self.secrets.get(name, -2)

    def remaining_seconds(self) -> float:
        return self.deadline - time.monotonic()

    def output_bytes(self, stream: int) -> bytes:
        return b"".join(data for s, data in self.outputs if s == stream)


def request(
    method: str = "GET", target: str = "/", body: bytes = b"", headers: str = ""
) -> GuestRequest:
    head = f"host: edge.test\nx-request-id: req-0123456789\n{headers}".encode()
    return GuestRequest(method.encode(), target.encode(), head, body)


def wagi_request(
    target: str = "/", body: bytes = b"", method: str = "POST", *, route: str = "/...",
    entrypoint: str = "_start", argv: str | None = None,
) -> GuestRequest:
    path, _, query = target.partition("?")
    env = cgi_environ(
        method=method,
        path=path,
        query=query,
        route=WagiRoute.parse(route),
        server_name="edge.test",
        server_port="80",
        headers=[(b"host", b"edge.test"), (b"x-custom", b"yes")],
        body_length=len(body),
    )
    req = request(method, target, body)
    req.cgi_env = env
    req.argv = wagi_argv(argv, path, query)
    req.entrypoint = entrypoint
    return req


@pytest.fixture(scope="module")
def compile_fixture(any_engine: Engine) -> Iterator:  # type: ignore[type-arg]
    modules: list[Module] = []

    def compile_(
        name: str, limits: Limits | None = None, wasi: WasiOptions | None = None
    ) -> Module:
        module = any_engine.compile(
            wasm_path(name).read_bytes(), limits or Limits(), wasi or WasiOptions()
        )
        modules.append(module)
        return module

    yield compile_
    for module in modules:
        module.close()


@pytest.fixture
def run(compile_fixture):  # type: ignore[no-untyped-def]
    """Call a fixture module once on a fresh instance; returns (response, host)."""
    instances: list[Instance] = []

    def run_(
        name: str,
        req: GuestRequest | None = None,
        host: FakeHost | None = None,
        limits: Limits | None = None,
        wasi: WasiOptions | None = None,
    ) -> tuple[GuestResponse, FakeHost]:
        module = compile_fixture(name, limits, wasi)
        inst = module.instantiate()
        instances.append(inst)
        host = host or FakeHost()
        raw = inst.invoke(req or request(), host)
        parse = parse_response if module.abi == "edge-v1" else parse_cgi
        return parse(raw), host

    def raw_(name: str, req: GuestRequest) -> bytes:
        inst = compile_fixture(name).instantiate()
        instances.append(inst)
        return inst.invoke(req, FakeHost())

    run_.raw = raw_  # type: ignore[attr-defined]
    yield run_
    for inst in instances:
        inst.close()


def header(resp: GuestResponse, name: str) -> str:
    return dict(resp.headers)[name.encode()].decode()


# -- section 1: edge-v1 -----------------------------------------------------------


def test_echo_body_method_and_target(run) -> None:  # type: ignore[no-untyped-def]
    resp, _ = run("echo", request("POST", "/a/b?x=1", b"hello edge"))
    assert resp.status == 200
    assert resp.body == b"hello edge"
    assert header(resp, "x-method") == "POST"
    assert header(resp, "x-path") == "/a/b?x=1"
    assert header(resp, "x-body-length") == "10"


@pytest.mark.parametrize("status", [201, 302, 418, 503])
def test_guest_chooses_the_status(run, status: int) -> None:  # type: ignore[no-untyped-def]
    resp, _ = run("echo", request("GET", f"/status/{status}"))
    assert resp.status == status


def test_headers_arrive_encoded_and_leave_parsed(run) -> None:  # type: ignore[no-untyped-def]
    resp, _ = run("headers", request(headers="accept: a/b\naccept: c/d\n"))
    lines = resp.body.decode().splitlines()
    assert "host: edge.test" in lines and "x-request-id: req-0123456789" in lines
    assert lines.count("accept: a/b") == 1 and lines.count("accept: c/d") == 1
    assert header(resp, "content-type") == "text/plain"
    assert (b"x-one", b"1") in resp.headers and (b"x-two", b"2") in resp.headers


def test_instance_is_reused_and_initialize_runs_once(compile_fixture) -> None:  # type: ignore[no-untyped-def]
    module = compile_fixture("counter")
    assert module.reusable
    inst = module.instantiate()
    try:
        bodies = [parse_response(inst.invoke(request(), FakeHost())) for _ in range(3)]
        assert [r.body for r in bodies] == [b"1", b"2", b"3"]
        assert {header(r, "x-init") for r in bodies} == {"1"}
        assert inst.memory_bytes > 0
    finally:
        inst.close()
    fresh = module.instantiate()
    try:
        assert parse_response(fresh.invoke(request(), FakeHost())).body == b"1"
    finally:
        fresh.close()


def test_negative_return_is_a_guest_error_and_keeps_the_instance(compile_fixture) -> None:  # type: ignore[no-untyped-def]
    inst = compile_fixture("negative").instantiate()
    try:
        for _ in range(2):
            with pytest.raises(GuestError) as info:
                inst.invoke(request(), FakeHost())
            assert info.value.status == 500 and not info.value.discard
    finally:
        inst.close()


def test_response_over_the_cap_is_502(run) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ResponseTooLarge) as info:
        run("bigresponse")
    assert info.value.status == 502


def test_sized_response_fits_exactly_the_cap(run) -> None:  # type: ignore[no-untyped-def]
    limits = Limits(max_response_bytes=4096)
    resp, _ = run("sized", request(target="/?n=3000"), limits=limits)
    assert len(resp.body) == 3000 and resp.body[:3] == b"abc"
    with pytest.raises(ResponseTooLarge):
        run("sized", request(target="/?n=4096"), limits=limits)


@pytest.mark.parametrize(
    ("module", "body", "error"),
    [("echo", b"x" * 90_000, "exceeds the cap"), ("negative", b"x" * 60_000, "error code -1")],
)
def test_a_kept_instance_gets_its_request_buffer_back(  # type: ignore[no-untyped-def]
    compile_fixture, module: str, body: bytes, error: str
) -> None:
    """Each request borrows body + response cap (~150 KiB here) from the guest's 1 MiB
    heap; were it not handed back after a failed but kept call, `alloc` would return 0
    within a few requests and the instance would fail every request after."""
    inst = compile_fixture(module, Limits(memory_pages=16)).instantiate()
    try:
        for _ in range(20):
            with pytest.raises(InvocationError, match=error) as info:
                inst.invoke(request("POST", body=body), FakeHost())
            assert not info.value.discard
        assert inst.memory_bytes <= 16 * 65536
        if module == "echo":
            assert parse_response(inst.invoke(request(body=b"small"), FakeHost())).body == b"small"
    finally:
        inst.close()


def test_an_unusable_alloc_pointer_discards_the_instance(compile_fixture) -> None:  # type: ignore[no-untyped-def]
    """A body larger than the guest's memory: `alloc` returns 0. The heap may be left
    in any state, so the call is a trap (500) and the instance is closed, never reused."""
    module = compile_fixture("echo", Limits(memory_pages=16))
    inst = module.instantiate()
    try:
        with pytest.raises(GuestTrap, match="unusable pointer") as info:
            inst.invoke(request("POST", body=b"x" * (2 << 20)), FakeHost())
        assert info.value.status == 500 and info.value.discard
        assert inst.memory_bytes == 0
        with pytest.raises(GuestTrap, match="closed"):
            inst.invoke(request(body=b"small"), FakeHost())
    finally:
        inst.close()
    fresh = module.instantiate()
    try:
        assert parse_response(fresh.invoke(request(body=b"small"), FakeHost())).body == b"small"
    finally:
        fresh.close()


# -- section 2: wagi --------------------------------------------------------------


def test_wagi_hello(run) -> None:  # type: ignore[no-untyped-def]
    resp, _ = run("wagi_hello", wagi_request())
    assert resp.status == 200
    assert header(resp, "content-type") == "text/plain"
    assert resp.body == b"hello from wagi\n"


def test_wagi_gets_the_cgi_environment_and_declared_env(run) -> None:  # type: ignore[no-untyped-def]
    wasi = WasiOptions(env=(("GREETING", "hi"),))
    resp, _ = run("wagi_env", wagi_request("/x/y?q=1"), wasi=wasi)
    lines = set(resp.body.decode().splitlines())
    for expected in (
        "REQUEST_METHOD=POST",
        "PATH_INFO=/x/y",
        "QUERY_STRING=q=1",
        "SERVER_NAME=edge.test",
        "HTTP_X_CUSTOM=yes",
        "GREETING=hi",
    ):
        assert expected in lines


def _report(resp: GuestResponse) -> tuple[str, list[str], dict[str, str]]:
    """What `wagi_routes` answers: its description, argv, and environment."""
    first, *rest = resp.body.decode().splitlines()
    argv = [line.split("=", 1)[1] for line in rest if line.startswith("argv[")]
    env = dict(line.split("=", 1) for line in rest if not line.startswith("argv["))
    return first, argv, env


def test_wagi_argv_is_the_path_and_the_query_items(run) -> None:  # type: ignore[no-untyped-def]
    resp, _ = run("wagi_routes", wagi_request("/app/run?a=1&b=two"))
    assert _report(resp)[1] == ["/app/run", "a=1", "b=two"]
    resp, _ = run("wagi_routes", wagi_request("/app/run"))
    assert _report(resp)[1] == ["/app/run"]


def test_wagi_argv_template(run) -> None:  # type: ignore[no-untyped-def]
    req = wagi_request("/app/run?a=1&b=2", argv="prog --path ${SCRIPT_NAME} ${ARGS} end")
    resp, _ = run("wagi_routes", req)
    assert _report(resp)[1] == ["prog", "--path", "/app/run", "a=1", "b=2", "end"]


def test_wagi_calls_the_named_export(run) -> None:  # type: ignore[no-untyped-def]
    resp, _ = run("wagi_routes", wagi_request(entrypoint="entry1"))
    assert _report(resp)[0] == "Entrypoint 1"
    resp, _ = run("wagi_routes", wagi_request())
    assert _report(resp)[0] == "This is the main entry point"
    with pytest.raises(GuestTrap, match="no function 'missing'"):
        run("wagi_routes", wagi_request(entrypoint="missing"))


def test_wagi_routes_export_lists_its_sub_routes(run) -> None:  # type: ignore[no-untyped-def]
    inst_req = GuestRequest(b"", b"", b"", b"", entrypoint="_routes")
    module_raw = run.raw("wagi_routes", inst_req)
    assert module_raw == b"/exact exact\n/wildcard/... wildcard\n"


def test_wagi_cgi_variables_override_the_function_env(run) -> None:  # type: ignore[no-untyped-def]
    wasi = WasiOptions(env=(("PATH_INFO", "spoofed"), ("GREETING", "hi")))
    resp, _ = run("wagi_routes", wagi_request("/x/y"), wasi=wasi)
    env = _report(resp)[2]
    assert env["PATH_INFO"] == "/x/y" and env["GREETING"] == "hi"


def test_wagi_without_content_type_or_location_is_500(run) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GuestError, match="'location' or 'content-type'") as info:
        run("wagi_cases", wagi_request("/?case=noheader"))
    assert info.value.status == 500
    resp, _ = run("wagi_cases", wagi_request("/?case=status"))
    assert resp.status == 404 and resp.body == b"missing\n"


def test_wagi_trap_names_the_trap(run) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GuestTrap) as info:
        run("wagi_cases", wagi_request("/?case=trap"))
    assert info.value.status == 500
    assert "unreachable" in str(info.value), str(info.value)


def test_wagi_stderr_is_logged_a_line_at_a_time(run) -> None:  # type: ignore[no-untyped-def]
    resp, host = run("wagi_cases", wagi_request("/?case=stderr"))
    assert resp.body == b"logged\n"
    assert host.outputs == [(2, b"first line"), (2, b"second line"), (2, b"third")]


def _volumes(tmp_path: Path) -> tuple[WasiOptions, Path]:
    root, one, two = tmp_path / "root", tmp_path / "one", tmp_path / "two"
    for d, name in ((root, "top.txt"), (one, "a.txt"), (two, "b.txt")):
        d.mkdir()
        (d / name).write_text(f"{d.name} {name}\n")
    (tmp_path / "secret.txt").write_text("outside\n")
    wasi = WasiOptions(volumes=(("/", str(root)), ("/data/one", str(one)), ("/two", str(two))))
    return wasi, tmp_path


def _case(run, query: str, wasi: WasiOptions) -> bytes:  # type: ignore[no-untyped-def]
    resp, _ = run("wagi_cases", wagi_request("/?" + query), wasi=wasi)
    return bytes(resp.body)


def test_volumes_are_readable(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wasi, _ = _volumes(tmp_path)
    assert _case(run, "case=read&path=/top.txt", wasi) == b"root top.txt\n"
    assert _case(run, "case=read&path=/data/one/a.txt", wasi) == b"one a.txt\n"
    assert _case(run, "case=read&path=/two/b.txt", wasi) == b"two b.txt\n"
    assert _case(run, "case=list&path=/two", wasi) == b"b.txt\n"


def test_volumes_are_read_only_and_closed(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wasi, base = _volumes(tmp_path)
    for path in ("/new.txt", "/two/new.txt", "/data/one/a.txt"):
        assert _case(run, f"case=write&path={path}", wasi).startswith(b"denied errno="), path
    assert not (base / "root" / "new.txt").exists() and not (base / "two" / "new.txt").exists()
    assert (base / "one" / "a.txt").read_text() == "one a.txt\n"
    for path in ("/../secret.txt", "/two/../../secret.txt", "/data/one/../../secret.txt",
                 "/etc/passwd"):
        body = _case(run, f"case=read&path={path}", wasi)
        assert body.startswith(b"denied errno="), (path, body)


@pytest.mark.parametrize("volumes", [(("data", "/tmp"),), (("/a/../b", "/tmp"),),
                                     (("/x", "/no/such/dir"),), (("/", "/tmp"), ("/", "/tmp"))])
def test_unusable_volumes_are_refused(any_engine: Engine, volumes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidModule):
        any_engine.compile(wasm_path("wagi_cases").read_bytes(), Limits(),
                           WasiOptions(volumes=volumes))


def test_wagi_body_is_stdin_and_status_header_counts(run) -> None:  # type: ignore[no-untyped-def]
    resp, _ = run("wagi_stdin", wagi_request(body=b"posted body"))
    assert resp.status == 201
    assert resp.body == b"posted body"


def test_wagi_nonzero_exit_is_500(run) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GuestError) as info:
        run("wagi_exit", wagi_request())
    assert info.value.status == 500


def test_wagi_runs_one_request_per_instance(compile_fixture) -> None:  # type: ignore[no-untyped-def]
    module = compile_fixture("wagi_hello")
    assert not module.reusable
    inst = module.instantiate()
    inst.invoke(wagi_request(), FakeHost())
    with pytest.raises(GuestTrap):
        inst.invoke(wagi_request(), FakeHost())
    inst.close()


class UpstreamHost(FakeHost):
    """A host whose http_fetch answers as an upstream server would, unless denied."""

    def http_fetch(self, request: bytes) -> bytes | int:
        self.fetches.append(request)
        if not self.fetch_allowed:
            return -2
        return b"200\nx-upstream: seen\ncontent-type: text/plain\n\nPOST wagi ping"


_UPSTREAM = WasiOptions(env=(("UPSTREAM", "http://up.test/echo"),))


def test_wagi_outbound_http_through_http_fetch(run) -> None:  # type: ignore[no-untyped-def]
    """Every call of wasi_experimental_http, answered from the host's http_fetch."""
    resp, host = run("wagi_http", wagi_request(), UpstreamHost(fetch_allowed=True),
                     wasi=_UPSTREAM)
    assert resp.body.decode().splitlines() == [
        "req=0", "status=200", "header_get=0 seen", "missing=5", "small=4",
        "body=POST wagi ping", "closed=1",
    ]
    assert host.fetches == [
        b"POST http://up.test/echo\nx-test: wagi\ncontent-type: text/plain\n\nping"
    ]


def test_wagi_outbound_http_denied_is_destination_not_allowed(run) -> None:  # type: ignore[no-untyped-def]
    resp, host = run("wagi_http", wagi_request(), UpstreamHost(), wasi=_UPSTREAM)
    assert resp.body == b"req=7\n"
    assert len(host.fetches) == 1


def test_wagi_outbound_http_bounded_open_responses(run) -> None:  # type: ignore[no-untyped-def]
    """With no response allowed open, `req` answers TooManySessions without fetching."""
    host = UpstreamHost(fetch_allowed=True)
    resp, _ = run("wagi_http", wagi_request(), host, wasi=_UPSTREAM,
                  limits=Limits(max_http_responses=0))
    assert resp.body == b"req=13\n"
    assert host.fetches == []


def test_edge_v1_may_not_import_wasi_http(any_engine: Engine) -> None:
    wat = """(module
      (import "wasi_experimental_http" "close" (func (param i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "alloc") (param i32) (result i32) (i32.const 0))
      (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
        (i32.const 0)))"""
    with pytest.raises(InvalidModule, match="only a WAGI program"):
        any_engine.compile(wat_to_wasm(wat), Limits(), WasiOptions())


def test_wagi_response_over_the_cap_is_502(run) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ResponseTooLarge):
        run("wagi_hello", wagi_request(), limits=Limits(max_response_bytes=8))


def test_wagi_timeout_is_504(run) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    with pytest.raises(GuestTimeout) as info:
        run("wagi_loop", wagi_request(), limits=Limits(max_execution_ms=100))
    assert info.value.status == 504
    assert time.monotonic() - started < 2.0


# -- section 3: host functions ----------------------------------------------------


def _call(run, target: str, host: FakeHost, body: bytes = b""):  # type: ignore[no-untyped-def]
    resp, _ = run("hostcalls", request("POST", target, body), host)
    return int(header(resp, "x-code")), resp.body


def test_log_every_level(run) -> None:  # type: ignore[no-untyped-def]
    host = FakeHost()
    _call(run, "/log", host)
    assert host.logs == [
        (0, b"debug line"),
        (1, b"info line"),
        (2, b"notice line"),
        (3, b"warn line"),
        (4, b"error line"),
    ]


def test_metrics_increment(run) -> None:  # type: ignore[no-untyped-def]
    host = FakeHost()
    _call(run, "/metric", host)
    assert host.metrics == [(b"hits", 1.5, b"route=a\n")]


def test_kv_is_denied_by_default(run) -> None:  # type: ignore[no-untyped-def]
    host = FakeHost()
    assert _call(run, "/kv/put?key=k&value=v&ttl=5", host)[0] == -2
    assert _call(run, "/kv/get?key=k", host)[0] == -2


def test_kv_put_then_get_and_not_found(run) -> None:  # type: ignore[no-untyped-def]
    host = FakeHost(kv_enabled=True)
    assert _call(run, "/kv/put?key=k&value=hello&ttl=5", host)[0] == 0
    assert _call(run, "/kv/get?key=k", host) == (5, b"hello")
    assert _call(run, "/kv/get?key=missing", host)[0] == -1


def test_http_fetch_allowed_and_denied(run) -> None:  # type: ignore[no-untyped-def]
    raw = b"GET https://api.example.com/x\naccept: */*\n\n"
    allowed = FakeHost(fetch_allowed=True)
    code, body = _call(run, "/fetch", allowed, raw)
    assert body == b"200\ncontent-type: text/plain\n\nfetched" and code == len(body)
    assert allowed.fetches == [raw]
    assert _call(run, "/fetch", FakeHost(), raw)[0] == -2


def test_env_get(run) -> None:  # type: ignore[no-untyped-def]
    host = FakeHost(env={b"REGION": b"eu-west"})
    assert _call(run, "/env?name=REGION", host) == (7, b"eu-west")
    assert _call(run, "/env?name=NOPE", host)[0] == -1


def test_request_id_and_header(run) -> None:  # type: ignore[no-untyped-def]
    host = FakeHost(headers={b"x-user": b"alice"})
    assert _call(run, "/reqid", host) == (14, b"req-0123456789")
    assert _call(run, "/header?name=x-user", host) == (5, b"alice")
    assert _call(run, "/header?name=x-none", host)[0] == -1


def _secret(run, target: str, host: FakeHost) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    resp, _ = run("secret", request("GET", target), host)
    return int(header(resp, "x-code")), resp.body


def test_secret_get_listed_unlisted_missing_and_unresolved(run) -> None:  # type: ignore[no-untyped-def]
    host = FakeHost(secrets={b"API_KEY": b"s3cr3t-value", b"GONE": -1, b"LATER": -4})
    assert _secret(run, "/secret?name=API_KEY", host) == (12, b"s3cr3t-value")
    assert _secret(run, "/secret?name=API_KEY&cap=4", host) == (12, b"s3cr")
    assert _secret(run, "/secret?name=OTHER", host) == (-2, b"")
    assert _secret(run, "/secret?name=GONE", host) == (-1, b"")
    assert _secret(run, "/secret?name=LATER", host) == (-4, b"")


def test_value_longer_than_out_cap_is_truncated_with_full_length(run) -> None:  # type: ignore[no-untyped-def]
    assert _call(run, "/reqid?cap=4", FakeHost()) == (14, b"req-")


def test_host_exception_is_reraised_as_itself(compile_fixture) -> None:  # type: ignore[no-untyped-def]
    inst = compile_fixture("hostcalls").instantiate()
    host = FakeHost()
    host.raise_in = "log"
    try:
        with pytest.raises(KeyError, match="raised in log"):
            inst.invoke(request("GET", "/log"), host)
    finally:
        inst.close()


def test_host_call_past_the_deadline_is_a_timeout(compile_fixture) -> None:  # type: ignore[no-untyped-def]
    inst = compile_fixture("hostcalls").instantiate()
    try:
        with pytest.raises(GuestTimeout):
            inst.invoke(request("GET", "/reqid"), FakeHost(seconds=-1))
    finally:
        inst.close()


class _SlowKvHost(FakeHost):
    """kv_get answers after `delay_s`: past the deadline when it is longer."""

    def __init__(self, delay_s: float, **kw: float) -> None:
        super().__init__(kv_enabled=True, **kw)
        self.delay_s = delay_s

    def kv_get(self, key: bytes) -> bytes | int:
        time.sleep(self.delay_s)
        return b"late"


def test_waiting_call_past_the_deadline_is_a_timeout_and_ends_the_instance(
    compile_fixture,  # type: ignore[no-untyped-def]
) -> None:
    inst = compile_fixture("hostcalls").instantiate()
    try:
        with pytest.raises(GuestTimeout):
            inst.invoke(request("GET", "/kv/get?key=k"), _SlowKvHost(0.3, seconds=0.1))
        # A guest abandoned in its call is never resumed: its instance is closed.
        with pytest.raises(GuestTrap, match="closed"):
            inst.invoke(request("GET", "/reqid"), FakeHost())
    finally:
        inst.close()


def test_host_exception_in_a_waiting_call_is_reraised_as_itself(compile_fixture) -> None:  # type: ignore[no-untyped-def]
    module = compile_fixture("hostcalls")
    inst = module.instantiate()
    host = FakeHost(kv_enabled=True)
    host.raise_in = "kv_put"
    try:
        with pytest.raises(KeyError, match="raised in kv_put"):
            inst.invoke(request("POST", "/kv/put?key=k", b"v"), host)
    finally:
        inst.close()
    # The module is fine: a new instance serves the next request.
    again = module.instantiate()
    try:
        assert _code_of(again.invoke(request("POST", "/kv/put?key=k", b"v"),
                                     FakeHost(kv_enabled=True))) == 0
    finally:
        again.close()


def _code_of(raw: bytes) -> int:
    return int(header(parse_response(raw), "x-code"))


# A guest that asks kv_get to write its answer far outside its two pages of memory.
_KV_OUT_OF_BOUNDS = """(module
  (import "edge" "kv_get" (func $kv_get (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "key")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (drop (call $kv_get (i32.const 16) (i32.const 3) (i32.const 0x7fff0000) (i32.const 64)))
    (i32.const 0)))"""


@pytest.mark.parametrize("start", ["(unreachable)", "(drop (call $kv_get (i32.const 16) "
                                   "(i32.const 3) (i32.const 0) (i32.const 0)))"])
def test_a_module_with_a_waiting_import_whose_start_fails_is_refused(
    any_engine: Engine, start: str,
) -> None:
    """A start function that traps, or that calls a waiting host function before any
    invocation exists, fails its instantiation as a trap (500), on either kind of call."""
    wat = _KV_OUT_OF_BOUNDS.replace('(memory (export "memory") 2)',
                                    f'(memory (export "memory") 2) (func $s {start}) (start $s)')
    module = any_engine.compile(wat_to_wasm(wat), Limits(), WasiOptions())
    try:
        with pytest.raises(GuestTrap, match="instantiation failed"):
            module.instantiate()
    finally:
        module.close()


def test_a_waiting_call_whose_answer_does_not_fit_memory_traps(any_engine: Engine) -> None:
    module = any_engine.compile(wat_to_wasm(_KV_OUT_OF_BOUNDS), Limits(), WasiOptions())
    inst = module.instantiate()
    host = FakeHost(kv_enabled=True)
    host.kv[b"key"] = b"a value"
    try:
        with pytest.raises(GuestTrap, match="out of bounds"):
            inst.invoke(request("GET", "/"), host)
        host.kv.clear()  # not found (-1): nothing to write, the call succeeds
        fresh = module.instantiate()
        try:
            assert fresh.invoke(request("GET", "/"), host) == b""
        finally:
            fresh.close()
    finally:
        inst.close()
        module.close()


# -- WASI: capture and denials ----------------------------------------------------


def test_stdout_and_stderr_are_captured_for_the_host(run) -> None:  # type: ignore[no-untyped-def]
    resp, host = run("env_stdout")
    assert resp.body == b"wrote output\n"
    captured = host.output_bytes(1)
    assert b"stdout" in captured and b"stderr" in captured


def test_captured_output_is_bounded(run) -> None:  # type: ignore[no-untyped-def]
    # 10 MiB of writes: a deadline no busy machine reaches, as the bound is the subject.
    limits = Limits(max_output_bytes=1000, max_execution_ms=10_000)
    resp, host = run("env_stdout", request(target="/flood"), limits=limits)
    assert resp.status == 200
    assert 0 < len(host.output_bytes(1)) <= 1000


def test_wagi_stderr_goes_to_the_log_stream(run) -> None:  # type: ignore[no-untyped-def]
    # wagi_hello writes nothing to stderr: the response is stdout only.
    resp, host = run("wagi_hello", wagi_request())
    assert host.output_bytes(1) == b""
    assert b"hello from wagi" in resp.body


def test_host_filesystem_is_not_reachable(run) -> None:  # type: ignore[no-untyped-def]
    resp, _ = run("passwd")
    assert resp.body.startswith(b"denied errno="), resp.body


def test_directories_are_not_listable(run) -> None:  # type: ignore[no-untyped-def]
    resp, _ = run("listdir")
    lines = resp.body.decode().splitlines()
    assert lines and all("denied" in line for line in lines), lines


def test_no_sockets(run) -> None:  # type: ignore[no-untyped-def]
    resp, _ = run("socket")
    lines = resp.body.decode().splitlines()
    assert lines
    for line in lines:
        fields = dict(part.split("=") for part in line.split())
        assert fields["accept"] != "0" and fields["send"] != "0", line


def test_config_dir_is_read_only(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "app.txt").write_text("setting=1\n")
    wasi = WasiOptions(config_dir=str(tmp_path))
    resp, _ = run("config_read", request(target="/?write=1"), wasi=wasi)
    assert resp.body == b"setting=1\n"
    assert header(resp, "x-write") == "denied"
    assert not (tmp_path / "new.txt").exists()


def test_no_config_dir_means_no_filesystem(run) -> None:  # type: ignore[no-untyped-def]
    resp, _ = run("config_read")
    assert resp.body.startswith(b"denied errno=")


# -- section 4: limits ------------------------------------------------------------


def test_memory_pages_cap_growth_inside_the_guest(compile_fixture) -> None:  # type: ignore[no-untyped-def]
    inst = compile_fixture("membomb", Limits(memory_pages=32)).instantiate()
    try:
        resp = parse_response(inst.invoke(request(), FakeHost()))
        assert resp.status == 200 and resp.body.startswith(b"grow-failed")
        assert int(header(resp, "x-allocated-mib")) < 2
        assert inst.memory_bytes <= 32 * 65536
        # The instance survived a refused memory.grow and still serves.
        again = parse_response(inst.invoke(request(), FakeHost()))
        assert again.status == 200
    finally:
        inst.close()


def test_memory_exhaustion_that_traps_is_500(run) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GuestTrap) as info:
        run("membomb_trap")
    assert info.value.status == 500 and info.value.discard


def test_timeout_is_504_and_discards(compile_fixture) -> None:  # type: ignore[no-untyped-def]
    inst = compile_fixture("loop", Limits(max_execution_ms=100)).instantiate()
    started = time.monotonic()
    try:
        with pytest.raises(GuestTimeout) as info:
            inst.invoke(request(), FakeHost())
    finally:
        inst.close()
    assert info.value.status == 504 and info.value.discard
    assert 0.09 <= time.monotonic() - started < 2.0


def test_start_function_is_bounded_by_the_deadline(compile_fixture) -> None:  # type: ignore[no-untyped-def]
    module = compile_fixture("start_loop", Limits(max_execution_ms=100))
    started = time.monotonic()
    with pytest.raises(InvocationError):
        module.instantiate()
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("name", ["trap", "recursion"])
def test_trap_is_500_and_discards(run, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GuestTrap) as info:
        run(name)
    assert info.value.status == 500 and info.value.discard


def _on(where: str, fn: Callable[[], object]) -> object:
    """Run `fn` on the test's thread or on a thread of its own, as a node's request
    threads call instances."""
    if where == "main thread":
        return fn()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


@pytest.mark.parametrize("where", ["main thread", "request thread"])
@pytest.mark.parametrize("name", ["recursion", "recursion_hostcall"])
def test_runaway_recursion_is_contained_on_any_thread(  # type: ignore[no-untyped-def]
    compile_fixture, name: str, where: str
) -> None:
    """Compiled code overflows the native stack of the thread it runs on, interpreted
    code grows the heap: either way a trap (500) that discards the instance, twice in
    a row, also when the recursion calls a host function with little stack left; the
    process lives on and the same thread serves the next request."""
    limits = Limits(max_execution_ms=10_000)  # the recursion, not the deadline, ends it
    module = compile_fixture(name, limits)
    echo = compile_fixture("echo")

    def attempt() -> tuple[list[GuestTrap], bytes]:
        traps = []
        for _ in range(2):
            inst = module.instantiate()
            try:
                with pytest.raises(GuestTrap) as info:
                    inst.invoke(request(), FakeHost())
                traps.append(info.value)
            finally:
                inst.close()
        alive = echo.instantiate()
        try:
            body = parse_response(alive.invoke(request("POST", body=b"alive"), FakeHost())).body
        finally:
            alive.close()
        return traps, body

    traps, body = _on(where, attempt)  # type: ignore[misc]
    assert [(t.status, t.discard) for t in traps] == [(500, True), (500, True)]
    assert body == b"alive"


def test_a_deadline_stops_only_its_own_call(compile_fixture) -> None:  # type: ignore[no-untyped-def]
    looping = compile_fixture("loop", Limits(max_execution_ms=300)).instantiate()
    echo = compile_fixture("echo").instantiate()
    try:
        with ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(looping.invoke, request(), FakeHost())
            time.sleep(0.05)
            bodies = [
                parse_response(echo.invoke(request("POST", body=b"%d" % i), FakeHost())).body
                for i in range(20)
            ]
            assert not stuck.done()
            with pytest.raises(GuestTimeout):
                stuck.result()
        assert bodies == [b"%d" % i for i in range(20)]
        assert parse_response(echo.invoke(request("POST", body=b"after"), FakeHost())).body == (
            b"after")
    finally:
        looping.close()
        echo.close()


@pytest.mark.parametrize("name", ["forbidden_import", "bad_edge_import", "nomemory"])
def test_invalid_modules_are_refused(any_engine: Engine, name: str) -> None:
    with pytest.raises(InvalidModule):
        any_engine.compile(wasm_path(name).read_bytes(), Limits(), WasiOptions())


def test_initial_memory_over_memory_pages_is_refused(run, any_engine: Engine) -> None:  # type: ignore[no-untyped-def]
    wasm = wasm_path("big_initial_memory").read_bytes()
    with pytest.raises(InvalidModule):
        any_engine.compile(wasm, Limits(memory_pages=16), WasiOptions())
    resp, _ = run("big_initial_memory", limits=Limits(memory_pages=64))
    assert resp.body == b"big"


def test_describe_names_engine_and_compiler(any_engine: Engine) -> None:
    facts = any_engine.describe()
    assert facts["engine"] == any_engine.name
    assert facts["compiler"]
