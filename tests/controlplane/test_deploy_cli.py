"""`edgefn deploy` and `edgefn login` against a real CP served by uvicorn on
loopback, with a real node on the gRPC stream acking what it is sent."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner, Result

from edgefn.builder.toolchains import driver
from edgefn.cli.deploy import wagi_functions
from edgefn.cli.main import cli
from edgefn.cluster import free_port
from edgefn.controlplane.app import create_app
from tests.controlplane.conftest import ADMIN, ADMIN_TOKEN, make_settings
from tests.controlplane.nodelink import AckingNode

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-c"


@dataclass
class LiveCP:
    url: str
    grpc_target: str
    http: httpx.Client

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        r = self.http.request(method, "/api/v1" + path, headers=ADMIN, **kw)
        assert r.status_code == status, r.text
        return r.json() if r.content else None


EDGE_URL = "http://edge.test:8000"


@pytest.fixture
def live_cp(tmp_path: Path, database_url: str) -> Iterator[LiveCP]:
    with serve(tmp_path, database_url, edge_url=EDGE_URL) as cp:
        yield cp


@contextlib.contextmanager
def serve(tmp_path: Path, database_url: str, **settings: Any) -> Iterator[LiveCP]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(make_settings(tmp_path, database_url, grpc_port=0, port=port, public_url=url,
                                   **settings))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.025)
    assert server.started, "uvicorn did not start"
    with httpx.Client(base_url=url) as http:
        yield LiveCP(url, f"127.0.0.1:{app.state.grpc.port}", http)
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def runner(tmp_path: Path) -> CliRunner:
    """A clean environment: no token or CP in variables, config in tmp_path."""
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config"), "EDGEFN_TOKEN": None, "EDGEFN_CP_URL": None}
    return CliRunner(env=env)


def deploy(
    runner: CliRunner, cp: LiveCP, path: Path, *args: str, token: str | None = None
) -> Result:
    """`edgefn deploy PATH --cp URL ARGS`, with `token` in EDGEFN_TOKEN (never argv)."""
    env = {"EDGEFN_TOKEN": token} if token else None
    return runner.invoke(cli, ["deploy", str(path), "--cp", cp.url, *args], env=env)


def test_deploy_then_again(runner: CliRunner, live_cp: LiveCP) -> None:
    node = live_cp.ok("POST", "/nodes", 201, json={"id": "tokyo-1", "pop_id": "tokyo"})
    with AckingNode(live_cp.grpc_target, node).running() as edge:
        first = deploy(runner, live_cp, EXAMPLE, token=ADMIN_TOKEN)
        assert first.exit_code == 0, first.output
        out = first.output
        assert "project default: created" in out
        assert "function hello-c: created" in out
        size = (EXAMPLE / "hello.wasm").stat().st_size
        assert f"upload 1.0.0: {size} bytes, sha256 " in out and ": uploaded" in out
        assert "route */c/hello [GET,POST] priority 0: created" in out
        assert "to 1 node(s)" in out and "node tokyo-1: cached" in out
        assert out.rstrip().endswith(f"deployed hello-c 1.0.0\nserving at {EDGE_URL}/c/hello")

        (fn,) = live_cp.ok("GET", "/functions")
        assert (fn["name"], fn["active_version"], fn["env"]) == (
            "hello-c",
            "1.0.0",
            {"GREETING": "Hello"},
        )
        (project,) = live_cp.ok("GET", "/projects")
        assert project["name"] == "default" and fn["owner_project_id"] == project["id"]
        (route,) = live_cp.ok("GET", "/routes")
        assert (route["host"], route["path"], route["methods"]) == (
            "*", "/c/hello", ["GET", "POST"])

        again = deploy(runner, live_cp, EXAMPLE, token=ADMIN_TOKEN)
        assert again.exit_code == 0, again.output
        assert "function hello-c: up to date" in again.output
        assert "already uploaded, skipped" in again.output
        assert "route */c/hello [GET,POST] priority 0: exists" in again.output
        assert "node tokyo-1: cached" in again.output
        deploys = [m for m in edge.received if m.WhichOneof("payload") == "deploy"]
        assert (
            len(deploys) == 2 and deploys[0].deploy.deployment_id != deploys[1].deploy.deployment_id
        )
    assert len(live_cp.ok("GET", "/functions")) == 1 and len(live_cp.ok("GET", "/routes")) == 1


def test_changed_settings_and_a_version_conflict(
    runner: CliRunner, live_cp: LiveCP, tmp_path: Path, wasm: SimpleNamespace
) -> None:
    folder = tmp_path / "hello-c"
    shutil.copytree(EXAMPLE, folder)
    first = deploy(runner, live_cp, folder, token=ADMIN_TOKEN)
    assert first.exit_code == 0, first.output
    assert "no node matched" in first.output

    manifest = json.loads((folder / "function.json").read_text())
    manifest["env"] = {"GREETING": "Hi"}
    manifest["max_execution_ms"] = 250
    (folder / "function.json").write_text(json.dumps(manifest))
    changed = deploy(runner, live_cp, folder, "--no-wait", token=ADMIN_TOKEN)
    assert changed.exit_code == 0, changed.output
    assert "function hello-c: updated env, max_execution_ms" in changed.output
    (fn,) = live_cp.ok("GET", "/functions")
    assert fn["env"] == {"GREETING": "Hi"} and fn["max_execution_ms"] == 250

    (folder / "hello.wasm").write_bytes(wasm.edge_v1)
    conflict = deploy(runner, live_cp, folder, token=ADMIN_TOKEN)
    assert conflict.exit_code == 1
    assert "version 1.0.0 already exists with a different module" in conflict.output
    assert "bump `version`" in conflict.output


def test_policies_from_function_json(
    runner: CliRunner, live_cp: LiveCP, tmp_path: Path
) -> None:
    """The file's policy fields reach the function and the node; a policy change on
    an existing function is a PATCH, an unchanged file patches nothing."""
    folder = tmp_path / "store"
    shutil.copytree(EXAMPLE, folder)
    manifest = json.loads((folder / "function.json").read_text())
    manifest |= {
        "kv": {"enabled": True, "max_keys": 5},
        "http_fetch": {"allow_hosts": ["API.example.com"]},
        "isolation": "per-request",
        "idle_timeout_s": 30,
        "config_dir": str(tmp_path),  # a path on one node: never sent
    }
    (folder / "function.json").write_text(json.dumps(manifest))
    node = live_cp.ok("POST", "/nodes", 201, json={"id": "tokyo-1", "pop_id": "tokyo"})
    with AckingNode(live_cp.grpc_target, node).running() as edge:
        first = deploy(runner, live_cp, folder, token=ADMIN_TOKEN)
        assert first.exit_code == 0, first.output
        (fn,) = live_cp.ok("GET", "/functions")
        assert fn["kv"]["enabled"] is True and fn["kv"]["max_keys"] == 5
        assert fn["http_fetch"]["allow_hosts"] == ["api.example.com"]
        assert (fn["isolation"], fn["idle_timeout_s"]) == ("per-request", 30.0)
        assert "config_dir" not in fn

        again = deploy(runner, live_cp, folder, token=ADMIN_TOKEN)
        assert again.exit_code == 0 and "function hello-c: up to date" in again.output

        manifest["kv"] = {"enabled": False}
        (folder / "function.json").write_text(json.dumps(manifest))
        changed = deploy(runner, live_cp, folder, token=ADMIN_TOKEN)
        assert changed.exit_code == 0, changed.output
        assert "function hello-c: updated kv (" in changed.output
        assert "already uploaded, skipped" in changed.output
        deploys = [m.deploy for m in edge.received if m.WhichOneof("payload") == "deploy"]
    assert [d.policy.kv.enabled for d in deploys] == [True, True, False]
    assert [list(d.policy.http_fetch.allow_hosts) for d in deploys] == [["api.example.com"]] * 3
    assert {d.policy.isolation for d in deploys} == {"per-request"}


def test_deploy_times_out_without_a_node_answering(runner: CliRunner, live_cp: LiveCP) -> None:
    live_cp.ok("POST", "/nodes", 201, json={"id": "silent-1", "pop_id": "tokyo"})
    result = deploy(runner, live_cp, EXAMPLE, "--timeout", "0.5", token=ADMIN_TOKEN)
    assert result.exit_code == 1
    assert "node silent-1: pending" in result.output
    assert "not finished after 0.5s; waiting for silent-1" in result.output


def test_bad_token_and_usage_errors(runner: CliRunner, live_cp: LiveCP, tmp_path: Path) -> None:
    bad = deploy(runner, live_cp, EXAMPLE, token="not-a-token")
    assert bad.exit_code == 4  # refused credentials (docs/cli.md, Exit codes)
    assert "401 unauthorized: invalid token" in bad.output
    no_token = deploy(runner, live_cp, EXAMPLE)
    assert no_token.exit_code == 2 and "no token for" in no_token.output
    empty = tmp_path / "empty"
    empty.mkdir()
    no_manifest = deploy(runner, live_cp, empty, token=ADMIN_TOKEN)
    assert no_manifest.exit_code == 2 and "function.json" in no_manifest.output
    down = runner.invoke(
        cli, ["deploy", str(EXAMPLE), "--cp", "http://127.0.0.1:9"], env={"EDGEFN_TOKEN": "x"}
    )
    assert down.exit_code == 3 and "cannot reach the control plane" in down.output


def test_login_is_used_by_deploy(runner: CliRunner, live_cp: LiveCP, tmp_path: Path) -> None:
    refused = runner.invoke(cli, ["login", "--cp", live_cp.url], input="wrong\n")
    assert refused.exit_code == 4 and "unauthorized" in refused.output
    saved = tmp_path / "config" / "edgefn" / "credentials.json"
    assert not saved.exists()

    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    token_file.chmod(0o600)
    ok = runner.invoke(cli, ["login", "--cp", live_cp.url + "/", "--token-file", str(token_file)])
    assert ok.exit_code == 0, ok.output
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["tokens"] == {live_cp.url: ADMIN_TOKEN}
    # Neither --cp nor a token: both come from the login.
    result = runner.invoke(cli, ["deploy", str(EXAMPLE), "--no-wait"])
    assert result.exit_code == 0, result.output
    assert "function hello-c: created" in result.output


@pytest.mark.parametrize("argv", [
    ["deploy", str(EXAMPLE), "--token", "efk_secret"],
    ["login", "--token", "efk_secret"],
])
def test_a_token_on_the_command_line_is_refused_with_the_way_out(
    runner: CliRunner, argv: list[str]
) -> None:
    result = runner.invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert "readable by every user of the machine" in result.output
    assert "--token-file" in result.output and "EDGEFN_TOKEN" in result.output
    help_text = runner.invoke(cli, [argv[0], "--help"]).output
    assert "--token-file" in help_text and "--token " not in help_text


def test_the_token_from_a_file_or_the_environment(
    runner: CliRunner, live_cp: LiveCP, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("not-a-token\n")
    token_file.chmod(0o600)
    # The file given wins over the variable.
    result = runner.invoke(cli, ["deploy", str(EXAMPLE), "--cp", live_cp.url, "--no-wait",
                                 "--token-file", str(token_file)],
                           env={"EDGEFN_TOKEN": ADMIN_TOKEN})
    assert result.exit_code == 4 and "401 unauthorized" in result.output
    token_file.write_text(ADMIN_TOKEN)
    result = runner.invoke(cli, ["deploy", str(EXAMPLE), "--cp", live_cp.url, "--no-wait"],
                           env={"EDGEFN_TOKEN_FILE": str(token_file)})
    assert result.exit_code == 0, result.output
    missing = runner.invoke(cli, ["deploy", str(EXAMPLE), "--token-file", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "cannot read" in missing.output


WAGI_CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "wagi"


def wagi_map(tmp_path: Path, extra: str = "") -> Path:
    app = tmp_path / "wagi-app"
    shutil.copytree(WAGI_CORPUS, app)
    (app / "modules.toml").write_text(f"""
[[module]]
route = "/"
module = "hello.wat"

[[module]]
route = "/ep/..."
module = "entrypoints.wat"
allowed_hosts = ["https://api.example.com"]
http_max_concurrency = 2
{extra}""")
    return app / "modules.toml"


def test_deploy_a_wagi_module_map(runner: CliRunner, live_cp: LiveCP, tmp_path: Path) -> None:
    """One function per [[module]], its module compiled from text, its route and
    allowlist on the function; deploying it again changes nothing."""
    toml = wagi_map(tmp_path)
    node = live_cp.ok("POST", "/nodes", 201, json={"id": "tokyo-1", "pop_id": "tokyo"})
    args = ["deploy", "--modules-toml", str(toml), "--cp", live_cp.url]
    env = {"EDGEFN_TOKEN": ADMIN_TOKEN}
    with AckingNode(live_cp.grpc_target, node).running() as edge:
        first = runner.invoke(cli, args, env=env)
        assert first.exit_code == 0, first.output
        assert "function hello: created" in first.output
        assert "function entrypoints: created" in first.output
        assert "route */ep/* [all methods] priority 0: created" in first.output
        assert "http_max_concurrency is not kept" in first.output
        again = runner.invoke(cli, args, env=env)
        assert again.exit_code == 0, again.output
        assert again.output.count("up to date") == 2
        assert again.output.count("already uploaded, skipped") == 2
        deploys = [m.deploy for m in edge.received if m.WhichOneof("payload") == "deploy"]
    functions = {f["name"]: f for f in live_cp.ok("GET", "/functions")}
    assert functions["hello"]["entrypoint"] == "_start"
    assert functions["entrypoints"]["entrypoint"] == "_start"
    assert functions["entrypoints"]["http_fetch"]["allow_hosts"] == ["api.example.com"]
    assert functions["hello"]["active_version"].startswith("0.0.0+wagi.")
    assert {r["path"] for r in live_cp.ok("GET", "/routes")} == {"/", "/ep/*"}
    assert len(deploys) == 4 and {d.abi for d in deploys} == {"wagi"}


def test_a_wagi_maps_volumes_ship_as_the_versions_data_archive(
    runner: CliRunner, live_cp: LiveCP, tmp_path: Path
) -> None:
    """An entry's volumes are packed into its version's data archive (the same bytes on
    every run: nothing is uploaded twice), and the deploy carries the archive."""
    toml = wagi_map(tmp_path, '\n[[module]]\nroute = "/v"\nmodule = "hello.wat"\n'
                    'volumes = { "/data" = "static", "/" = "static" }\n')
    node = live_cp.ok("POST", "/nodes", 201, json={"id": "tokyo-1", "pop_id": "tokyo"})
    args = ["deploy", "--modules-toml", str(toml), "--cp", live_cp.url]
    env = {"EDGEFN_TOKEN": ADMIN_TOKEN}
    with AckingNode(live_cp.grpc_target, node).running() as edge:
        first = runner.invoke(cli, args, env=env)
        assert first.exit_code == 0, first.output
        again = runner.invoke(cli, args, env=env)
        assert again.exit_code == 0, again.output
        assert again.output.count("already uploaded, skipped") == 3
        deploys = [m.deploy for m in edge.received if m.WhichOneof("payload") == "deploy"]
    (fn,) = [f for f in live_cp.ok("GET", "/functions") if f["name"] == "hello-2"]
    (version,) = live_cp.ok("GET", f"/functions/{fn['id']}/versions")
    data = version["data"]
    assert data["mounts"] == {"/": "volume-0", "/data": "volume-1"}
    archive = live_cp.http.get(
        f"/api/v1/functions/{fn['id']}/versions/{version['version']}/data", headers=ADMIN)
    assert archive.status_code == 200 and len(archive.content) == data["size"]
    assert hashlib.sha256(archive.content).hexdigest() == data["sha256"]
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        assert sorted(tar.getnames()) == ["volume-0", "volume-0/greeting.txt",
                                          "volume-1", "volume-1/greeting.txt"]
    carried = [d for d in deploys if d.HasField("data")]
    assert carried and {d.function_id for d in carried} == {fn["id"]}
    assert all(d.data.sha256 == data["sha256"] and d.data.url for d in carried)
    assert dict(carried[0].data.mounts) == data["mounts"]
    # The other entries carry none.
    assert len(deploys) > len(carried)


def test_a_wagi_map_with_an_empty_volume_is_refused_whole(
    runner: CliRunner, live_cp: LiveCP, tmp_path: Path
) -> None:
    toml = wagi_map(tmp_path, '\n[[module]]\nroute = "/v"\nmodule = "hello.wat"\n'
                    'volumes = { "/data" = "empty" }\n'
                    '\n[[module]]\nroute = "/ep1"\nmodule = "entrypoints.wat"\n'
                    'entrypoint = "ep1"\n')
    (toml.parent / "empty").mkdir()
    result = runner.invoke(cli, ["deploy", "--modules-toml", str(toml), "--cp", live_cp.url],
                           env={"EDGEFN_TOKEN": ADMIN_TOKEN})
    assert result.exit_code == 1
    assert "nothing deployed" in result.output
    assert "module hello.wat (route /v): its volumes hold no file to ship" in result.output
    # An entrypoint travels with the version to the nodes: only the volume is refused.
    assert "(route /ep1)" not in result.output
    assert live_cp.ok("GET", "/functions") == []
    usage = runner.invoke(cli, ["deploy", "--cp", live_cp.url], env={"EDGEFN_TOKEN": ADMIN_TOKEN})
    assert usage.exit_code == 2 and "--modules-toml" in usage.output
    assert "no function.json here" in usage.output


def test_the_urls_a_function_is_served_at(
    runner: CliRunner, live_cp: LiveCP, tmp_path: Path
) -> None:
    """Each route that serves the function on the edge's URL: a route on a host of its
    own with a curl line reaching it through the edge; `--json` has them too, alone on
    stdout; a function without a route is told how to get one."""
    folder = tmp_path / "shop"
    shutil.copytree(EXAMPLE, folder)
    manifest = json.loads((folder / "function.json").read_text())
    manifest["routes"] += [{"host": "shop.test", "path": "/api/*", "priority": 5},
                           {"host": "*.shop.test", "path": "/w"}]
    (folder / "function.json").write_text(json.dumps(manifest))
    node = live_cp.ok("POST", "/nodes", 201, json={"id": "tokyo-1", "pop_id": "tokyo"})
    with AckingNode(live_cp.grpc_target, node).running():
        result = runner.invoke(cli, ["deploy", str(folder), "--cp", live_cp.url, "--json"],
                               env={"EDGEFN_TOKEN": ADMIN_TOKEN})
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    # Highest priority first, then by host and path.
    urls = ["http://shop.test:8000/api/", f"{EDGE_URL}/c/hello", "http://*.shop.test:8000/w"]
    assert printed["urls"] == urls
    assert (printed["function"], printed["version"]) == ("hello-c", "1.0.0")
    assert "deployed hello-c 1.0.0" in result.stderr
    assert ("serving at http://shop.test:8000/api/   "
            f"(curl -H 'Host: shop.test' {EDGE_URL}/api/)") in result.stderr
    assert "serving at http://*.shop.test:8000/w\n" in result.stderr
    fn = live_cp.ok("GET", f"/functions/{printed['function_id']}")
    assert (fn["urls"], fn["edge_url"]) == (urls, EDGE_URL)
    (listed,) = live_cp.ok("GET", "/functions")
    assert listed["urls"] is None  # listings leave them out

    for route in live_cp.ok("GET", "/routes"):
        live_cp.ok("DELETE", f"/routes/{route['id']}", 204)
    manifest["routes"] = []
    (folder / "function.json").write_text(json.dumps(manifest))
    bare = deploy(runner, live_cp, folder, "--no-wait", token=ADMIN_TOKEN)
    assert bare.exit_code == 0, bare.output
    assert "hello-c has no route, so no URL serves it" in bare.output
    assert '"routes": [{"host": "*", "path": "/hello-c"}]' in bare.output


def test_without_an_edge_url_deploy_says_so(
    runner: CliRunner, tmp_path: Path, database_url: str
) -> None:
    with serve(tmp_path, database_url) as cp:
        result = deploy(runner, cp, EXAMPLE, "--no-wait", token=ADMIN_TOKEN)
        assert result.exit_code == 0, result.output
        assert "does not know the edge's URL" in result.output and "--edge-url" in result.output
        (fn,) = cp.ok("GET", "/functions")
        assert cp.ok("GET", f"/functions/{fn['id']}")["urls"] is None


def test_a_folder_without_its_module_is_built_on_the_control_plane(
    runner: CliRunner, live_cp: LiveCP, tmp_path: Path
) -> None:
    """A project from `edgefn init` deploys without a local build: its source is built
    into the version; a compile error exits 1 with the compiler's words; once the
    version exists, deploying again builds nothing."""
    _need("wat")
    project = tmp_path / "p"
    assert runner.invoke(cli, ["init", "p", "--lang", "wat", "--dir", str(project)]).exit_code == 0
    source = (project / "hello.wat").read_text()
    (project / "hello.wat").write_text("(module (func (export \"f\") i32.add))")
    broken = deploy(runner, live_cp, project, "--no-wait", token=ADMIN_TOKEN)
    assert broken.exit_code == 1, broken.output
    assert "no hello.wasm here; building wat source on the control plane" in broken.output
    assert "failed" in broken.output and "wat2wasm" in broken.output

    (project / "hello.wat").write_text(source)
    built = deploy(runner, live_cp, project, "--no-wait", token=ADMIN_TOKEN)
    assert built.exit_code == 0, built.output
    (fn,) = live_cp.ok("GET", "/functions")
    (version,) = live_cp.ok("GET", f"/functions/{fn['id']}/versions")
    assert f"build 0.1.0: built, sha256 {version['sha256']}" in built.output
    assert f"serving at {EDGE_URL}/p" in built.output
    assert not (project / "hello.wasm").exists()
    again = deploy(runner, live_cp, project, "--no-wait", token=ADMIN_TOKEN)
    assert again.exit_code == 0, again.output
    assert "the version exists, not built again" in again.output
    assert len(live_cp.ok("GET", f"/functions/{fn['id']}/builds")) == 2


def _need(language: str) -> None:
    probe = driver(language).probe()
    if not probe.ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{language} toolchain missing with CI=true: {probe.detail}")
        pytest.skip(f"{language}: {probe.detail}")


def test_a_wagi_maps_functions_take_names_the_control_plane_accepts(tmp_path: Path) -> None:
    """Named after their module files as on a node, within the control plane's rule
    (lower-case letters, digits, inner `-`), two files never on one name."""
    app = tmp_path / "app"
    app.mkdir()
    for name in ("My_App.wat", "my-app.wat", "__.wat"):
        shutil.copy(WAGI_CORPUS / "hello.wat", app / name)
    (app / "modules.toml").write_text("".join(
        f'[[module]]\nroute = "/{i}"\nmodule = "{name}"\n'
        for i, name in enumerate(("My_App.wat", "my-app.wat", "__.wat"))))
    functions = wagi_functions(app / "modules.toml")
    assert [spec.name for spec, _, _ in functions] == ["my-app", "my-app-2", "module"]


def test_a_split_deploy_from_the_command_line(
    runner: CliRunner, live_cp: LiveCP, tmp_path: Path
) -> None:
    """`--split` sends a share of the traffic to the new version, keyed as asked, with
    the shares a gated split is promoted through."""
    folder = tmp_path / "hello"
    shutil.copytree(EXAMPLE, folder)
    node = live_cp.ok("POST", "/nodes", 201, json={"id": "tokyo-1", "pop_id": "tokyo"})
    with AckingNode(live_cp.grpc_target, node).running():
        first = deploy(runner, live_cp, folder, token=ADMIN_TOKEN)
        assert first.exit_code == 0, first.output
        manifest = json.loads((folder / "function.json").read_text())
        (folder / "function.json").write_text(json.dumps({**manifest, "version": "1.0.1"}))
        lone = deploy(runner, live_cp, folder, "--split-key", "header:x-user",
                      token=ADMIN_TOKEN)
        assert lone.exit_code == 2 and "go with --split PERCENT" in lone.output
        split = deploy(runner, live_cp, folder, "--no-wait", "--json", "--split", "20",
                       "--split-key", "header:X-User", "--split-step", "50", "--gate",
                       "bake_s=5", token=ADMIN_TOKEN)
        assert split.exit_code == 0, split.output
        dep = live_cp.ok("GET", f"/deployments/{json.loads(split.stdout)['deployment_id']}")
    assert dep["split"]["percent"] == 20 and dep["split"]["key"] == "header:x-user"
    assert dep["split"]["steps"] == [50]  # then 100
    assert dep["rollout"]["percent"] == 20 and dep["rollout"]["gates"]["bake_s"] == 5
