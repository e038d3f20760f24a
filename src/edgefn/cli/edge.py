"""`edgefn edge ...`: run an edge node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from edgefn.atomicfile import private_dir
from edgefn.cli.caps import cap_options, pop_caps
from edgefn.cli.secret_options import read_secret_file, refuse_on_command_line
from edgefn.edge.settings import EdgeSettings

_refuse_token_argument = refuse_on_command_line(
    "--node-token",
    "put it in a file only this user can read and pass --node-token-file FILE, or set "
    "EDGEFN_NODE_TOKEN",
)


def read_node_token(path: Path) -> str:
    return read_secret_file(path, "--node-token-file")


@click.group()
def edge() -> None:
    """Run an edge node."""


@edge.command("serve")
@click.option("--functions", "functions_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Serve the functions in this directory (one folder each, with function.json).")
@click.option("--modules-toml", "modules_toml",
              type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Serve a WAGI module map (modules.toml) as it is (docs/wagi.md).")
@click.option("--host", help="Address to listen on [127.0.0.1].")
@click.option("--port", "--edge-port", "edge_port", type=int, help="HTTP port [8000].")
@click.option("--metrics-port", type=int, help="Port of /metrics [9090].")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Node state, artifact cache and KV [.edgefn/edge].")
@click.option("--engine", type=click.Choice(["wasmtime", "wasmedge"]),
              help="WebAssembly engine [wasmtime].")
@click.option("--workers", type=int, help="Worker processes [number of CPUs].")
@click.option("--threads", type=int,
              help="Request threads per worker at most, started as needed [128].")
@click.option("--inline/--no-inline", default=None,
              help="Run functions that cannot block on the worker's event loop once their "
                   "calls have shown they are short [--inline].")
@click.option("--suspend-waiting/--no-suspend-waiting", default=None,
              help="Run functions that wait in a host call (http_fetch, KV, secrets) as "
                   "suspended guests on the worker's event loop instead of one request "
                   "thread each; wasmtime only [--suspend-waiting].")
@click.option("--inline-budget-ms", type=float,
              help="CPU a call on the event loop may use: half of its function's last 16 "
                   "calls over it, or one over 4 times it, move the function to the "
                   "request threads, where "
                   "32 calls in a row under 4 times it earn the loop back [2].")
@click.option("--max-inflight-per-function", type=int,
              help="Requests one function may run at once per worker; more get 503 "
                   "[--threads].")
@click.option("--penalty-threads", type=int,
              help="Threads per worker for functions that often time out or burn CPU, "
                   "paced to a tenth of a core; 0 runs them like any other [1].")
@click.option("--quota-max-concurrency", type=int,
              help="A project's concurrent executions on this node, unless the control "
                   "plane sets its quota [100].")
@click.option("--quota-invocations-per-minute", type=int,
              help="A project's invocations a minute, unless the control plane sets them "
                   "[10000].")
@click.option("--quota-cpu-seconds-per-day", type=float,
              help="A project's CPU seconds a day, unless the control plane sets them [3600].")
@click.option("--quota-redis-url",
              help="Redis counting quotas across nodes [the KV's Redis, if any; else none].")
@click.option("--node-id", help="This node's id [hostname].")
@click.option("--pop-id", help="This node's POP [local].")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="A node label for pop_selector matching; repeatable.")
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Write JSON logs here instead of stderr.")
@click.option("--header-timeout", "header_timeout_s", type=float,
              help="Seconds a client has to send a request's headers; then 408 [10].")
@click.option("--body-timeout", "body_timeout_s", type=float,
              help="Seconds a client has to send a request's body; then 408 [30].")
@click.option("--keepalive-timeout", "keepalive_timeout_s", type=float,
              help="Seconds an idle kept-alive connection stays open [5].")
@click.option("--max-connections-per-client", type=int,
              help="Open connections one client address may hold; 0: no limit [64].")
@click.option("--max-pending-requests", type=int,
              help="Complete requests a worker holds for its threads; more get 503 [1024].")
@click.option("--log-max-bytes", type=int,
              help="Rotate the --log-file past this size; 0: never [100 MiB].")
@click.option("--log-backups", type=int, help="Rotated log files kept [5].")
@click.option("--log-sample-success", type=float,
              help="Share (0-1) of successful invocations logged; errors always are [1].")
@click.option("--otlp-endpoint",
              help="Send invocation spans to this OTLP/HTTP collector (http://host:4318).")
@click.option("--cp-url", help="Control plane API URL; without it the node runs alone.")
@click.option("--grpc-url", help="Control plane gRPC address (host:port).")
@click.option("--transport", type=click.Choice(["grpc", "websocket"]),
              help="How the control stream reaches the control plane: gRPC on --grpc-url, "
                   "or a WebSocket on --cp-url where HTTP/2 to it is blocked [grpc].")
@click.option("--node-token-file", type=click.Path(path_type=Path, dir_okay=False),
              envvar="EDGEFN_NODE_TOKEN_FILE",
              help="File holding this node's token from the control plane (mode 0600) "
                   "[env EDGEFN_NODE_TOKEN_FILE; or the token itself in EDGEFN_NODE_TOKEN].")
@click.option("--node-cert", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="This node's client certificate (PEM) for mutual TLS with the control "
                   "plane; renewed in place before it expires [env EDGEFN_NODE_CERT].")
@click.option("--node-key", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="The key of --node-cert (PEM, mode 0600; replaced on renewal) "
                   "[env EDGEFN_NODE_KEY].")
@click.option("--cp-ca-file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="CA certificate (PEM) the node trusts the control plane's gRPC and HTTPS "
                   "ports with [the system's; with mutual TLS, the CA the node was "
                   "registered with].")
@click.option("--node-token", hidden=True, expose_value=False, callback=_refuse_token_argument,
              help="Removed: use --node-token-file or EDGEFN_NODE_TOKEN.")
@click.option("--compile-key-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Key sealing the compiled code cache; created if missing "
                   "[DATA_DIR/compile.key].")
@click.option("--compile-cache-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where compiled code is kept, sealed with --compile-key-file; nodes of "
                   "one host given the same two compile each module once "
                   "[DATA_DIR/compiled].")
@click.option("--allow-private-egress", "private_egress", multiple=True, metavar="CIDR",
              help="Let functions that set http_fetch.allow_private reach this non-public "
                   "network (loopback, private, link-local, the node's own addresses); "
                   "repeatable. The node's own ports stay unreachable. [none]")
@click.option("--secrets-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Without a control plane: JSON {function_id: {name: value}} (mode 600) "
                   "that secret_get reads.")
@cap_options
def serve_cmd(
    labels: tuple[str, ...],
    node_token_file: Path | None,
    private_egress: tuple[str, ...],
    **flags: Any,
) -> None:
    """Serve HTTP requests with WebAssembly functions."""
    caps = pop_caps(flags)
    overrides = {k: v for k, v in flags.items() if v is not None} | caps
    if node_token_file is not None:
        overrides["node_token"] = read_node_token(node_token_file)
    if private_egress:
        overrides["allow_private_egress"] = list(private_egress)
    if labels:
        pairs = [label.split("=", 1) for label in labels]
        if any(len(p) != 2 for p in pairs):
            raise click.BadParameter("labels are KEY=VALUE", param_hint="--label")
        overrides["labels"] = dict(pairs)
    try:
        settings = EdgeSettings(**overrides)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    private_dir(settings.data_dir)
    from edgefn.edge.node.server import serve
    from edgefn.edge.wagi_map import ModuleMapError

    try:
        serve(settings)
    except ModuleMapError as exc:
        raise click.ClickException(str(exc)) from exc


@edge.command("csr")
@click.option("--node-id", required=True, help="The id the node will be registered with.")
@click.option("--key-file", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Where to write the node's new private key (mode 0600).")
@click.option("--force", is_flag=True, help="Replace an existing key file.")
def csr_cmd(node_id: str, key_file: Path, force: bool) -> None:
    """Make this node's private key and print a certificate signing request for it, to
    register the node with (`POST /api/v1/nodes` with `csr`); the key stays here."""
    from edgefn.edge.node.credentials import write_new_key

    if key_file.exists() and not force:
        raise click.UsageError(f"{key_file} exists; pass --force to replace it")
    click.echo(write_new_key(key_file, node_id), nl=False)
