"""`edgefn init`: a new function project."""
import click
@click.command()
def init() -> None:
    pass
