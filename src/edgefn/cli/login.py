"""`edgefn login`: check a token against a control plane and save it for later commands."""

from __future__ import annotations

import click

from edgefn.cli._api import CPClient
from edgefn.cli.credentials import DEFAULT_CP_URL, credentials_path, save_login


@click.command()
@click.option("--cp", "cp_url", envvar="EDGEFN_CP_URL", default=DEFAULT_CP_URL, show_default=True)
@click.option("--token", prompt=True, hide_input=True, help="an API key, JWT or the admin token")
def login(cp_url: str, token: str) -> None:
    """Save a token for a control plane (checked first) in the user's config."""
    cp_url = cp_url.rstrip("/")
    with CPClient(cp_url, token) as api:
        api.call("GET", "/functions", params={"limit": 1})
    save_login(cp_url, token)
    click.echo(f"logged in to {cp_url}; saved to {credentials_path()}")
