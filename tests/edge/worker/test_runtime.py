"""The edge hot path end to end inside one process: route, instance, call, response."""

from __future__ import annotations

import json
import threading
import time

import pytest
from prometheus_client import REGISTRY

from tests.edge.conftest import EdgeHarness, fn


def body_json(resp) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(resp.body)


# -- edge-v1 ------------------------------------------------------------------

def test_echo_returns_body_method_and_target(edge: EdgeHarness) -> None:
    edge.deploy(fn("echo", "echo"))
    resp = edge.request("POST", "/echo/a/b?x=1&y=2", b"hello edge")
    assert resp.status == 200
    assert resp.body == b"hello edge"
    headers = dict(resp.headers)
    assert headers["x-method"] == "POST"
    assert headers["x-path"] == "/echo/a/b?x=1&y=2"
    assert headers["x-body-length"] == "10"
    assert len(headers["x-request-id"]) == 32


@pytest.mark.parametrize("status", [201, 204, 302, 418, 503])
def test_guest_chooses_the_status(edge: EdgeHarness, status: int) -> None:
    edge.deploy(fn("echo", "echo", path="/status/*"))
    assert edge.request("GET", f"/status/{status}").status == status


def test_headers_are_encoded_lower_case_with_host_and_request_id(edge: EdgeHarness) -> None:
    edge.deploy(fn("headers", "headers"))
    resp = edge.request(
        "GET", "/headers/",
        headers=[(b"x-custom", b"Value"), (b"accept", b"a/b"), (b"accept", b"c/d"),
                 (b"x-request-id", b"client-chosen-id")],
    )
    assert resp.status == 200
    lines = resp.body.decode().splitlines()
    assert "host: edge.test" in lines
    assert "x-custom: Value" in lines
    assert lines.count("accept: a/b") == 1 and lines.count("accept: c/d") == 1
    assert "x-request-id: client-chosen-id" in lines
    assert dict(resp.headers)["x-request-id"] == "client-chosen-id"
    assert ("x-one", "1") in resp.headers and ("x-two", "2") in resp.headers


def test_an_unsafe_request_id_is_replaced(edge: EdgeHarness) -> None:
    edge.deploy(fn("headers", "headers"))
    resp = edge.request("GET", "/headers/", headers=[(b"x-request-id", b"bad id\x01")])
    rid = dict(resp.headers)["x-request-id"]
    assert rid != "bad id\x01" and len(rid) == 32


def test_one_mebibyte_body_round_trips(edge: EdgeHarness) -> None:
    edge.deploy(fn("echo", "echo", memory_pages=80, max_response_bytes=2 * 1024 * 1024))
    payload = bytes(range(256)) * 4096
    resp = edge.request("POST", "/echo/big", payload)
    assert resp.status == 200
    assert resp.body == payload


def test_response_over_the_cap_is_502(edge: EdgeHarness) -> None:
    edge.deploy(fn("sized", "sized", max_response_bytes=1000), fn("big", "bigresponse"))
    assert edge.request("GET", "/sized/?n=900").status == 200
    over = edge.request("GET", "/sized/?n=5000")
    assert over.status == 502
    assert body_json(over)["error"]["code"] == "response_too_large"
    assert edge.request("GET", "/big/").status == 502
    # The instance that answered 502 is still good.
    assert edge.request("GET", "/sized/?n=10").body == b"abcdefghij"


def test_negative_return_is_500(edge: EdgeHarness) -> None:
    edge.deploy(fn("neg", "negative"))
    before = _guest_5xx("neg")
    resp = edge.request("GET", "/neg/")
    assert resp.status == 500
    assert "-1" in body_json(resp)["error"]["message"]
    assert _guest_5xx("neg") == before  # a failed invocation, counted as such


def _guest_5xx(fid: str, version: str = "1.0.0") -> float:
    return REGISTRY.get_sample_value("edge_guest_5xx_responses_total",
                                     {"function_id": fid, "project_id": "",
                                      "version": version}) or 0.0


def test_a_guests_own_5xx_answers_are_counted_for_its_version(edge: EdgeHarness) -> None:
    # What the rollout gates count as errors beside failed invocations.
    edge.deploy(fn("echo5", "echo", path="/status/*"))
    before = _guest_5xx("echo5")
    for status in (200, 418, 500, 503, 599):
        assert edge.request("GET", f"/status/{status}").status == status
    assert _guest_5xx("echo5") - before == 3


# -- wagi ---------------------------------------------------------------------

def test_wagi_hello(edge: EdgeHarness) -> None:
    edge.deploy(fn("hello", "wagi_hello"))
    resp = edge.request("GET", "/hello/")
    assert resp.status == 200
    assert resp.body == b"hello from wagi\n"
    assert ("content-type", "text/plain") in resp.headers


def test_wagi_cgi_environment(edge: EdgeHarness) -> None:
    edge.deploy(fn("env", "wagi_env", env={"DECLARED": "yes"}))
    resp = edge.request("POST", "/env/sub/path?q=1", b"abc",
                        headers=[(b"content-type", b"text/x"), (b"x-thing", b"T")])
    assert resp.status == 200
    env = dict(line.split("=", 1) for line in resp.body.decode().splitlines() if "=" in line)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/env"
    assert env["PATH_INFO"] == "/sub/path"
    assert env["QUERY_STRING"] == "q=1"
    assert env["CONTENT_LENGTH"] == "3"
    assert env["CONTENT_TYPE"] == "text/x"
    assert env["HTTP_X_THING"] == "T"
    assert env["SERVER_NAME"] == "edge.test"
    assert env["DECLARED"] == "yes"
    assert "PATH" not in env and "HOME" not in env


def test_wagi_stdin_and_status(edge: EdgeHarness) -> None:
    edge.deploy(fn("stdin", "wagi_stdin"))
    resp = edge.request("POST", "/stdin/", b"from the body")
    assert resp.status == 201
    assert resp.body == b"from the body"


def test_wagi_nonzero_exit_is_500(edge: EdgeHarness) -> None:
    edge.deploy(fn("exit", "wagi_exit"))
    resp = edge.request("GET", "/exit/")
    assert resp.status == 500
    assert "status 3" in body_json(resp)["error"]["message"]


def test_wagi_timeout_is_504(edge: EdgeHarness) -> None:
    edge.deploy(fn("wl", "wagi_loop", max_execution_ms=100))
    assert edge.request("GET", "/wl/").status == 504


# -- hostile modules --------------------------------------------------------------

def test_infinite_loop_is_504_within_the_deadline_and_the_next_request_is_fine(
    edge: EdgeHarness,
) -> None:
    edge.deploy(fn("loop", "loop", max_execution_ms=200), fn("echo", "echo"))
    t0 = time.monotonic()
    resp = edge.request("GET", "/loop/")
    elapsed = time.monotonic() - t0
    assert resp.status == 504
    assert body_json(resp)["error"]["code"] == "timeout"
    assert 0.2 <= elapsed < 0.2 + 0.3  # the deadline plus a scheduling margin
    assert edge.pool("loop").destroyed == 1
    assert edge.request("POST", "/echo/", b"still here").body == b"still here"


def test_memory_bomb_is_contained(edge: EdgeHarness) -> None:
    edge.deploy(fn("bomb", "membomb", memory_pages=32), fn("bombt", "membomb_trap"))
    resp = edge.request("GET", "/bomb/")
    assert resp.status == 200 and resp.body == b"grow-failed"
    allocated = int(dict(resp.headers)["x-allocated-mib"])
    assert allocated <= 2  # 32 pages = 2 MiB, whatever the guest tried
    assert edge.request("GET", "/bombt/").status == 500
    assert edge.pool("bombt").destroyed == 1


@pytest.mark.parametrize("module", ["trap", "recursion"])
def test_traps_are_500_and_discard_the_instance(edge: EdgeHarness, module: str) -> None:
    edge.deploy(fn("t", module))
    resp = edge.request("GET", "/t/")
    assert resp.status == 500
    assert body_json(resp)["error"]["code"] == "guest_error"
    assert edge.pool("t").destroyed == 1


@pytest.mark.parametrize("module", ["passwd", "listdir"])
def test_no_host_filesystem(edge: EdgeHarness, module: str) -> None:
    edge.deploy(fn("fs", module))
    resp = edge.request("GET", "/fs/")
    assert resp.status == 200
    assert b"LEAK" not in resp.body
    assert b"denied" in resp.body


def test_no_sockets(edge: EdgeHarness) -> None:
    edge.deploy(fn("sock", "socket"))
    resp = edge.request("GET", "/sock/")
    assert resp.status == 200
    for line in resp.body.decode().splitlines():
        fields = dict(kv.split("=") for kv in line.split())
        assert fields["accept"] != "0" and fields["send"] != "0"


def test_read_only_config_directory(edge: EdgeHarness, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config"
    config.mkdir()
    (config / "app.txt").write_text("setting=1\n")
    edge.deploy(fn("cfg", "config_read", config_dir=str(config)), fn("nocfg", "config_read"))
    resp = edge.request("GET", "/cfg/?write=1")
    assert resp.body == b"setting=1\n"
    assert dict(resp.headers)["x-write"] == "denied"
    assert not (config / "new.txt").exists()
    assert b"denied" in edge.request("GET", "/nocfg/").body


def test_start_function_loop_makes_the_function_unavailable(edge: EdgeHarness) -> None:
    edge.deploy(fn("sl", "start_loop", max_execution_ms=100), fn("echo", "echo"))
    resp = edge.request("GET", "/sl/")
    assert resp.status in (503, 504)
    assert edge.request("POST", "/echo/", b"ok").status == 200


@pytest.mark.parametrize("module", ["forbidden_import", "bad_edge_import", "nomemory"])
def test_modules_that_break_the_rules_are_refused_at_load(edge: EdgeHarness, module: str) -> None:
    edge.deploy(fn("bad", module), fn("echo", "echo"))
    resp = edge.request("GET", "/bad/")
    assert resp.status == 503
    assert "refused" in body_json(resp)["error"]["message"]
    assert edge.request("POST", "/echo/", b"ok").status == 200


def test_initial_memory_over_memory_pages_is_refused(edge: EdgeHarness) -> None:
    edge.deploy(fn("big", "big_initial_memory"), fn("big64", "big_initial_memory",
                                                   memory_pages=64))
    assert edge.request("GET", "/big/").status == 503
    assert edge.request("GET", "/big64/").body == b"big"


def test_guest_output_is_captured_and_bounded(edge: EdgeHarness) -> None:
    edge.deploy(fn("out", "env_stdout"))
    assert edge.request("GET", "/out/").status == 200
    assert edge.request("GET", "/out/flood").status == 200
    logs = [r for r in edge.logs() if r.get("type") == "function_log"]
    sources = {r["source"] for r in logs}
    assert "stdout" in sources
    total = sum(len(r["message"]) for r in logs)
    assert total <= 2 * 64 * 1024 + 1024  # bounded, not 10 MiB


# -- HTTP-level outcomes ----------------------------------------------------------

def test_404_405_and_request_ids_on_errors(edge: EdgeHarness) -> None:
    spec = fn("echo", "echo").model_copy(update={"routes": (
        fn("echo", "echo").routes[0].model_copy(update={"methods": ("POST",)}),)})
    edge.deploy(spec)
    missing = edge.request("GET", "/nothing")
    assert missing.status == 404
    assert body_json(missing)["error"]["code"] == "no_route"
    wrong = edge.request("GET", "/echo/x")
    assert wrong.status == 405
    assert ("allow", "POST") in wrong.headers
    for resp in (missing, wrong):
        assert "x-request-id" in dict(resp.headers)


def test_413_for_a_body_over_the_limit(make_edge) -> None:  # type: ignore[no-untyped-def]
    edge = make_edge(max_request_body_bytes=1000)
    edge.deploy(fn("echo", "echo"), fn("roomy", "echo", max_request_bytes=5000))
    assert edge.request("POST", "/echo/", b"x" * 1000).status == 200
    assert edge.request("POST", "/echo/", b"x" * 1001).status == 413
    assert edge.request("POST", "/roomy/", b"x" * 4000).status == 200


def test_503_for_a_function_that_is_not_runnable(edge: EdgeHarness) -> None:
    missing = fn("gone", "echo").model_copy(update={"artifact": "/nonexistent/x.wasm"})
    edge.deploy(missing, fn("echo", "echo"),
                unavailable={"later": "artifact download pending"})
    assert edge.request("GET", "/gone/").status == 503
    assert edge.request("POST", "/echo/", b"ok").status == 200


def test_invocation_log_line_has_the_contract_fields(edge: EdgeHarness) -> None:
    edge.deploy(fn("echo", "echo"), fn("trap", "trap"))
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    edge.request("POST", "/echo/", b"x", headers=[(b"traceparent", parent.encode())])
    edge.request("GET", "/trap/")
    lines = [r for r in edge.logs() if r.get("type") == "invocation"]
    assert len(lines) == 2
    ok, failed = lines
    for rec in lines:
        for key in ("request_id", "function_id", "node_id", "start", "end", "status"):
            assert key in rec
        assert rec["end"] >= rec["start"]
    assert ok["status"] == 200 and "error_message" not in ok
    assert ok["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert ok["parent_span_id"] == "b7ad6b7169203331"
    assert failed["status"] == 500 and failed["error_message"]
    assert failed["node_id"] == "node-test"


def test_new_version_replaces_the_old_and_retires_its_pool(edge: EdgeHarness) -> None:
    edge.deploy(fn("f", "counter"))
    assert edge.request("GET", "/f/").status == 200
    v2 = fn("f", "echo").model_copy(update={"version": "2.0.0"})
    edge.deploy(v2)
    assert edge.request("POST", "/f/", b"v2").body == b"v2"
    old = [p for p in edge.runtime.pools.pools() if p.spec.version == "1.0.0"]
    assert all(p.retired for p in old)


def test_same_version_with_new_settings_gets_a_new_pool(edge: EdgeHarness) -> None:
    """A policy (here isolation) or env change on the same version is loaded afresh;
    a change of routes only keeps the loaded pool and its instances."""
    edge.deploy(fn("f", "counter"))
    for _ in range(3):
        edge.request("GET", "/f/")
    first = edge.pool("f")
    edge.deploy(fn("f", "counter", path="/g/*"))
    assert edge.pool("f") is first and not first.retired
    assert edge.request("GET", "/g/").body == b"4"  # the same instance, reused

    edge.deploy(fn("f", "counter", path="/g/*", isolation="per-request"))
    assert first.retired and edge.pool("f") is not first
    assert [edge.request("GET", "/g/").body for _ in range(2)] == [b"1", b"1"]
    edge.deploy(fn("f", "counter", path="/g/*", isolation="per-request", env={"K": "v"}))
    assert len([p for p in edge.runtime.pools.pools() if not p.retired]) == 1


def test_one_function_cannot_hold_every_request_thread(make_edge) -> None:  # type: ignore[no-untyped-def]
    edge = make_edge(max_inflight_per_function=2)
    edge.deploy(fn("loop", "loop", max_execution_ms=400), fn("echo", "echo"))
    started = threading.Barrier(3)
    results: list[int] = []

    def hog() -> None:
        started.wait(timeout=10)
        results.append(edge.request("GET", "/loop/").status)

    hogs = [threading.Thread(target=hog) for _ in range(2)]
    for t in hogs:
        t.start()
    started.wait(timeout=10)
    time.sleep(0.1)  # both are now inside the guest's loop
    t0 = time.monotonic()
    refused = edge.request("GET", "/loop/")
    assert refused.status == 503 and time.monotonic() - t0 < 0.1
    assert body_json(refused)["error"]["code"] == "function_overloaded"
    assert ("retry-after", "1") in refused.headers
    assert edge.request("POST", "/echo/", b"others still served").status == 200
    for t in hogs:
        t.join(timeout=10)
    assert results == [504, 504]
    assert edge.request("GET", "/loop/").status == 504  # its slots are free again


def test_a_deploy_that_changes_no_route_keeps_the_router(edge: EdgeHarness) -> None:
    """Rebuilding the router costs every worker a pass over every route: a new version
    on the same routes keeps it, a route changed gets a new one that serves it."""
    edge.deploy(fn("f", "counter"), fn("g", "echo", path="/g/*"))
    router = edge.runtime._tables.router
    edge.deploy(fn("f", "echo").model_copy(update={"version": "2.0.0"}),
                fn("g", "echo", path="/g/*"))
    assert edge.runtime._tables.router is router
    assert edge.request("POST", "/f/", b"v2").body == b"v2"
    edge.deploy(fn("f", "echo").model_copy(update={"version": "2.0.0"}),
                fn("g", "echo", path="/h/*"))
    assert edge.runtime._tables.router is not router
    assert edge.request("POST", "/h/", b"moved").body == b"moved"
    assert edge.request("POST", "/g/", b"gone").status == 404
