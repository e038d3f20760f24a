"""The control plane's side of the build queue: the queue itself (in memory, or
Redis when `build_redis_url` is set), this process's worker threads, and the
collector thread that turns finished jobs into versions."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from edgefn.builder.queue import BuildQueue, MemoryQueue, RedisQueue
from edgefn.builder.worker import WorkerConfig, serve
from edgefn.controlplane import db
from edgefn.controlplane.builds import service
from edgefn.controlplane.deps import CPContext
from edgefn.controlplane.settings import CPSettings

log = logging.getLogger("edgefn.controlplane.builds")


def open_queue(settings: CPSettings) -> BuildQueue:
    if not settings.build_redis_url:
        return MemoryQueue()
    return RedisQueue(
        settings.build_redis_url,
        prefix=settings.build_queue_prefix,
        lease_s=settings.build_lease_s,
        max_attempts=settings.build_max_attempts,
    )


def private_dirs(ctx: CPContext) -> list[Path]:
    """What a build must not see of this control plane: its data (database, keys,
    artifacts)."""
    settings = ctx.settings
    return [p.resolve() for p in (settings.data_dir, settings.resolved_artifact_dir())]


class BuildRunner:
    def __init__(self, ctx: CPContext) -> None:
        self.ctx = ctx
        self.jobs = open_queue(ctx.settings)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        settings = self.ctx.settings
        if isinstance(self.jobs, MemoryQueue):
            # Jobs queued in memory died with the previous process; with Redis
            # they are still there and some worker will run them.
            with db.session_scope(self.ctx.sessions) as session:
                lost = service.abandon_unfinished(session)
            if lost:
                log.warning("%d builds were lost in a restart and marked failed", lost)
        config = WorkerConfig(
            npm_registry=settings.build_npm_registry,
            private=private_dirs(self.ctx),
            scratch_root=settings.build_scratch_dir,
        )
        for n in range(settings.build_workers):
            self._spawn(f"build-worker-{n}", serve, self.jobs, config, self._stop)
        self._spawn("build-collector", self._collect)

    def _spawn(self, name: str, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                done = self.jobs.collect(timeout_s=1.0)
                if done is None:
                    continue
                build_id, result = done
                with db.session_scope(self.ctx.sessions) as session:
                    service.finish(session, self.ctx.store, self.ctx.settings, build_id, result)
                self.jobs.forget(build_id)
            except Exception:  # keep collecting; this build stays queued
                log.exception("collecting a build failed")
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self.jobs.wake()
        for thread in self._threads:
            thread.join(timeout=5)
        self.jobs.close()
