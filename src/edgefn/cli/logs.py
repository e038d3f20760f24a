"""`edgefn logs NAME [--follow]`: a function's JSON log lines from every node, as the
control plane gathers them (`GET /functions/{id}/logs`, docs/api.md, Function logs).

Lines print as a short summary each (`--json`: the JSON lines as the nodes wrote
them). Ctrl-C ends `--follow` (exit 130); a lost connection exits 3."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click

from edgefn.cli._api import CPClient
from edgefn.cli.credentials import cp_options, resolve
from edgefn.cli.functions import find_function, project_option

# The CP writes a blank line every 15 s of silence; four missed ones mean it is gone.
READ_TIMEOUT_S = 60.0
INTERRUPTED = 130


def _time(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def summary(record: dict[str, Any]) -> str:
    """One line a person reads: an invocation's outcome, or what the guest logged."""
    kind = record.get("type")
    node = record.get("node_id", "-")
    if kind == "invocation":
        line = (f"{_time(record.get('start'))} {node} {record.get('status')} "
                f"{record.get('method')} {record.get('path')} "
                f"{record.get('duration_ms')}ms {record.get('version')} "
                f"{record.get('request_id')}")
        if record.get("error_message"):
            line += f" error: {record['error_message']}"
        return line
    if kind == "function_log":
        return (f"{node} {record.get('level')} [{record.get('source')}] "
                f"{record.get('request_id')}: {record.get('message')}")
    if kind == "dropped":
        return f"... {record.get('count')} line(s) left out: this reader fell behind"
    return json.dumps(record)


@click.command()
@click.argument("name")
@cp_options
@project_option
@click.option("-f", "--follow", is_flag=True, help="keep printing new lines as they arrive")
@click.option("-n", "--tail", type=click.IntRange(0, 1000), default=100, show_default=True,
              help="recent lines printed first")
@click.option("--json", "as_json", is_flag=True, help="the JSON lines as the nodes wrote them")
def logs(name: str, cp_url: str | None, token: str | None, project: str | None,
         follow: bool, tail: int, as_json: bool) -> None:
    """The recent log lines of function NAME from every node (invocations and what
    the function logged); with --follow, then each new line within moments of it."""
    url, tok = resolve(cp_url, token)
    with CPClient(url, tok) as api:
        fn = find_function(api, name, project)
        try:
            with api.stream(f"/functions/{fn['id']}/logs", read_timeout_s=READ_TIMEOUT_S,
                            follow=str(follow).lower(), tail=tail) as lines:
                for line in lines:
                    if not line.strip():
                        continue  # the CP's keep-alive
                    if as_json:
                        click.echo(line)
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError:
                        click.echo(line)
                        continue
                    click.echo(summary(record) if isinstance(record, dict) else line)
        except KeyboardInterrupt:
            raise SystemExit(INTERRUPTED) from None
