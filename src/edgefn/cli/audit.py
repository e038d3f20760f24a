"""`edgefn audit ...`: check the audit log's keyed chain against its signed checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import click

from edgefn.cli.cp import settings_from


@click.group()
def audit() -> None:
    """Inspect the control plane's audit log."""


@audit.command()
@click.option("--data-dir", type=click.Path(path_type=Path), help="default .edgefn")
@click.option("--database-url", help="env EDGEFN_DATABASE_URL")
@click.option(
    "--checkpoints",
    "checkpoint_file",
    type=click.Path(path_type=Path),
    help="signed checkpoint file (default DATA_DIR/audit-checkpoints.jsonl); "
    "env EDGEFN_AUDIT_CHECKPOINT_FILE",
)
@click.option(
    "--no-checkpoints",
    is_flag=True,
    help="check the chain alone (removal of the newest rows then goes unseen)",
)
def verify(
    data_dir: Path | None,
    database_url: str | None,
    checkpoint_file: Path | None,
    no_checkpoints: bool,
) -> None:
    """Walk the chain under the audit key (EDGEFN_AUDIT_KEY or DATA_DIR/audit.key) and
    compare it with every signed checkpoint; exit 1 at the first thing that does not hold."""
    from edgefn.controlplane import db
    from edgefn.controlplane.audit import checkpoints
    from edgefn.controlplane.audit.service import verify_chain

    settings = settings_from(
        data_dir=data_dir, database_url=database_url, audit_checkpoint_file=checkpoint_file
    )
    try:
        key = settings.resolved_audit_key(create=False).encode()
    except FileNotFoundError as exc:
        _fail(f"no audit key: set EDGEFN_AUDIT_KEY or give the data dir holding it ({exc})")
    points: list[checkpoints.Checkpoint] | None = None
    if not no_checkpoints:
        path = settings.resolved_audit_checkpoint_file()
        try:
            points = checkpoints.read(path, key)
        except FileNotFoundError:
            _fail(f"no checkpoint file at {path} (--no-checkpoints checks the chain alone)")
        except checkpoints.CheckpointError as exc:
            _fail(f"audit checkpoints broken: {exc}")
    engine = db.make_engine(settings.resolved_database_url())
    try:
        with db.session_scope(db.make_sessionmaker(engine)) as session:
            report = verify_chain(session, key, points)
    finally:
        engine.dispose()
    if not report.ok:
        _fail(f"audit chain broken at row {report.broken_at}: {report.reason}")
    anchored = "" if points is None else f", {report.checkpoints} signed checkpoints"
    click.echo(f"audit chain ok: {report.rows} rows{anchored}")


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(1)
