"""`edgefn deploy [PATH]`: make the control plane run a function folder's version,
and say where it is served.

Each step is idempotent, so running it again after a failure (or with nothing
changed) is safe: create or update the function, upload the version unless that
exact module is already there (or, for a folder without its module, build its
source on the control plane unless the version exists), add missing routes,
deploy, follow the nodes, and print the function's URLs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from edgefn.builder.archive import pack as pack_source
from edgefn.cli._api import CPClient, cp_error
from edgefn.cli._output import Progress, ProgressReader, human_size, print_json
from edgefn.cli.build import detect_language, follow_build, submit_build
from edgefn.cli.credentials import cp_options, resolve
from edgefn.contract import POLICY_FIELDS, DeployInstruction, RouteSpec
from edgefn.data_archive import pack
from edgefn.edge.spec import FunctionSpec, load_function_dir
from edgefn.edge.wagi_map import ModuleMapError, load_modules_toml

# function.json fields that are function settings on the CP; only those the file
# names are sent, so settings made through the API stay unless the file says otherwise.
# `config_dir` is a path on one node, so it is not among them.
_SETTINGS = (
    "entrypoint",
    "memory_pages",
    "max_execution_ms",
    "max_response_bytes",
    "pop_selector",
    "env",
    *POLICY_FIELDS,
)

def _reaches_nodes(field: str) -> bool:
    """A function setting the control plane hands its nodes with each version."""
    return field in DeployInstruction.model_fields or field in POLICY_FIELDS


def _local_only(spec: FunctionSpec) -> list[str]:
    """What a module map's entry asks that a node would not get through the control
    plane: argv and an entrypoint other than `_start` while deploy instructions do not
    carry them (volumes travel as the version's data archive)."""
    fields = spec.model_fields_set
    out: list[str] = []
    if spec.entrypoint != "_start" and not _reaches_nodes("entrypoint"):
        out.append("entrypoint")
    if "argv" in fields and not _reaches_nodes("argv"):
        out.append("argv")
    return out

DEFAULT_PROJECT = "default"
POLL_S = 0.5


@dataclass(frozen=True)
class DataFiles:
    """A version's data archive as `edgefn deploy` uploads it: the tar.gz of a module
    map entry's volumes and its mount map (guest path -> directory in the archive)."""

    archive: bytes
    mounts: dict[str, str]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.archive).hexdigest()


# A function to deploy: its spec, and its module, or (folder, language) to build it
# from when the folder has no module but source the builder knows; and the data
# archive its version ships, if any.
Folder = tuple[FunctionSpec, bytes | None, tuple[Path, str] | None, DataFiles | None]


class DeploymentFailed(click.ClickException):
    """The deployment failed on a node, was superseded, or did not finish in time."""


def _settings(spec: FunctionSpec) -> dict[str, Any]:
    # A policy object is sent whole, defaults filled in: that is what the CP returns,
    # so an unchanged file compares equal and is not patched again.
    values = spec.model_dump(mode="json", include=set(_SETTINGS) & spec.model_fields_set)
    if values.get("pop_selector") == "":
        values["pop_selector"] = None
    return values


def _project(api: CPClient, wanted: str | None) -> str:
    """The project a new function goes to: --project (id or name); else one named
    `default`; else the caller's only project; else a new `default` project, which
    only the admin token may create."""
    projects = api.list_all("/projects")
    if wanted is not None:
        for p in projects:
            if wanted in (p["id"], p["name"]):
                return str(p["id"])
        raise click.BadParameter(
            f"no project {wanted!r} visible to this token", param_hint="--project"
        )
    named = [p for p in projects if p["name"] == DEFAULT_PROJECT]
    if named:
        return str(named[0]["id"])
    if len(projects) == 1:
        return str(projects[0]["id"])
    response = api.send("POST", "/projects", json={"name": DEFAULT_PROJECT})
    if response.status_code == 403:
        names = ", ".join(sorted(p["name"] for p in projects)) or "none"
        raise click.UsageError(
            f"pass --project: this token may use several projects or none ({names})"
        )
    if response.is_error:
        raise cp_error(response)
    click.echo(f"project {DEFAULT_PROJECT}: created")
    return str(response.json()["id"])


def _function(api: CPClient, spec: FunctionSpec, project: str | None) -> dict[str, Any]:
    """Find the function by name (in --project, when given), create or update it."""
    project_id = _project(api, project) if project is not None else None
    found = [
        f
        for f in api.list_all("/functions")
        if f["name"] == spec.name and project_id in (None, f["owner_project_id"])
    ]
    if len(found) > 1:
        raise click.UsageError(f"several functions are named {spec.name!r}; pass --project")
    wanted = _settings(spec)
    if not found:
        owner = project_id or _project(api, None)
        fn: dict[str, Any] = api.call(
            "POST", "/functions", json={"name": spec.name, "owner_project_id": owner, **wanted}
        )
        click.echo(f"function {spec.name}: created ({fn['id']}, project {owner})")
        return fn
    fn = found[0]
    changed = {k: v for k, v in wanted.items() if fn.get(k) != v}
    if changed:
        fn = api.call("PATCH", f"/functions/{fn['id']}", json=changed)
        click.echo(f"function {spec.name}: updated {', '.join(sorted(changed))} ({fn['id']})")
    else:
        click.echo(f"function {spec.name}: up to date ({fn['id']})")
    return fn


def _version_of(api: CPClient, function_id: str, version: str) -> dict[str, Any] | None:
    for row in api.list_all(f"/functions/{function_id}/versions"):
        if row["version"] == version:
            return dict(row)
    return None


def _upload(api: CPClient, function_id: str, spec: FunctionSpec, data: bytes,
            files: DataFiles | None = None, *, quiet: bool = False) -> None:
    digest = hashlib.sha256(data).hexdigest()
    label = f"upload {spec.version}: {len(data)} bytes, sha256 {digest}"
    if files is not None:
        label += f"; data {len(files.archive)} bytes, sha256 {files.sha256}"
    existing = _version_of(api, function_id, spec.version)
    if existing is None:
        total = len(data) + (len(files.archive) if files is not None else 0)
        bar = Progress(f"upload {spec.version}", total, fmt=human_size,
                       enabled=not quiet)
        fields = {"version": spec.version, "sha256": digest}
        parts: dict[str, Any] = {
            "artifact": (Path(spec.artifact).name, ProgressReader(data, bar), "application/wasm")
        }
        if files is not None:
            fields["mounts"] = json.dumps(files.mounts)
            parts["data"] = ("data.tar.gz",
                             ProgressReader(files.archive, bar, offset=len(data)),
                             "application/gzip")
        response = api.send("POST", f"/functions/{function_id}/versions", data=fields,
                            files=parts)
        bar.finish()
        if response.status_code != 409:  # 409: uploaded meanwhile; compare below
            if response.is_error:
                raise cp_error(response)
            click.echo(f"{label}: uploaded")
            return
        existing = _version_of(api, function_id, spec.version) or {}
    have_data = (existing.get("data") or {}).get("sha256")
    if have_data != (files.sha256 if files is not None else None):
        raise click.ClickException(
            f"version {spec.version} already exists with other data (the CP has "
            f"{have_data or 'none'}); versions are immutable"
        )
    if existing.get("sha256") != digest:
        raise click.ClickException(
            f"version {spec.version} already exists with a different module (the CP has "
            f"sha256 {existing.get('sha256')}, this one is {digest}); versions are "
            "immutable, bump `version` in function.json"
        )
    click.echo(f"{label}: already uploaded, skipped")


class BuildFailed(click.ClickException):
    """The control plane could not build the function's source."""


def _build(api: CPClient, function_id: str, spec: FunctionSpec, folder: Path, language: str,
           *, quiet: bool) -> None:
    """Build the folder's source on the control plane into the version, unless the
    function has that version already."""
    module = Path(spec.artifact).name
    if _version_of(api, function_id, spec.version) is not None:
        click.echo(f"build {spec.version}: the version exists, not built again (no {module} "
                   "here to compare; bump `version` in function.json to deploy a change)")
        return
    click.echo(f"build {spec.version}: no {module} here; building {language} source on the "
               "control plane")
    build = submit_build(api, function_id, pack_source(folder), language, spec.version)
    done = follow_build(api, build["id"], quiet=quiet)
    if done["state"] != "succeeded":
        raise BuildFailed(f"build {done['id']} failed: {done['error']}\n{done['log'].rstrip()}")
    click.echo(f"build {spec.version}: built, sha256 {done['sha256']}")


def _route_label(route: RouteSpec) -> str:
    methods = ",".join(route.methods) if route.methods else "all methods"
    return f"route {route.host}{route.path} [{methods}] priority {route.priority}"


def _routes(api: CPClient, function_id: str, spec: FunctionSpec) -> None:
    """Create the file's routes the function does not have; never delete any."""
    have = {
        (r["host"], r["path"], r["priority"]): r
        for r in api.list_all("/routes")
        if r["function_id"] == function_id
    }
    for route in spec.routes:
        current = have.get((route.host, route.path, route.priority))
        if current is None:
            body: dict[str, Any] = {
                "host": route.host,
                "path": route.path,
                "priority": route.priority,
                "function_id": function_id,
            }
            if route.methods:
                body["methods"] = list(route.methods)
            api.call("POST", "/routes", json=body)
            click.echo(f"{_route_label(route)}: created")
        elif route.methods and sorted(route.methods) != sorted(current["methods"]):
            click.echo(
                f"{_route_label(route)}: exists with methods {','.join(current['methods'])}; "
                "left as is (delete it to change it)"
            )
        else:
            click.echo(f"{_route_label(route)}: exists")


def follow(api: CPClient, deployment_id: str, timeout_s: float, *, quiet: bool = False) -> None:
    """Print each node's state as it changes until the deployment ends or time runs out,
    with a bar of the nodes done on a terminal (`quiet`: neither)."""
    deadline = time.monotonic() + timeout_s
    shown: dict[str, str] = {}
    bar: Progress | None = None
    try:
        while True:
            dep = api.call("GET", f"/deployments/{deployment_id}")
            if bar is None:
                bar = Progress("nodes", len(dep["nodes"]), enabled=not quiet)
            bar.clear()
            for node in dep["nodes"]:
                if shown.get(node["node_id"]) != node["state"]:
                    shown[node["node_id"]] = node["state"]
                    note = f" ({node['message']})" if node.get("message") else ""
                    if not quiet:
                        click.echo(f"  node {node['node_id']}: {node['state']}{note}")
            bar.update(sum(1 for state in shown.values() if state == "cached"))
            if _ended(dep, timeout_s, deadline, shown):
                return
            time.sleep(POLL_S)
    finally:
        if bar is not None:
            bar.finish()


def _ended(dep: dict[str, Any], timeout_s: float, deadline: float,
           shown: dict[str, str]) -> bool:
    """True once the deployment succeeded; DeploymentFailed once it cannot."""
    deployment_id = dep["id"]
    errors = [n["node_id"] for n in dep["nodes"] if n["state"] == "error"]
    reason = (dep.get("rollout") or {}).get("reason")
    if reason:
        raise DeploymentFailed(f"deployment {deployment_id}: {reason}")
    if errors or dep["state"] == "failed":
        raise DeploymentFailed(f"deployment {deployment_id} failed on {', '.join(errors)}")
    if dep["state"] == "superseded":
        raise DeploymentFailed(f"deployment {deployment_id} was superseded by a newer one")
    if dep["state"] == "succeeded":
        return True
    if time.monotonic() >= deadline:
        waiting = sorted(n for n, state in shown.items() if state != "cached")
        raise DeploymentFailed(
            f"deployment {deployment_id} not finished after {timeout_s:g}s; "
            f"waiting for {', '.join(waiting)}"
        )
    return False


def _gates(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`NAME=VALUE` pairs as the deploy's gates; the CP checks names and bounds."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--gate")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


@click.command()
@click.argument("path", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="print the result as JSON (with the function's URLs); the steps go "
              "to stderr")
@click.option("--modules-toml", "modules_toml",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Deploy a WAGI module map instead: one function per [[module]] "
              "(docs/wagi.md).")
@cp_options
@click.option("--project", help="project id or name for a new function")
@click.option(
    "--strategy",
    type=click.Choice(["pull", "canary", "gradual"]),
    default="pull",
    show_default=True,
)
@click.option("--target-pop", multiple=True, help="deploy only to nodes of this POP; repeatable")
@click.option("--gated", is_flag=True,
              help="canary/gradual: watch each wave with health gates (docs/rollouts.md)")
@click.option("--gate", "gate", multiple=True, metavar="NAME=VALUE",
              help="a health gate other than its default (bake_s=30, min_requests=50, "
              "max_error_rate_increase=0.02, max_p99_ratio=2, p99_floor_s=0.01, "
              "wave_percent=25, manual=true); implies --gated; repeatable")
@click.option("--split", "split_percent", type=click.IntRange(0, 100), metavar="PERCENT",
              help="send PERCENT of the traffic to the new version on every target, the "
              "rest to the version before (docs/rollouts.md); with --gated, bake it and "
              "promote or roll back by itself")
@click.option("--split-key", default="", metavar="KEY",
              help="what keeps a client on one side: 'header:NAME', 'cookie:NAME', or "
              "the client address (default)")
@click.option("--split-step", "split_steps", multiple=True, type=click.IntRange(1, 100),
              metavar="PERCENT", help="a gated split's next share; repeatable (it always "
              "ends at 100)")
@click.option("--wait/--no-wait", default=True, show_default=True, help="follow the nodes")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="seconds to wait for the nodes",
)
def deploy(
    path: Path | None,
    as_json: bool,
    modules_toml: Path | None,
    cp_url: str | None,
    token: str | None,
    project: str | None,
    strategy: str,
    target_pop: tuple[str, ...],
    gated: bool,
    gate: tuple[str, ...],
    split_percent: int | None,
    split_key: str,
    split_steps: tuple[int, ...],
    wait: bool,
    timeout_s: float,
) -> None:
    """Deploy the function in PATH [.] (its function.json and module) to the edge, or
    every module of a WAGI module map (--modules-toml), and print the URLs it is
    served at. Without its module, a folder holding source (as `edgefn init` writes)
    is built on the control plane.

    Exits 0 when every target node cached the version (or without --wait, once the
    deployment is recorded), 1 when it failed, timed out or the CP refused a step.
    """
    if path is not None and modules_toml is not None:
        raise click.UsageError("give a function folder PATH or --modules-toml FILE, not both")
    if path is None and modules_toml is None and not Path("function.json").is_file():
        raise click.UsageError("no function.json here: give a function folder PATH or "
                               "--modules-toml FILE")
    functions: list[Folder]
    if modules_toml is not None:
        functions = [(spec, data, None, files)
                     for spec, data, files in wagi_functions(modules_toml)]
    else:
        functions = [_function_folder(path or Path("."))]
    body: dict[str, Any] = {"strategy": strategy}
    if target_pop:
        body["target_pop"] = list(target_pop)
    if gated or gate:
        body["gates"] = _gates(gate)
    if split_percent is not None:
        body["split"] = {"percent": split_percent, "key": split_key,
                         **({"steps": list(split_steps)} if split_steps else {})}
    elif split_key or split_steps:
        raise click.UsageError("--split-key and --split-step go with --split PERCENT")
    url, token = resolve(cp_url, token)
    results = []
    # With --json, stdout holds only the result: the steps are told on stderr.
    steps = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with CPClient(url, token) as api, steps:
        for spec, data, source, files in functions:
            results.append(_deploy_one(api, spec, data, source, project, body, files=files,
                                       wait=wait, timeout_s=timeout_s, quiet=as_json))
    if as_json:
        print_json(results[0] if modules_toml is None else results)


def _function_folder(path: Path) -> Folder:
    """The folder's function, with its module or, when it has none, its source."""
    try:
        spec = load_function_dir(path)
    except ValueError as exc:  # pydantic's ValidationError is one
        raise click.BadParameter(str(exc), param_hint="PATH") from exc
    if spec.volumes or spec.config_dir:
        # Paths on one node, for `edgefn edge serve --functions`; data archives ship
        # from module maps.
        click.echo("warning: volumes and config_dir are served by a node's own functions "
                   "directory; they are not deployed", err=True)
    module = Path(spec.artifact)
    language = detect_language(path)
    if not module.exists() and language is not None:
        return spec, None, (path, language), None
    try:
        return spec, module.read_bytes(), None, None
    except OSError as exc:
        raise click.BadParameter(f"cannot read the module: {exc}", param_hint="PATH") from exc


def wagi_functions(modules_toml: Path) -> list[tuple[FunctionSpec, bytes, DataFiles | None]]:
    """The map's functions with their modules and, for an entry with volumes, the data
    archive packed from them; or a refusal naming every entry that cannot go through
    the control plane, before anything is changed."""
    try:
        loaded = load_modules_toml(modules_toml, warn=lambda m: click.echo(f"warning: {m}"))
    except ModuleMapError as exc:
        raise click.BadParameter(str(exc), param_hint="--modules-toml") from exc
    refused = [f"{label}: {reason}" for label, reason in loaded.problems.items()]
    out = []
    names: set[str] = set()
    for module in loaded.modules:
        # Named after its file, as on a node, within the control plane's rule for names.
        spec = module.spec.model_copy(update={"name": _cp_name(module.spec.name, names)})
        names.add(spec.name)
        label = f"module {module.source.name} (route {spec.routes[0].path})"
        local = _local_only(spec)
        if local:
            refused.append(
                f"{label}: {' and '.join(local)} cannot be deployed through the control "
                "plane (it ships no files or settings for them with a version); serve this "
                "map with `edgefn edge serve --modules-toml`"
            )
            continue
        if "http_max_concurrency" in spec.model_fields_set:
            click.echo(f"warning: {label}: http_max_concurrency is not kept by the control "
                       "plane; the node's default applies")
        files = None
        if spec.volumes:
            try:
                files = _data_files(spec, label)
            except ValueError as exc:
                refused.append(f"{label}: {exc}")
                continue
            # The version names the module and the files: new files, a new version.
            both = hashlib.sha256(f"{spec.sha256}:{files.sha256}".encode()).hexdigest()
            spec = spec.model_copy(update={"version": f"0.0.0+wagi.{both[:12]}"})
        wasm_name = str(Path(spec.artifact).with_suffix(".wasm"))
        out.append((spec.model_copy(update={"artifact": wasm_name}), module.wasm, files))
    if refused:
        raise click.ClickException("nothing deployed:\n  " + "\n  ".join(refused))
    return out


def _cp_name(name: str, taken: set[str]) -> str:
    """`name` as a control-plane function name (lower-case letters, digits, inner
    `-`; `My_App` is `my-app`), another one than those `taken`."""
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:90] or "module"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _data_files(spec: FunctionSpec, label: str) -> DataFiles:
    """The entry's volumes (guest path -> host directory) packed as its data archive;
    ValueError for volumes that hold no file at all."""
    dirs = {guest: Path(host) for guest, host in spec.volumes.items()}
    if not any(p.is_file() and not p.is_symlink() for d in dirs.values() for p in d.rglob("*")):
        raise ValueError("its volumes hold no file to ship")
    archive, mounts = pack(dirs, skipped=lambda p: click.echo(
        f"warning: {label}: {p} is not a regular file or directory; not shipped"))
    return DataFiles(archive, mounts)


def _deploy_one(api: CPClient, spec: FunctionSpec, data: bytes | None,
                source: tuple[Path, str] | None, project: str | None, body: dict[str, Any],
                *, files: DataFiles | None, wait: bool, timeout_s: float,
                quiet: bool) -> dict[str, Any]:
    """Deploy one function (its module `data`, or built from `source`); the result
    `--json` prints: the function, version, deployment and URLs."""
    fn = _function(api, spec, project)
    if data is not None:
        _upload(api, fn["id"], spec, data, files, quiet=quiet)
    else:
        assert source is not None
        _build(api, fn["id"], spec, *source, quiet=quiet)
    _routes(api, fn["id"], spec)
    dep = api.call("POST", f"/functions/{fn['id']}/deploy",
                   json={"version": spec.version, **body})
    click.echo(
        f"deployment {dep['id']}: {spec.version} ({body['strategy']}) to "
        f"{len(dep['nodes'])} node(s)"
    )
    result: dict[str, Any] = {"function": spec.name, "function_id": fn["id"],
                              "version": spec.version, "deployment_id": dep["id"]}
    if wait and not dep["nodes"]:
        click.echo("no node matched; nodes registered later get this version")
    elif wait:
        follow(api, dep["id"], timeout_s, quiet=quiet)
        click.echo(f"deployed {spec.name} {spec.version}")
    served = api.call("GET", f"/functions/{fn['id']}")
    result["urls"] = served.get("urls")
    _tell_urls(spec, served)
    return result


def _tell_urls(spec: FunctionSpec, fn: dict[str, Any]) -> None:
    """Where the function is served, with a curl line for a route on a host of its
    own (which may not resolve to the edge yet); or why there is no URL to give."""
    urls, edge_url = fn.get("urls"), fn.get("edge_url")
    if urls is None or edge_url is None:
        click.echo("the control plane does not know the edge's URL, so it cannot say where "
                   f"{spec.name} is served (set EDGEFN_EDGE_URL or `edgefn cp serve "
                   "--edge-url`); its routes serve it on every node it runs on")
        return
    if not urls:
        click.echo(f"{spec.name} has no route, so no URL serves it: add one to function.json, "
                   f'e.g. "routes": [{{"host": "*", "path": "/{spec.name}"}}], and deploy '
                   "again")
        return
    edge = urlsplit(edge_url)
    for url in urls:
        parts = urlsplit(url)
        hint = ""
        if parts.hostname != edge.hostname and "*" not in parts.netloc:
            via = parts._replace(netloc=edge.netloc).geturl()
            hint = f"   (curl -H {shlex.quote(f'Host: {parts.hostname}')} {via})"
        click.echo(f"serving at {url}{hint}")
