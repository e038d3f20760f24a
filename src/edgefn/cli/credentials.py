"""Which control plane to talk to and with what token: flags, then `EDGEFN_CP_URL` /
`EDGEFN_TOKEN`, then what `edgefn login` saved in the user's config directory."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgefn.atomicfile import write_atomic

DEFAULT_CP_URL = "http://127.0.0.1:8080"


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgefn" / "credentials.json"


def _load() -> dict[str, Any]:
    path = credentials_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def save_login(cp_url: str, token: str) -> Path:
    """Keep `token` for `cp_url` and make that CP the default; the file is 0600."""
    data = _load()
    tokens = data.get("tokens")
    tokens = dict(tokens) if isinstance(tokens, dict) else {}
    data = {"default_cp": cp_url, "tokens": {**tokens, cp_url: token}}
    path = credentials_path()
    # Atomic and 0600 even when the file was there with a looser mode.
    write_atomic(path, [json.dumps(data, indent=1).encode()])
    return path


def resolve(cp_url: str | None, token: str | None) -> tuple[str, str]:
    """The CP URL and token to use. A saved token is only sent to the CP it was
    saved for."""
    saved = _load()
    url = (cp_url or saved.get("default_cp") or DEFAULT_CP_URL).rstrip("/")
    token = token or (saved.get("tokens") or {}).get(url)
    if not token:
        raise click.UsageError(
            f"no token for {url}: pass --token, set EDGEFN_TOKEN, or run `edgefn login`"
        )
    return url, token


def cp_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--cp and --token, shared by the commands that call the control plane."""
    f = click.option(
        "--token", envvar="EDGEFN_TOKEN", help="API token [env EDGEFN_TOKEN, or the saved login]"
    )(f)
    return click.option(
        "--cp",
        "cp_url",
        envvar="EDGEFN_CP_URL",
        help=f"control plane URL [env EDGEFN_CP_URL, the saved login, {DEFAULT_CP_URL}]",
    )(f)
