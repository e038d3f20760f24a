"""`edgefn edge ...`: run an edge node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from edgefn.edge.settings import EdgeSettings


@click.group()
def edge() -> None:
    """Run an edge node."""


@edge.command("serve")
@click.option("--functions", "functions_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Serve the functions in this directory (one folder each, with function.json).")
@click.option("--host", help="Address to listen on [127.0.0.1].")
@click.option("--port", "--edge-port", "edge_port", type=int, help="HTTP port [8000].")
@click.option("--metrics-port", type=int, help="Port of /metrics [9090].")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              help="Node state, artifact cache and KV [.edgefn/edge].")
@click.option("--engine", type=click.Choice(["wasmtime", "wasmedge"]),
              help="WebAssembly engine [wasmtime].")
@click.option("--workers", type=int, help="Worker processes [number of CPUs].")
@click.option("--threads", type=int, help="Request threads per worker [8].")
@click.option("--max-inflight-per-function", type=int,
              help="Requests one function may run at once per worker; more get 503 "
                   "[no limit].")
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
@click.option("--otlp-endpoint",
              help="Send invocation spans to this OTLP/HTTP collector (http://host:4318).")
@click.option("--cp-url", help="Control plane API URL; without it the node runs alone.")
@click.option("--grpc-url", help="Control plane gRPC address (host:port).")
@click.option("--node-token", help="This node's token from the control plane.")
def serve_cmd(labels: tuple[str, ...], **flags: Any) -> None:
    """Serve HTTP requests with WebAssembly functions."""
    overrides = {k: v for k, v in flags.items() if v is not None}
    if labels:
        pairs = [label.split("=", 1) for label in labels]
        if any(len(p) != 2 for p in pairs):
            raise click.BadParameter("labels are KEY=VALUE", param_hint="--label")
        overrides["labels"] = dict(pairs)
    try:
        settings = EdgeSettings(**overrides)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    from edgefn.edge.server import serve

    serve(settings)
