"""`edgefn doctor`: what this machine can run (engines, their compilers, versions)
and build (the source toolchains), with how to install what is missing."""

from __future__ import annotations

import click

from edgefn.builder import probes
from edgefn.builder.jail import namespaces_work
from edgefn.sandbox import create_engine
from edgefn.sandbox.errors import EngineUnavailable
from edgefn.sandbox.factory import ENGINES


@click.command()
def doctor() -> None:
    """Report which WebAssembly engines and build toolchains work here and how.

    Exits 1 when the default engine (wasmtime) is unavailable; a missing build
    toolchain is reported with its install command but is not a failure."""
    failed = False
    click.echo("engines:")
    for name in ENGINES:
        try:
            engine = create_engine(name)
        except EngineUnavailable as exc:
            click.echo(f"  {name}: unavailable: {exc}")
            failed = failed or name == "wasmtime"
            continue
        facts = engine.describe()
        engine.close()
        click.echo(f"  {name}: ok")
        for key, value in facts.items():
            click.echo(f"    {key}: {value}")
    click.echo("build toolchains:")
    for probe in probes():
        if probe.ok:
            click.echo(f"  {probe.name}: ok ({probe.detail})")
        else:
            click.echo(f"  {probe.name}: missing: {probe.detail}")
            click.echo(f"    install: {probe.install}")
    isolation = "user, network and mount namespaces" if namespaces_work() else "rlimits only"
    click.echo(f"build isolation: {isolation}")
    if failed:
        raise SystemExit(1)
