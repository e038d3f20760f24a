"""`edgefn audit ...`: check the audit log's hash chain."""

from __future__ import annotations

from pathlib import Path

import click

from edgefn.cli.cp import settings_from


@click.group()
def audit() -> None:
    """Inspect the control plane's audit log."""


@audit.command()
@click.option("--data-dir", type=click.Path(path_type=Path), help="default .edgefn")
@click.option("--database-url", help="env EDGEFN_DATABASE_URL")
def verify(data_dir: Path | None, database_url: str | None) -> None:
    """Walk the hash chain; exit 1 at the first broken link."""
    from edgefn.controlplane import db
    from edgefn.controlplane.audit.service import verify_chain

    settings = settings_from(data_dir=data_dir, database_url=database_url)
    engine = db.make_engine(settings.resolved_database_url())
    try:
        with db.session_scope(db.make_sessionmaker(engine)) as session:
            report = verify_chain(session)
    finally:
        engine.dispose()
    if report.ok:
        click.echo(f"audit chain ok: {report.rows} rows")
        return
    click.echo(f"audit chain broken at row {report.broken_at}: {report.reason}", err=True)
    raise SystemExit(1)
