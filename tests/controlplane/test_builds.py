"""Builds from source through the API: each language's toolchain for real, the
version they create, compile errors, hostile archives, tenancy, the dependency
scan, and Redis as the queue with a separate `edgefn build-worker` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest

from edgefn.builder.toolchains import driver
from edgefn.controlplane.artifacts import artifact_key
from edgefn.sandbox.wasminfo import validate_module
from tests.builder.sources import TREES, tgz, zipped
from tests.controlplane.conftest import ADMIN, CP

REDIS_URL = os.environ.get("EDGEFN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _need(language: str) -> None:
    probe = driver(language).probe()
    if not probe.ok and language != "assemblyscript":
        if os.environ.get("CI") == "true":
            pytest.fail(f"{language} toolchain missing with CI=true: {probe.detail}")
        pytest.skip(f"{language}: {probe.detail}")


def submit(
    cp: CP,
    headers: dict[str, str],
    function_id: str,
    language: str,
    source: bytes,
    version: str = "1.0.0",
    **fields: str,
) -> Any:
    return cp.call(
        "POST",
        f"/functions/{function_id}/builds",
        headers,
        data={"language": language, "version": version, **fields},
        files={"source": ("src.tar.gz", source, "application/gzip")},
    )


def wait(cp: CP, headers: dict[str, str], build_id: str, timeout_s: float = 90) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        build = cp.ok("GET", f"/builds/{build_id}", headers)
        if build["state"] in ("succeeded", "failed"):
            return build
        assert time.monotonic() < deadline, build
        time.sleep(0.1)


@sqlite_only
@pytest.mark.parametrize("language", list(TREES))
def test_each_language_builds_into_a_valid_version(cp: CP, language: str) -> None:
    _need(language)
    fn = cp.function(ADMIN, name=f"hello-{language}", owner_project_id=cp.project("p"))
    r = submit(cp, ADMIN, fn["id"], language, tgz(TREES[language]))
    assert r.status_code == 202, r.text
    assert r.json()["state"] in ("queued", "running")
    build = wait(cp, ADMIN, r.json()["id"])
    assert build["state"] == "succeeded", build["log"]
    assert build["error"] is None
    versions = cp.ok("GET", f"/functions/{fn['id']}/versions", ADMIN)
    assert [(v["version"], v["abi"], v["sha256"]) for v in versions] == [
        ("1.0.0", "edge-v1", build["sha256"])
    ]
    data = cp.client.app.state.cp.store.get(artifact_key(fn["id"], "1.0.0"))  # type: ignore[attr-defined]
    assert validate_module(data, memory_pages=16).abi == "edge-v1"
    if language == "assemblyscript":
        assert build["scan"]["scanned"] is True
    actions = [e["action"] for e in cp.ok("GET", "/audit", ADMIN)]
    assert {"build.create", "version.create", "build.finish"} <= set(actions)


@sqlite_only
def test_a_compile_error_fails_with_the_compilers_message(cp: CP) -> None:
    _need("c")
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    broken = {"fn.c": b"int handle(void) { return undefined_name; }\n"}
    build = wait(cp, ADMIN, submit(cp, ADMIN, fn["id"], "c", zipped(broken)).json()["id"])
    assert build["state"] == "failed"
    assert "undefined_name" in build["error"] and "error:" in build["error"]
    assert "undeclared identifier" in build["log"]
    assert cp.ok("GET", f"/functions/{fn['id']}/versions", ADMIN) == []


@sqlite_only
def test_a_module_the_upload_path_refuses_fails_the_build(cp: CP) -> None:
    _need("wat")
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    wat = b'(module (import "env" "foo" (func)) (memory (export "memory") 1))'
    build = wait(cp, ADMIN, submit(cp, ADMIN, fn["id"], "wat", tgz({"m.wat": wat})).json()["id"])
    assert build["state"] == "failed"
    assert "invalid module" in build["error"]


@sqlite_only
def test_hostile_and_oversized_archives(cp_factory: Any, tmp_path: Any) -> None:
    cp = cp_factory(max_source_bytes=64 * 1024)
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    r = submit(cp, ADMIN, fn["id"], "c", zipped({"../../escape.c": b"int x;"}))
    build = wait(cp, ADMIN, r.json()["id"])
    assert build["state"] == "failed" and "'..'" in build["error"]
    big = os.urandom(80 * 1024)
    r = submit(cp, ADMIN, fn["id"], "c", big, version="1.0.1")
    assert r.status_code == 413, r.text
    assert not (tmp_path / "escape.c").exists()


@sqlite_only
def test_bad_requests(cp: CP) -> None:
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    source = tgz(TREES["wat"])
    assert submit(cp, ADMIN, fn["id"], "cobol", source).status_code == 400
    assert submit(cp, ADMIN, fn["id"], "wat", source, version="one").status_code == 400
    assert cp.upload(ADMIN, fn["id"], "1.0.0", _wat_module()).status_code == 201
    assert submit(cp, ADMIN, fn["id"], "wat", source).status_code == 409


def _wat_module() -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm(TREES["wat"]["hello.wat"].decode()))


def test_another_projects_user_cannot_build_or_read_builds(cp: CP, team: SimpleNamespace) -> None:
    _need("wat")
    fn = cp.function(team.a_dev, owner_project_id=team.a)
    source = tgz(TREES["wat"])
    assert submit(cp, team.b_dev, fn["id"], "wat", source).status_code == 404
    assert submit(cp, team.a_viewer, fn["id"], "wat", source).status_code == 403
    r = submit(cp, team.a_dev, fn["id"], "wat", source)
    assert r.status_code == 202, r.text
    build_id = r.json()["id"]
    assert cp.call("GET", f"/builds/{build_id}", team.b_dev).status_code == 404
    assert cp.call("GET", f"/builds/{build_id}/log", team.b_dev).status_code == 404
    assert cp.call("GET", f"/functions/{fn['id']}/builds", team.b_dev).status_code == 404
    assert wait(cp, team.a_viewer, build_id)["state"] == "succeeded"
    listed = cp.ok("GET", f"/functions/{fn['id']}/builds", team.a_viewer)
    assert [b["id"] for b in listed] == [build_id]


@sqlite_only
def test_the_log_streams_until_the_build_ends(cp: CP) -> None:
    _need("c")
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    build_id = submit(cp, ADMIN, fn["id"], "c", tgz(TREES["c"])).json()["id"]
    with cp.client.stream("GET", f"/api/v1/builds/{build_id}/log?follow=1", headers=ADMIN) as r:
        assert r.status_code == 200
        text = "".join(r.iter_text())
    assert "$ clang" in text
    assert text.endswith("[build succeeded]\n")


# minimist 0.0.8 has a critical advisory (prototype pollution, CVE-2021-44906).
_VULNERABLE = {
    "package.json": b'{"name": "t", "version": "1.0.0", "dependencies": {"minimist": "0.0.8"}}',
    "package-lock.json": b"""{"name": "t", "version": "1.0.0", "lockfileVersion": 3,
  "requires": true, "packages": {
    "": {"name": "t", "version": "1.0.0", "dependencies": {"minimist": "0.0.8"}},
    "node_modules/minimist": {"version": "0.0.8",
      "resolved": "https://registry.npmjs.org/minimist/-/minimist-0.0.8.tgz"}}}""",
}


@sqlite_only
def test_the_dependency_scan(cp_factory: Any) -> None:
    """A critical advisory fails the build unless the request allows it; where the
    registry does not answer, the build goes on and the report says "not scanned"."""
    cp = cp_factory(build_npm_registry="http://127.0.0.1:9/")
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    tree = {**TREES["assemblyscript"], **_VULNERABLE}
    build = wait(cp, ADMIN, submit(cp, ADMIN, fn["id"], "assemblyscript", tgz(tree)).json()["id"])
    assert build["scan"]["scanned"] is False, build["log"]
    assert build["state"] == "succeeded", build["log"]


def _registry_answers() -> bool:
    done = subprocess.run(
        ["npm", "ping"], capture_output=True, timeout=30, env={**os.environ, "npm_config_fund": "0"}
    )
    return done.returncode == 0


@sqlite_only
def test_critical_advisories_fail_the_build_unless_allowed(cp: CP) -> None:
    if not _registry_answers():
        pytest.skip("the npm registry does not answer here")
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    tree = {**TREES["assemblyscript"], **_VULNERABLE}
    build = wait(cp, ADMIN, submit(cp, ADMIN, fn["id"], "assemblyscript", tgz(tree)).json()["id"])
    if not build["scan"]["scanned"]:
        pytest.skip(f"the registry does not answer audits: {build['scan']['reason']}")
    assert build["state"] == "failed", build["log"]
    assert build["scan"]["counts"]["critical"] >= 1
    assert "critical" in build["error"]
    r = submit(cp, ADMIN, fn["id"], "assemblyscript", tgz(tree), allow_critical="true")
    build = wait(cp, ADMIN, r.json()["id"])
    assert build["state"] == "succeeded", build["log"]
    assert build["scan"]["counts"]["critical"] >= 1


def test_redis_queue_with_a_separate_build_worker(cp_factory: Any, tmp_path: Any) -> None:
    """The CP runs no worker of its own; an `edgefn build-worker` process takes the job."""
    _need("wat")
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except redis.RedisError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis at {REDIS_URL} is unreachable and CI=true")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable")
    cp = cp_factory(build_redis_url=REDIS_URL, build_workers=0)
    worker = subprocess.Popen(
        [sys.executable, "-m", "edgefn", "build-worker", "--redis-url", REDIS_URL],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
        r = submit(cp, ADMIN, fn["id"], "wat", tgz(TREES["wat"]))
        build = wait(cp, ADMIN, r.json()["id"], timeout_s=30)
        assert build["state"] == "succeeded", build["log"]
        assert "wat2wasm" in build["log"]
        assert cp.ok("GET", f"/functions/{fn['id']}/versions", ADMIN)[0]["version"] == "1.0.0"
    finally:
        worker.terminate()
        worker.wait(timeout=10)


@sqlite_only
def test_edgefn_build_remote_over_real_http(
    tmp_path: Any, database_url: str, serve_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`edgefn build --remote` uploads the tree, follows the log, exits 0 with the
    version made; a compile error exits 1 with the compiler's message."""
    _need("wat")
    import httpx
    from click.testing import CliRunner

    from edgefn.cli.main import cli
    from edgefn.controlplane.app import create_app
    from tests.controlplane.conftest import make_settings
    from tests.controlplane.test_artifacts import free_port

    port = free_port()
    serve_app(create_app(make_settings(tmp_path, database_url)), port)
    url = f"http://127.0.0.1:{port}"
    project = httpx.post(f"{url}/api/v1/projects", headers=ADMIN, json={"name": "p"}).json()
    httpx.post(
        f"{url}/api/v1/functions",
        headers=ADMIN,
        json={"name": "hello", "owner_project_id": project["id"]},
    ).raise_for_status()
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.wat").write_bytes(TREES["wat"]["hello.wat"])
    monkeypatch.setenv("EDGEFN_TOKEN", ADMIN["Authorization"].split()[1])
    args = ["build", str(src), "--remote", "--function", "hello", "--cp", url]
    result = CliRunner().invoke(cli, [*args, "--version", "1.0.0", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["state"] == "succeeded"
    (src / "hello.wat").write_bytes(b'(module (func (export "f") i32.add))')
    result = CliRunner().invoke(cli, [*args, "--version", "1.0.1"])
    assert result.exit_code == 1
    assert "wat2wasm" in result.output and "failed" in result.output
    result = CliRunner().invoke(cli, [*args, "--version", "1.0.0"])
    assert result.exit_code == 4
    assert "409" in result.output


@sqlite_only
def test_builds_lost_in_a_restart_are_marked_failed(cp_factory: Any) -> None:
    cp = cp_factory(build_workers=0)
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    build_id = submit(cp, ADMIN, fn["id"], "wat", tgz(TREES["wat"])).json()["id"]
    assert cp.ok("GET", f"/builds/{build_id}", ADMIN)["state"] == "queued"
    again = cp_factory()
    build = again.ok("GET", f"/builds/{build_id}", ADMIN)
    assert build["state"] == "failed" and "restarted" in build["error"]
