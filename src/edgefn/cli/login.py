"""`edgefn login`: check a token against a control plane and save it for later commands."""

from __future__ import annotations

import click

from edgefn.cli._api import CPClient
from edgefn.cli.credentials import (
    DEFAULT_CP_URL,
    ca_file_option,
    credentials_path,
    save_login,
    token_options,
)


@click.command()
@click.option("--cp", "cp_url", envvar="EDGEFN_CP_URL", default=DEFAULT_CP_URL, show_default=True)
@token_options
@ca_file_option
def login(cp_url: str, token: str | None) -> None:
    """Save a token (an API key, JWT or the admin token) for a control plane, checked
    first, in the user's config. It is asked for unless a file or EDGEFN_TOKEN has it."""
    cp_url = cp_url.rstrip("/")
    if token is None:
        token = click.prompt("Token", hide_input=True)
    with CPClient(cp_url, token) as api:
        api.call("GET", "/functions", params={"limit": 1})
    save_login(cp_url, token)
    click.echo(f"logged in to {cp_url}; saved to {credentials_path()}")
