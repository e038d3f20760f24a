"""Which control plane to talk to and with what token: `--cp` / `--token-file`, then
`EDGEFN_CP_URL` / `EDGEFN_TOKEN`, then what `edgefn login` saved in the user's config
directory. A token given as an argument is refused (`secret_options`). Which CA an
https:// control plane is trusted with: `--ca-file` / `EDGEFN_CA_FILE`, else the
system's."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgefn.atomicfile import write_atomic
from edgefn.cli.secret_options import read_secret_file, refuse_on_command_line

DEFAULT_CP_URL = "http://127.0.0.1:8080"
CA_FILE_ENV = "EDGEFN_CA_FILE"
_CA_META = "edgefn.ca_file"


def _remember_ca_file(ctx: click.Context, _param: click.Parameter, path: Path | None) -> None:
    if path is not None:
        ctx.meta[_CA_META] = path


def ca_file_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--ca-file FILE` (env EDGEFN_CA_FILE): kept for `trusted_ca`, so that every
    command calling the CP trusts it without passing it along."""
    return click.option(
        "--ca-file", envvar=CA_FILE_ENV, expose_value=False, callback=_remember_ca_file,
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        help="CA certificate (PEM) to trust an https:// control plane with, instead of "
        f"the system's [env {CA_FILE_ENV}]",
    )(f)


def trusted_ca() -> Path | None:
    """The CA file of this command (`--ca-file`), else EDGEFN_CA_FILE, else None."""
    ctx = click.get_current_context(silent=True)
    given = ctx.meta.get(_CA_META) if ctx is not None else None
    if given is not None:
        return Path(given)
    env = os.environ.get(CA_FILE_ENV)
    return Path(env) if env else None


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
            f"no token for {url}: pass --token-file FILE, set EDGEFN_TOKEN, or run `edgefn login`"
        )
    return url, token


TOKEN_ALTERNATIVES = (
    "put it in a file only this user can read and pass --token-file FILE, set "
    "EDGEFN_TOKEN, or run `edgefn login` once"
)


def token_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--token-file FILE` (env EDGEFN_TOKEN_FILE) and the token in EDGEFN_TOKEN, handed
    to `f` as `token` (the file first); `--token VALUE` is refused."""

    @functools.wraps(f)
    def merged(*args: Any, token_file: str | None, token: str | None, **kwargs: Any) -> Any:
        return f(*args, token=token_file or token, **kwargs)

    merged = click.option(
        "--token", envvar="EDGEFN_TOKEN", hidden=True,
        callback=refuse_on_command_line("--token", TOKEN_ALTERNATIVES),
    )(merged)
    return click.option(
        "--token-file",
        envvar="EDGEFN_TOKEN_FILE",
        type=click.Path(path_type=Path, dir_okay=False),
        callback=lambda _ctx, _param, path: read_secret_file(path, "--token-file")
        if path is not None else None,
        help="File holding the API token (mode 0600) [env EDGEFN_TOKEN_FILE; or the token "
        "itself in EDGEFN_TOKEN; else the saved login]",
    )(merged)


def cp_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--cp, the token options and --ca-file, shared by the commands that call the
    control plane."""
    f = ca_file_option(token_options(f))
    return click.option(
        "--cp",
        "cp_url",
        envvar="EDGEFN_CP_URL",
        help=f"control plane URL [env EDGEFN_CP_URL, the saved login, {DEFAULT_CP_URL}]",
    )(f)
