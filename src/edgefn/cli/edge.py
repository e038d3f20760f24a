"""`edgefn edge ...`: run an edge node."""

from __future__ import annotations

import click


@click.group()
def edge() -> None:
    """Run an edge node."""
