"""`edgefn edge serve`: the main process of an edge node.

It prepares the node state (from a functions directory, or the state the agent
keeps on disk), serves `/metrics`, and runs the HTTP workers (`node/workers.py`):
processes sharing the port, each with its own runtime, all reading one state file.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from edgefn import redact
from edgefn.edge.bootstrap import build_cache, start_secret_broker
from edgefn.edge.node.credentials import node_certificate, scrub_credentials
from edgefn.edge.settings import EdgeSettings
from edgefn.edge.spec import NodeState, load_function_dir, read_state, write_state
from edgefn.edge.wagi_map import state_from_modules_toml

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from edgefn.edge.node.agent import Agent
    from edgefn.edge.node.logship import LogInbox

log = logging.getLogger("edgefn.edge")


def state_from_functions_dir(root: Path, generation: int = 1) -> NodeState:
    """Every subfolder with a `function.json` is a function; a broken one is reported, not fatal."""
    functions = []
    unavailable: dict[str, str] = {}
    if not root.is_dir():
        raise FileNotFoundError(f"functions directory {root} does not exist")
    for folder in sorted(p for p in root.iterdir() if (p / "function.json").is_file()):
        try:
            functions.append(load_function_dir(folder))
        except ValueError as exc:
            log.error("skipping %s: %s", folder, exc)
            unavailable[folder.name] = str(exc)
    return NodeState(generation=generation, functions=tuple(functions), unavailable=unavailable)


def prepare_state(settings: EdgeSettings) -> NodeState:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.functions_dir is not None or settings.modules_toml is not None:
        previous = 0
        if settings.state_path.exists():
            try:
                previous = read_state(settings.state_path).generation
            except ValueError:
                previous = 0
        if settings.modules_toml is not None:
            state = state_from_modules_toml(
                settings.modules_toml, settings.data_dir / "wagi", previous + 1
            )
        else:
            assert settings.functions_dir is not None
            state = state_from_functions_dir(settings.functions_dir, previous + 1)
        write_state(settings.state_path, state)
        return state
    if settings.state_path.exists():
        return read_state(settings.state_path)
    state = NodeState()
    write_state(settings.state_path, state)
    return state


# Workers choose prometheus_client's multiprocess storage when they first import
# it, so the directory must be in the environment before they start.
def _prepare_metrics_dir(settings: EdgeSettings) -> Path:
    path = (settings.data_dir / "prometheus").resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def _log_inbox(settings: EdgeSettings) -> LogInbox | None:
    from edgefn.edge.node.logship import LogInbox, log_socket

    try:
        return LogInbox(log_socket(settings.data_dir.resolve()))
    except OSError as exc:  # e.g. a socket path over the kernel's 107 bytes
        log.warning("functions' log lines will not reach the control plane: %s", exc)
        return None


def start_agent(settings: EdgeSettings, registry: Collector | None = None) -> Agent | None:
    """Connect to the control plane when one is configured; None for a standalone node."""
    if not (settings.cp_url or settings.grpc_url):
        return None
    if settings.node_token is None:
        raise ValueError("a node needs its token (--node-token-file or EDGEFN_NODE_TOKEN) "
                         "to talk to the control plane")

    from edgefn.edge.bootstrap import build_cache, build_engine
    from edgefn.edge.node.agent import Agent
    from edgefn.edge.node.controller import NodeController
    from edgefn.edge.node.health import VersionFigures, read_counts
    from edgefn.edge.tracing import OtlpSpanExporter

    # Spans of applying instructions, from this process: a handful per deploy.
    tracer = (OtlpSpanExporter(settings.otlp_endpoint, node_id=settings.node_id)
              if settings.otlp_endpoint else None)
    controller = NodeController(settings.state_path, build_cache(settings), build_engine(settings),
                                caps=settings.caps, tracer=tracer, node_id=settings.node_id)
    agent = Agent(
        controller,
        node_id=settings.node_id,
        token=settings.node_token.get_secret_value(),
        cp_url=settings.cp_url,
        grpc_url=settings.grpc_url,
        transport=settings.transport,
        pop_id=settings.pop_id,
        labels=settings.labels,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        tls=node_certificate(settings),
        figures=VersionFigures(partial(read_counts, registry)) if registry is not None else None,
        logs=_log_inbox(settings),
    )
    agent.start()
    return agent


def serve(settings: EdgeSettings) -> None:
    from edgefn.edge.node.workers import WorkerSet

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    redact.install()
    # The workers inherit this environment and run tenants' code: no CP credentials.
    scrub_credentials()
    state = prepare_state(settings)
    build_cache(settings).clean_partials()
    log.info("node %s: %d functions, %d routes", settings.node_id, len(state.functions),
             len(state.routes()))
    _prepare_metrics_dir(settings)
    from edgefn.edge.metrics import MetricsServer, build_registry

    registry = build_registry()
    metrics_server = MetricsServer(settings.metrics_host, settings.metrics_port, registry)
    metrics_server.start()
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, metrics_server.port)
    agent = start_agent(settings, registry)
    broker = start_secret_broker(settings)

    # Workers get absolute paths and no control-plane credential (bootstrap.worker_config).
    workers = WorkerSet(settings)

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            workers.signal(signal.SIGHUP)  # reopen the log files (logrotate)
        else:
            workers.stop_soon()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    scheme = "https" if settings.tls_cert else "http"
    log.info("edge on %s://%s:%d", scheme, settings.host, settings.edge_port)
    try:
        workers.run()
    finally:
        workers.stop()
        if agent is not None:
            agent.stop()
        if broker is not None:
            broker.stop()
        metrics_server.stop()
