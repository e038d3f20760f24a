"""The worker loop: take a job from the queue, build it, hand the result back.
Run as threads inside the control plane (embedded mode) or as `edgefn
build-worker` processes against Redis."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgefn.builder.job import BuildLimits, BuildResult, BuildSpec, run_build
from edgefn.builder.queue import BuildQueue, Job

log = logging.getLogger("edgefn.builder")


@dataclass(frozen=True)
class WorkerConfig:
    npm_registry: str | None = None
    private: Sequence[Path] = field(default_factory=tuple)
    scratch_root: Path | None = None


def run_job(jobs: BuildQueue, job: Job, config: WorkerConfig) -> BuildResult:
    spec = BuildSpec(
        language=job.language,
        allow_critical=job.allow_critical,
        limits=BuildLimits(timeout_s=job.timeout_s, max_output_bytes=job.max_output_bytes),
        npm_registry=config.npm_registry,
        private=config.private,
        scratch_root=config.scratch_root,
    )
    done = threading.Event()
    heartbeat = threading.Thread(
        target=_renew, args=(jobs, job.build_id, done), name=f"lease-{job.build_id}", daemon=True
    )
    heartbeat.start()
    try:
        result = run_build(spec, job.source, lambda text: jobs.append_log(job.build_id, text))
    except Exception as exc:  # a worker outlives any one job
        log.exception("build %s crashed", job.build_id)
        result = BuildResult(error=f"the build worker failed: {exc}")
    finally:
        done.set()
        heartbeat.join(timeout=5)
    jobs.complete(job.build_id, result)
    return result


def _renew(jobs: BuildQueue, build_id: str, done: threading.Event) -> None:
    """Keep this worker's lease on the job until it is done; a worker that dies
    stops renewing, and the queue hands the job to another."""
    while not done.wait(jobs.renew_every_s):
        try:
            jobs.renew(build_id)
        except Exception:  # the next renewal may get through
            log.exception("renewing the lease on build %s failed", build_id)


def serve(jobs: BuildQueue, config: WorkerConfig, stop: threading.Event) -> None:
    """Take and run jobs until `stop` is set."""
    while not stop.is_set():
        try:
            job = jobs.take(timeout_s=1.0)
        except Exception:
            log.exception("taking a build job failed; retrying")
            stop.wait(1.0)
            continue
        if job is not None:
            run_job(jobs, job, config)
