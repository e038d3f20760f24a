"""Entry point of the `edgefn` command; every command group is mounted here."""

from __future__ import annotations

import click

from edgefn import __version__
from edgefn.cli.audit import audit
from edgefn.cli.build import build, build_worker
from edgefn.cli.cp import cp
from edgefn.cli.deploy import deploy
from edgefn.cli.dev import dev
from edgefn.cli.doctor import doctor
from edgefn.cli.edge import edge
from edgefn.cli.functions import functions, rollback, versions
from edgefn.cli.golden import test_cmd
from edgefn.cli.init import init
from edgefn.cli.login import login
from edgefn.cli.logs import logs
from edgefn.cli.rollout import rollout


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgefn")
def cli() -> None:
    """edgefn: WebAssembly HTTP functions on edge nodes."""


cli.add_command(dev)
cli.add_command(edge)
cli.add_command(doctor)
cli.add_command(cp)
cli.add_command(audit)
cli.add_command(deploy)
cli.add_command(login)
cli.add_command(build)
cli.add_command(build_worker)
cli.add_command(init)
cli.add_command(test_cmd)
cli.add_command(rollout)
cli.add_command(functions)
cli.add_command(versions)
cli.add_command(rollback)
cli.add_command(logs)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
