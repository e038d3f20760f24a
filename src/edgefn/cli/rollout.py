"""`edgefn rollout status|promote|abort ID`: a gated rollout as the control plane
judges it (state, wave, every decision with its figures), and the operator's two
levers on it."""

from __future__ import annotations

import time
from typing import Any

import click

from edgefn.cli._api import CPClient
from edgefn.cli.credentials import cp_options, resolve

POLL_S = 1.0
FINAL = {"done", "rolled_back", "aborted"}


class RolloutFailed(click.ClickException):
    """The rollout was rolled back or aborted."""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:g}ms"


def _figures(fig: dict[str, Any] | None) -> str:
    if not fig:
        return "no figures"
    return (f"{fig['requests']} req, {fig['errors']} err ({_pct(fig['error_rate'])}), "
            f"p99 {_ms(fig['p99_s'])}")


def describe_decision(d: dict[str, Any]) -> str:
    line = f"  [{d['at'][11:19]}] wave {d['wave']}: {d['action']}: {d['why']}"
    if "new" in d:
        line += f"\n      new {_figures(d['new'])}; previous {_figures(d.get('previous'))}"
    return line


def render(dep: dict[str, Any]) -> list[str]:
    r = dep.get("rollout")
    head = f"deployment {dep['id']}: {dep['version']} (was {dep['previous_version'] or '-'})"
    if r is None:
        return [f"{head}: {dep['state']} (not a gated rollout)"]
    lines = [f"{head}: {r['state']}, wave {r['wave'] + 1}/{r['waves']}"]
    if r.get("percent") is not None:
        # A split rollout's waves are shares of the traffic on every node.
        lines[0] += f" (split {r['percent']}%)"
    if r["reason"]:
        lines.append(f"  reason: {r['reason']}")
    if r["rollback_id"]:
        lines.append(f"  rolled back by deployment {r['rollback_id']}")
    for n in r["nodes"]:
        lines.append(f"  node {n['node_id']} (wave {n['wave'] + 1}): {n['state']}; "
                     f"new {_figures(n['new'])}")
    return lines


def _watch(api: CPClient, deployment_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    seen_decisions = 0
    last_head: list[str] = []
    while True:
        dep: dict[str, Any] = api.call("GET", f"/deployments/{deployment_id}")
        lines = render(dep)
        if lines != last_head:
            click.echo("\n".join(lines))
            last_head = lines
        decisions = (dep.get("rollout") or {}).get("decisions", [])
        for d in decisions[seen_decisions:]:
            click.echo(describe_decision(d))
        seen_decisions = len(decisions)
        state = (dep.get("rollout") or {}).get("state", "done")
        if state in FINAL or time.monotonic() >= deadline:
            return dep
        time.sleep(POLL_S)


@click.group()
def rollout() -> None:
    """Follow and steer gated rollouts (deploys with --gate)."""


@rollout.command()
@click.argument("deployment_id")
@cp_options
@click.option("--watch", is_flag=True, help="follow it until it is done, rolled back or aborted")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0), default=3600.0,
              show_default=True, help="seconds --watch follows it")
def status(deployment_id: str, cp_url: str | None, token: str | None, watch: bool,
           timeout_s: float) -> None:
    """Show a rollout: state, wave, nodes and every decision with its figures. With
    --watch, exit 1 when it ends rolled back or aborted."""
    url, tok = resolve(cp_url, token)
    with CPClient(url, tok) as api:
        if not watch:
            dep = api.call("GET", f"/deployments/{deployment_id}")
            click.echo("\n".join(render(dep)))
            for d in (dep.get("rollout") or {}).get("decisions", []):
                click.echo(describe_decision(d))
            return
        dep = _watch(api, deployment_id, timeout_s)
    state = (dep.get("rollout") or {}).get("state")
    if state in ("rolled_back", "aborted"):
        raise RolloutFailed(f"rollout {deployment_id} {state}: {dep['rollout']['reason']}")


def _steer(action: str) -> click.Command:
    @click.command(name=action)
    @click.argument("deployment_id")
    @cp_options
    def command(deployment_id: str, cp_url: str | None, token: str | None) -> None:
        url, tok = resolve(cp_url, token)
        with CPClient(url, tok) as api:
            dep = api.call("POST", f"/deployments/{deployment_id}/{action}")
        click.echo("\n".join(render(dep)))

    command.help = {"promote": "Send a rollout's next wave now, whatever its gates say.",
                    "abort": "Stop a rollout and return its nodes to the previous version."}[
        action]
    return command


rollout.add_command(_steer("promote"))
rollout.add_command(_steer("abort"))
