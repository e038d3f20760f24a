"""`edgefn doctor`: what this machine can run (engines, their compilers, versions)."""

from __future__ import annotations

import click

from edgefn.sandbox import create_engine
from edgefn.sandbox.errors import EngineUnavailable
from edgefn.sandbox.factory import ENGINES


@click.command()
def doctor() -> None:
    """Report which WebAssembly engines work here and how."""
    failed = False
    for name in ENGINES:
        try:
            engine = create_engine(name)
        except EngineUnavailable as exc:
            click.echo(f"{name}: unavailable: {exc}")
            failed = failed or name == "wasmtime"
            continue
        facts = engine.describe()
        engine.close()
        click.echo(f"{name}: ok")
        for key, value in facts.items():
            click.echo(f"  {key}: {value}")
    if failed:
        raise SystemExit(1)
