"""Secrets a command takes (node and API tokens, the S3 secret key): never as an
argument, where every user of the machine reads them (`ps`, /proc/PID/cmdline), but
from the environment or from a file only the user can read.

An option that once took the secret itself stays, hidden, to refuse it with a usage
error (exit 2) naming the alternatives, rather than to be silently ignored.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from edgefn.atomicfile import read_secret

_ON_ARGV = "a secret on the command line is readable by every user of the machine (ps, " \
    "/proc/PID/cmdline); "


def refuse_on_command_line(
    option: str, alternatives: str
) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback refusing `option` when its value came from the command line;
    the same parameter may still be filled from its environment variable."""

    def check(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        source = ctx.get_parameter_source(param.name) if param.name else None
        if value is not None and source is ParameterSource.COMMANDLINE:
            raise click.BadParameter(_ON_ARGV + alternatives, ctx=ctx, param_hint=option)
        return value

    return check


def read_secret_file(path: Path, option: str) -> str:
    """The secret in `path`; a file that others may read is used, with a warning."""
    try:
        secret = read_secret(path)
        mode = path.stat().st_mode
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint=option) from exc
    if not secret:
        raise click.BadParameter(f"{path} is empty", param_hint=option)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(f"warning: {path} is readable by other users (mode "
                   f"{stat.S_IMODE(mode):04o}); chmod 600 it", err=True)
    return secret
