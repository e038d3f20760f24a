"""`edgefn functions list`, `edgefn versions NAME`, `edgefn rollback NAME`: an author's
functions as the control plane has them, and the way back to an earlier version.

A function is named as in its function.json; `--project` (id or name) picks one
when several projects visible to the token have a function of that name."""

from __future__ import annotations

from typing import Any

import click

from edgefn.cli._api import CPClient
from edgefn.cli._output import (
    NotFoundError,
    human_size,
    json_option,
    print_json,
    print_table,
)
from edgefn.cli.credentials import cp_options, resolve
from edgefn.cli.deploy import follow

project_option = click.option("--project", help="project id or name")


def _project_id(api: CPClient, wanted: str) -> str:
    for p in api.list_all("/projects"):
        if wanted in (p["id"], p["name"]):
            return str(p["id"])
    raise NotFoundError(f"no project {wanted!r} visible to this token")


def find_function(api: CPClient, name: str, project: str | None) -> dict[str, Any]:
    """The function named `name` (or with that id), in `project` when given; exit 5
    when there is none, 2 when several projects have one of that name."""
    project_id = _project_id(api, project) if project is not None else None
    found = [
        f for f in api.list_all("/functions")
        if name in (f["name"], f["id"]) and project_id in (None, f["owner_project_id"])
    ]
    if not found:
        where = f" in project {project}" if project is not None else ""
        raise NotFoundError(f"no function {name!r}{where} visible to this token")
    if len(found) > 1:
        raise click.UsageError(f"several functions are named {name!r}; pass --project")
    return dict(found[0])


@click.group()
def functions() -> None:
    """The functions this token may see."""


@functions.command("list")
@cp_options
@project_option
@json_option
def list_functions(cp_url: str | None, token: str | None, project: str | None,
                   as_json: bool) -> None:
    """The functions of every project this token may see, or of --project."""
    url, tok = resolve(cp_url, token)
    with CPClient(url, tok) as api:
        projects = {p["id"]: p["name"] for p in api.list_all("/projects")}
        project_id = _project_id(api, project) if project is not None else None
        rows = [f for f in api.list_all("/functions")
                if project_id in (None, f["owner_project_id"])]
    if as_json:
        print_json(rows)
        return
    print_table(
        ("NAME", "PROJECT", "ACTIVE", "ID", "UPDATED"),
        [(f["name"], projects.get(f["owner_project_id"], f["owner_project_id"]),
          f["active_version"], f["id"], f["updated_at"][:19]) for f in rows],
    )


def _deployed(nodes: list[dict[str, Any]], function_id: str) -> dict[str, list[str]]:
    """Per version, the nodes reporting it and in which state (`node:state`)."""
    where: dict[str, list[str]] = {}
    for node in nodes:
        for fn in node.get("functions") or []:
            if fn.get("id") == function_id and fn.get("version"):
                where.setdefault(fn["version"], []).append(f"{node['id']}:{fn['state']}")
    return where


@click.command()
@click.argument("name")
@cp_options
@project_option
@json_option
def versions(name: str, cp_url: str | None, token: str | None, project: str | None,
             as_json: bool) -> None:
    """The versions of function NAME, oldest first: when each was uploaded, its
    module's sha256 and size, and the nodes running it."""
    url, tok = resolve(cp_url, token)
    with CPClient(url, tok) as api:
        fn = find_function(api, name, project)
        rows = api.list_all(f"/functions/{fn['id']}/versions")
        where = _deployed(api.list_all("/nodes"), fn["id"])
    for row in rows:
        row["active"] = row["version"] == fn["active_version"]
        row["nodes"] = sorted(where.get(row["version"], []))
    if as_json:
        print_json(rows)
        return
    print_table(
        ("VERSION", "CREATED", "SHA256", "SIZE", "ACTIVE", "NODES"),
        [(r["version"], r["created_at"][:19], r["sha256"][:12], human_size(r["size"]),
          "*" if r["active"] else "", ",".join(r["nodes"])) for r in rows],
    )


@click.command()
@click.argument("name")
@cp_options
@project_option
@click.option("--to", "version", help="the version to return to (default: the one before "
              "the current)")
@click.option("--wait/--no-wait", default=True, show_default=True, help="follow the nodes")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), default=60.0,
              show_default=True, help="seconds to wait for the nodes")
@json_option
def rollback(name: str, cp_url: str | None, token: str | None, project: str | None,
             version: str | None, wait: bool, timeout_s: float, as_json: bool) -> None:
    """Deploy an earlier version of function NAME again (nodes that still hold it
    switch without downloading it). Exits 0 once every target node runs it, 1 when
    the rollback failed or timed out."""
    url, tok = resolve(cp_url, token)
    with CPClient(url, tok) as api:
        fn = find_function(api, name, project)
        dep = api.call("POST", f"/functions/{fn['id']}/rollback",
                       json={"version": version} if version else {})
        if not as_json:
            click.echo(f"deployment {dep['id']}: {fn['name']} back to {dep['version']} "
                       f"(was {dep.get('previous_version') or '-'}) on "
                       f"{len(dep['nodes'])} node(s)")
        if wait and dep["nodes"]:
            follow(api, dep["id"], timeout_s, quiet=as_json)
            dep = api.call("GET", f"/deployments/{dep['id']}")
    if as_json:
        print_json(dep)
    elif wait:
        click.echo(f"rolled back {fn['name']} to {dep['version']}")
