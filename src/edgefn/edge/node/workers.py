"""The edge's worker processes: each binds the port with SO_REUSEPORT and runs the front.

The main process spawns `workers` of them and replaces one that dies; the kernel
spreads new connections across their listening sockets. A worker builds its own
runtime (`bootstrap.build_runtime`), follows the node state file and serves on
uvloop until SIGTERM or SIGINT; SIGHUP reopens its log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from edgefn import redact
from edgefn.edge import green
from edgefn.edge.bootstrap import worker_config
from edgefn.edge.settings import EdgeSettings

log = logging.getLogger("edgefn.edge")

# How long a stopping worker lets running requests finish.
_DRAIN_S = 5.0


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _tls_context(settings: EdgeSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def worker_main(raw_settings: str, counts: Any, key: bytes, index: int) -> None:
    """Entry point of one worker process (spawned: a clean interpreter)."""
    import uvloop

    redact.install()
    settings = EdgeSettings.model_validate_json(raw_settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # Ctrl-C reaches the whole process group; the main process decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    uvloop.run(_serve(settings, counts, key, index))


async def _serve(settings: EdgeSettings, counts: Any, key: bytes, index: int) -> None:
    from edgefn.edge import metrics
    from edgefn.edge.worker.app import start_runtime
    from edgefn.edge.worker.front import Front, FrontLimits, RequestPool
    from edgefn.edge.worker.limiter import ClientLimiter

    # The invocation metrics are written from this loop, not from a thread of their own.
    metrics.flush_on(asyncio.get_running_loop())
    runtime, watcher = start_runtime(settings)
    # What the worker holds from here on (its modules, settings, the runtime) lives as
    # long as it does: out of the collector's reach, a full collection scans only what
    # requests made, a few milliseconds instead of 50 to 100 with the event loop
    # stopped (docs/performance.md).
    gc.collect()
    gc.freeze()
    # What collections still cost is not charged to the call they interrupt.
    green.track_collections()
    loop = asyncio.get_running_loop()
    pool = RequestPool(runtime, loop, settings.threads)
    limiter = None
    if settings.max_connections_per_client:
        limiter = ClientLimiter(counts, key, index, settings.workers,
                                settings.max_connections_per_client)
    tls = _tls_context(settings)
    front = Front(runtime, pool, FrontLimits.from_settings(settings), limiter,
                  scheme="https" if tls else "http", server_port=str(settings.edge_port),
                  inline=settings.inline)
    front.start()
    server = await loop.create_server(
        front.protocol, sock=listening_socket(settings.host, settings.edge_port), ssl=tls,
        ssl_handshake_timeout=settings.header_timeout_s if tls else None, backlog=2048,
    )
    stopping = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, runtime.log_sink.reopen)
    # A node killed outright (SIGKILL, OOM) sends no SIGTERM: its workers stop when
    # the pipe to it closes, rather than serve on, unmanaged, on its port.
    parent = multiprocessing.parent_process()
    if parent is not None:
        loop.add_reader(parent.sentinel, stopping.set)
    try:
        await stopping.wait()
    finally:
        server.close()
        front.close_idle()
        deadline = loop.time() + _DRAIN_S
        while front.pending and loop.time() < deadline:
            await asyncio.sleep(0.02)
        front.close_idle()
        watcher.stop()
        pool.close(timeout=1.0)
        runtime.close()


class WorkerSet:
    """The worker processes of a node, replaced when one exits while the node is running."""

    def __init__(self, settings: EdgeSettings) -> None:
        from edgefn.edge.worker.limiter import new_key, shared_counts

        self.settings = settings
        self._raw = worker_config(settings)
        self._counts = shared_counts(settings.workers)
        self._key = new_key()
        self._procs: list[BaseProcess | None] = [None] * settings.workers
        self._stopping = False
        # Written to by `stop_soon`, so that `run` wakes at once rather than at its
        # next half-second turn: a node asked to stop is gone in a fraction of a second.
        # Kept open for the process's life: a signal after `stop` must not write to a
        # descriptor number reused by then.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    def _start(self, index: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=worker_main, name=f"edgefn-worker-{index}",
                           args=(self._raw, self._counts, self._key, index), daemon=False)
        proc.start()
        self._procs[index] = proc

    def run(self) -> None:
        """Start the workers and watch them until `stop` (or a signal) ends the node."""
        # Refuse a taken port here, with a clear error, rather than in every worker.
        listening_socket(self.settings.host, self.settings.edge_port).close()
        for i in range(len(self._procs)):
            self._start(i)
        restarts: list[float] = []
        while not self._stopping:
            sentinels = {p.sentinel: i for i, p in enumerate(self._procs) if p is not None}
            for ready in wait([*sentinels, self._wake_r], timeout=0.5):
                if self._stopping:  # set before the byte that woke us is written
                    break
                index = sentinels[ready]  # type: ignore[index]
                proc = self._procs[index]
                code = None
                if proc is not None:
                    proc.join(1.0)  # reap it
                    code = proc.exitcode
                log.error("edge worker %d exited with %s; starting another", index, code)
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < 10] + [now]
                if len(restarts) > 5 * len(self._procs):
                    raise RuntimeError("edge workers keep exiting; see the log above")
                self._start(index)

    def stop_soon(self) -> None:
        """From a signal handler: `run` returns at once."""
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def signal(self, signum: int) -> None:
        for proc in self._procs:
            if proc is not None and proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signum)

    def stop(self, timeout: float = _DRAIN_S + 3) -> None:
        self._stopping = True
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self._procs:
            if proc is not None:
                proc.join(max(0.0, deadline - time.monotonic()))
                if proc.exitcode is None:
                    proc.kill()
                    proc.join()
