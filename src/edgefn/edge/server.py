"""`edgefn edge serve`: the main process of an edge node.

It prepares the node state (from a functions directory, or the state the agent
keeps on disk), serves `/metrics`, and runs the HTTP workers: Granian processes
sharing the port, each with its own runtime, all reading one state file.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from edgefn.edge.settings import WORKER_CONFIG_ENV, EdgeSettings
from edgefn.edge.spec import NodeState, load_function_dir, read_state, write_state

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
    if settings.functions_dir is not None:
        previous = 0
        if settings.state_path.exists():
            try:
                previous = read_state(settings.state_path).generation
            except ValueError:
                previous = 0
        state = state_from_functions_dir(settings.functions_dir, previous + 1)
        write_state(settings.state_path, state)
        return state
    if settings.state_path.exists():
        return read_state(settings.state_path)
    state = NodeState()
    write_state(settings.state_path, state)
    return state


# Nothing here may import prometheus_client before this runs: its value storage is
# chosen when it is first imported, and forked workers inherit that choice.
def _prepare_metrics_dir(settings: EdgeSettings) -> Path:
    path = (settings.data_dir / "prometheus").resolve()
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def serve(settings: EdgeSettings) -> None:
    from granian import Granian
    from granian.constants import Interfaces

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    state = prepare_state(settings)
    log.info("node %s: %d functions, %d routes", settings.node_id, len(state.functions),
             len(state.routes()))
    _prepare_metrics_dir(settings)
    from edgefn.edge.metrics import MetricsServer, build_registry

    metrics_server = MetricsServer(settings.metrics_host, settings.metrics_port, build_registry())
    metrics_server.start()
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, metrics_server.port)

    worker_settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
    os.environ[WORKER_CONFIG_ENV] = worker_settings.model_dump_json()
    server = Granian(
        "edgefn.edge.app:create_app",
        address=settings.host,
        port=settings.edge_port,
        interface=Interfaces.WSGI,
        workers=settings.workers,
        blocking_threads=settings.threads,
        factory=True,
        ssl_cert=settings.tls_cert,
        ssl_key=settings.tls_key,
        respawn_failed_workers=True,
        log_access=False,
        backpressure=settings.threads * 4,
    )
    scheme = "https" if settings.tls_cert else "http"
    log.info("edge on %s://%s:%d", scheme, settings.host, settings.edge_port)
    try:
        server.serve()
    finally:
        metrics_server.stop()
