"""`edgefn cp ...`: run the control plane and manage its database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from edgefn.cli.caps import cap_options, pop_caps
from edgefn.cli.secret_options import read_secret_file, refuse_on_command_line
from edgefn.controlplane.settings import CPSettings

SHUTDOWN_GRACE_S = 10


def settings_from(**flags: Any) -> CPSettings:
    """Flags given on the command line win over EDGEFN_* variables."""
    caps = pop_caps(flags)
    key_file = flags.pop("s3_secret_access_key_file", None)
    if key_file is not None:
        flags["s3_secret_access_key"] = read_secret_file(key_file, "--s3-secret-access-key-file")
    given = {k: v for k, v in flags.items() if v is not None} | caps
    try:
        return CPSettings(**given)
    except ValidationError as exc:
        raise click.UsageError(f"invalid settings: {exc}") from exc


_db_options = [
    click.option("--data-dir", type=click.Path(path_type=Path), help="default .edgefn"),
    click.option(
        "--database-url",
        help="SQLAlchemy URL (default: SQLite in the data dir); env EDGEFN_DATABASE_URL",
    ),
]


def db_options(f: Any) -> Any:
    for option in reversed(_db_options):
        f = option(f)
    return f


@click.group()
def cp() -> None:
    """Run the control plane."""


@cp.command()
@click.option("--host", help="bind address (default 127.0.0.1)")
@click.option("--port", type=int, help="default 8080")
@db_options
@click.option("--public-url", help="URL nodes and clients reach this CP at")
@click.option("--edge-url",
              help="URL users reach the edge nodes at (https://edge.example.com): a "
              "function's routes on it are the URLs `edgefn deploy` prints [env "
              "EDGEFN_EDGE_URL]")
@click.option("--otlp-endpoint",
              help="Send the control plane's traces to this OTLP/HTTP collector "
                   "(http://host:4318).")
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    help="EdgeControl gRPC port (default 50051; 0 picks one)",
)
@click.option("--artifact-store", type=click.Choice(["local", "s3"]), help="default local")
@click.option("--artifact-dir", type=click.Path(path_type=Path), help="local store directory")
@click.option("--s3-bucket")
@click.option("--s3-endpoint-url", help="e.g. http://127.0.0.1:9000 for MinIO")
@click.option("--s3-region")
@click.option("--s3-access-key-id")
@click.option(
    "--s3-secret-access-key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="File holding the S3 secret access key (mode 0600) [or the key itself in "
    "EDGEFN_S3_SECRET_ACCESS_KEY]",
)
@click.option(
    "--s3-secret-access-key", hidden=True, expose_value=False,
    callback=refuse_on_command_line(
        "--s3-secret-access-key",
        "put it in a file only this user can read and pass --s3-secret-access-key-file "
        "FILE, or set EDGEFN_S3_SECRET_ACCESS_KEY",
    ),
)
@click.option("--s3-create-bucket/--no-s3-create-bucket", default=None)
@click.option("--max-artifact-bytes", type=int)
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Serve the API and gRPC ports over TLS with this certificate chain (PEM)")
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The key of --tls-cert (PEM, mode 0600)")
@click.option("--node-mtls/--no-node-mtls", default=None,
              help="Require nodes to present a client certificate of the node CA on the "
              "gRPC port and the node HTTPS port [off; env EDGEFN_NODE_MTLS]")
@click.option("--node-port", type=click.IntRange(0, 65535),
              help="Node HTTPS port under mutual TLS: heartbeats, artifact URLs, "
              "secrets, certificate renewal (default 8443; 0 picks one)")
@click.option("--node-ca-cert", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The operator's CA certificate for node certificates (PEM) [one made in "
              "DATA_DIR/pki]")
@click.option("--node-ca-key", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The key of --node-ca-cert (PEM, mode 0600)")
@click.option("--node-cert-ttl", "node_cert_ttl_s", type=click.IntRange(min=60),
              help="Lifetime of a node certificate in seconds (default 30 days)")
@click.option("--node-tls-name", "node_tls_names", multiple=True,
              help="A host name or address nodes reach this CP at, for the server "
              "certificate the CP issues itself; repeatable")
@cap_options
def serve(**flags: Any) -> None:
    """Serve the control-plane API and the EdgeControl gRPC service for edge nodes
    (migrations are applied first)."""
    import logging

    import uvicorn

    from edgefn.controlplane import db
    from edgefn.controlplane.app import create_app

    if not flags.get("node_tls_names"):
        flags.pop("node_tls_names", None)
    settings = settings_from(**flags)
    app = create_app(settings)
    db.migrate(app.state.cp.engine)
    if settings.bootstrap_token is None:
        click.echo("warning: EDGEFN_BOOTSTRAP_TOKEN is not set; no admin can log in", err=True)
    # Our loggers (the bound gRPC port among them) beside uvicorn's own.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s %(message)s")
    tls: dict[str, Any] = {}
    if settings.tls_cert is not None and settings.tls_key is not None:
        tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
    # Followers of a function's logs stream until they go away: at shutdown, requests
    # still open after this long are cut, so a follower cannot hold the CP up.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S, **tls)


@cp.command()
@db_options
@click.option("--revision", default="head", show_default=True)
def migrate(revision: str, **flags: Any) -> None:
    """Apply the database migrations (up to --revision)."""
    from edgefn.controlplane import db

    settings = settings_from(**flags)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = db.make_engine(settings.resolved_database_url())
    db.migrate(engine, revision)
    click.echo(f"database at revision {db.current_revision(engine)}")
