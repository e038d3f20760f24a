"""`edgefn dev`: a control plane and one edge node on the embedded defaults, with the
bundled examples deployed, until Ctrl-C.

Its tokens live in 0600 files under the data directory and reach the processes
through their environment (the control plane) or a file (the node), never their
command line. The node and the control plane talk over mutual TLS (unless
`--no-mtls`): the node's key and certificate live beside its token.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import time
from pathlib import Path
from types import FrameType

import click

from edgefn.atomicfile import private_dir, read_secret, write_secret
from edgefn.cli.deploy import deploy
from edgefn.cluster import Cluster, ClusterError, Edge

NODE_ID = "dev-edge"
POP_ID = "local"


def _bootstrap_token(data_dir: Path) -> str:
    """EDGEFN_BOOTSTRAP_TOKEN when set; else one made for this data dir and kept there."""
    given = os.environ.get("EDGEFN_BOOTSTRAP_TOKEN")
    if given:
        return given
    path = data_dir / "dev-token"
    if path.exists():
        return read_secret(path)
    token = "dev-" + secrets.token_urlsafe(24)
    write_secret(path, token)
    return token


def _node_token(cluster: Cluster, edge: Edge) -> str:
    """The dev node's token: reused while the control plane still knows the node (and,
    under mTLS, its certificate is still valid)."""
    token_file = edge.token_file
    known = {n["id"] for n in cluster.call("GET", "/nodes")}
    if NODE_ID in known and token_file.exists() and _certificate_valid(cluster, edge):
        return read_secret(token_file)
    if NODE_ID in known:  # registered by a run whose token is lost: register it anew
        cluster.call("DELETE", f"/nodes/{NODE_ID}")
    token = cluster.register_node(NODE_ID, POP_ID, {"region": "local"})
    write_secret(token_file, token)
    return token


def _certificate_valid(cluster: Cluster, edge: Edge) -> bool:
    if not cluster.mtls:
        return True
    try:
        _, not_after = edge.tls.lifetime()
    except (OSError, ValueError):
        return False
    return not_after > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)


def _examples(explicit: Path | None) -> list[Path]:
    root = explicit if explicit is not None else Path("examples")
    if not root.is_dir():
        if explicit is not None:
            raise click.BadParameter(f"{root} is not a directory", param_hint="--examples")
        return []
    return sorted(p for p in root.iterdir() if (p / "function.json").is_file())


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command()
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False),
              default=Path(".edgefn"), show_default=True,
              help="Everything the control plane and the node keep.")
@click.option("--api-port", type=int, default=8080, show_default=True)
@click.option("--edge-port", type=int, default=8000, show_default=True)
@click.option("--metrics-port", type=int, default=9090, show_default=True)
@click.option("--grpc-port", type=int, default=50051, show_default=True)
@click.option("--node-port", type=int, default=8443, show_default=True,
              help="The control plane's node HTTPS port (heartbeats, certificate renewal).")
@click.option("--mtls/--no-mtls", default=True, show_default=True,
              help="Mutual TLS between the node and the control plane.")
@click.option("--examples", "examples_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Function folders to deploy [./examples when present].")
@click.pass_context
def dev(ctx: click.Context, data_dir: Path, api_port: int, edge_port: int, metrics_port: int,
        grpc_port: int, node_port: int, mtls: bool, examples_dir: Path | None) -> None:
    """Run a control plane and one edge node together, and deploy the examples."""
    data_dir = private_dir(data_dir.resolve())
    folders = _examples(examples_dir)
    token = _bootstrap_token(data_dir)
    cluster = Cluster(data_dir, token=token, api_port=api_port, grpc_port=grpc_port,
                      heartbeat_interval_s=5.0, project="default", mtls=mtls,
                      node_port=node_port)
    # The node is the edge: functions are served at its address, unless the caller
    # says they are reached elsewhere (a tunnel, a proxy).
    cluster.cp_env["EDGEFN_EDGE_URL"] = (os.environ.get("EDGEFN_EDGE_URL")
                                         or f"http://127.0.0.1:{edge_port}")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # Ctrl-C stops everything even when started from a shell that ignores SIGINT in
    # background jobs (Python keeps an inherited "ignore").
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        click.echo(f"control plane: starting on 127.0.0.1:{api_port} (logs: {data_dir}/cp.log)")
        cluster.start_cp()
        edge = Edge(NODE_ID, POP_ID, {"region": "local"}, "", data_dir / "edge",
                    port=edge_port, metrics_port=metrics_port)
        edge.token = _node_token(cluster, edge)
        cluster.edges[NODE_ID] = edge
        click.echo(f"edge node {NODE_ID}: starting on 127.0.0.1:{edge_port} "
                   f"(logs: {data_dir}/{NODE_ID}.log)")
        cluster.start_edge(edge)
        cp_url = f"http://127.0.0.1:{api_port}"
        for folder in folders:
            click.echo(f"\n$ edgefn deploy {folder}")
            ctx.invoke(deploy, path=folder, cp_url=cp_url, token=token, project=None,
                       strategy="pull", target_pop=(), wait=True, timeout_s=60.0)
        mtls_note = (f"   (mutual TLS; node HTTPS on {node_port}, "
                     f"CA {data_dir}/cp/pki/ca.pem)" if mtls else "")
        click.echo(f"""
edgefn dev is running.
  API        {cp_url}/api/v1   (docs: {cp_url}/docs)
  token      {token}
  console    {cp_url}/console/   (sign in with the token above)
  edge       http://127.0.0.1:{edge_port}
  metrics    http://127.0.0.1:{metrics_port}/metrics
  gRPC       127.0.0.1:{grpc_port}{mtls_note}
Try:  curl http://127.0.0.1:{edge_port}/c/hello
      EDGEFN_CP_URL={cp_url} EDGEFN_TOKEN={token} edgefn deploy examples/hello-c
Ctrl-C stops everything.""")
        while True:
            for name, proc in [("control plane", cluster.cp_proc), ("edge node", edge.proc)]:
                if proc is not None and proc.poll() is not None:
                    raise ClusterError(f"the {name} exited with status {proc.returncode}; "
                                       f"see the logs in {data_dir}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("\nstopping")
    except ClusterError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        # A second Ctrl-C must not cut the shutdown short and orphan a child.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.close()
