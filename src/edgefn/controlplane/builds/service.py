"""Build rules: who may build a function and read its builds, how a request
becomes a queued job, and how a finished job becomes a version (through the very
path an upload takes, so a built module is validated like an uploaded one)."""

from __future__ import annotations

import hashlib
from typing import Literal, cast

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from edgefn.builder import LANGUAGES, BuildResult
from edgefn.builder.queue import BuildQueue, Job
from edgefn.controlplane.artifacts import ArtifactStore
from edgefn.controlplane.audit import service as audit
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.builds.models import Build
from edgefn.controlplane.builds.schemas import BuildOut
from edgefn.controlplane.db import utcnow
from edgefn.controlplane.deployments import service as deployments
from edgefn.controlplane.errors import Conflict, CPError, NotFound, ValidationFailed
from edgefn.controlplane.functions import service as functions
from edgefn.controlplane.functions.models import FunctionVersion
from edgefn.controlplane.functions.schemas import SEMVER
from edgefn.controlplane.settings import CPSettings


def submit(
    session: Session,
    who: Principal,
    jobs: BuildQueue,
    settings: CPSettings,
    *,
    function_id: str,
    language: str,
    version: str,
    source: bytes,
    allow_critical: bool,
    git_commit: str | None = None,
    auto_deploy: bool = False,
) -> Build:
    """Record the build and queue it; the version is checked now so that a clash
    fails the request, not the build minutes later."""
    fn = functions.get_function(session, who, function_id, minimum="developer")
    if language not in LANGUAGES:
        raise ValidationFailed(f"language: one of {', '.join(LANGUAGES)}")
    if not SEMVER.fullmatch(version):
        raise ValidationFailed(f"version {version!r} is not a semantic version (e.g. 1.2.0)")
    if session.scalar(
        select(FunctionVersion.id).where(
            FunctionVersion.function_id == fn.id, FunctionVersion.version == version
        )
    ):
        raise Conflict(f"version {version} of function {fn.id} exists; versions are immutable")
    build = Build(
        function_id=fn.id,
        project_id=fn.project_id,
        language=language,
        state="queued",
        version=version,
        allow_critical=allow_critical,
        source_sha256=hashlib.sha256(source).hexdigest(),
        source_size=len(source),
        actor_kind=who.kind,
        actor_id=who.id,
        log="",
        git_commit=git_commit,
        auto_deploy=auto_deploy,
    )
    session.add(build)
    session.flush()
    audit.record(
        session,
        who,
        "build.create",
        target_type="build",
        target_id=build.id,
        project_id=fn.project_id,
        details={
            "function_id": fn.id,
            "language": language,
            "version": version,
            "source_sha256": build.source_sha256,
            "allow_critical": allow_critical,
            "git_commit": git_commit,
        },
    )
    session.commit()
    jobs.submit(
        Job(
            build_id=build.id,
            language=language,
            source=source,
            allow_critical=allow_critical,
            timeout_s=settings.build_timeout_s,
            max_output_bytes=settings.max_artifact_bytes,
        )
    )
    return build


def get_build(session: Session, who: Principal, build_id: str) -> Build:
    """The build if the caller may read its function's project (404 otherwise)."""
    build = session.get(Build, build_id)
    if build is None or who.role_in(build.project_id) is None:
        raise NotFound(f"no build {build_id}")
    return build


def list_builds(session: Session, who: Principal, function_id: str) -> Select[Build]:
    fn = functions.get_function(session, who, function_id)
    return (
        select(Build).where(Build.function_id == fn.id).order_by(Build.created_at.desc(), Build.id)
    )


def live_state(build: Build, jobs: BuildQueue) -> str:
    if build.state == "queued" and jobs.is_running(build.id):
        return "running"
    return build.state


def describe(build: Build, jobs: BuildQueue) -> BuildOut:
    """The build as the API shows it, its state as the queue knows it now."""
    out = BuildOut.model_validate(build)
    out.state = live_state(build, jobs)  # type: ignore[assignment]
    return out


def live_log(build: Build, jobs: BuildQueue) -> str:
    return build.log if build.finished_at is not None else jobs.log(build.id)


def acting_for(kind: str, actor_id: str, project_id: str) -> Principal:
    """The caller a build acts for, as a developer of its project. Their role was
    checked when they asked for it (or linked the repository that pushed); the
    version and any deploy are created, and audited, in their name."""
    return Principal(
        kind=cast(Literal["admin", "user", "api_key"], kind),
        id=actor_id,
        roles={project_id: "developer"},
    )


def _submitter(build: Build) -> Principal:
    return acting_for(build.actor_kind, build.actor_id, build.project_id)


def finish(
    session: Session,
    store: ArtifactStore,
    settings: CPSettings,
    build_id: str,
    result: BuildResult,
) -> Build | None:
    """Turn a finished job into a version (or a failed build); None when the build
    is gone (its function was deleted meanwhile)."""
    build = session.get(Build, build_id)
    if build is None or build.finished_at is not None:
        session.rollback()
        return None
    who = _submitter(build)
    log = "".join(result.log)
    error = result.error
    sha256 = None
    if result.wasm is not None:
        try:
            row = functions.create_version(
                session,
                who,
                store,
                function_id=build.function_id,
                version=build.version,
                data=result.wasm,
                sha256=None,
                max_bytes=settings.max_artifact_bytes,
            )
            sha256 = row.sha256
            log += f"created version {build.version} (sha256 {sha256})\n"
        except CPError as exc:
            session.rollback()
            error = exc.message
            log += f"the module was refused: {exc.message}\n"
        build = session.get(Build, build_id)
        if build is None:
            return None
        if sha256 is not None and build.auto_deploy:
            log += _deploy(session, who, settings, build)
    build.state = "succeeded" if error is None else "failed"
    build.error = error
    build.log = log
    build.scan = result.scan
    build.sha256 = sha256
    build.finished_at = utcnow()
    audit.record(
        session,
        who,
        "build.finish",
        target_type="build",
        target_id=build.id,
        project_id=build.project_id,
        details={
            "state": build.state,
            "version": build.version,
            "sha256": sha256,
            "error": (error or "")[:500] or None,
            "scanned": (result.scan or {}).get("scanned"),
        },
    )
    session.commit()
    return build


def _deploy(session: Session, who: Principal, settings: CPSettings, build: Build) -> str:
    """Deploy the version a build made (its function asked for it); the log line
    saying how that went. A refused deploy leaves the build succeeded: the version
    exists, and the log says why it is not live."""
    version = build.version
    try:
        dep = deployments.deploy(
            session, who, build.function_id, version=version, target_pop=None,
            strategy="pull", caps=settings.caps,
        )
    except CPError as exc:
        session.rollback()
        return f"deploying {version} was refused: {exc.message}\n"
    return f"deployed {version} (deployment {dep.id})\n"


def abandon_unfinished(session: Session) -> int:
    """Fail the builds an in-process queue lost when this control plane stopped;
    how many there were."""
    lost = list(session.scalars(select(Build).where(Build.finished_at.is_(None))))
    for build in lost:
        build.state = "failed"
        build.error = "the control plane restarted before the build finished; submit it again"
        build.finished_at = utcnow()
        audit.record(
            session,
            _submitter(build),
            "build.finish",
            target_type="build",
            target_id=build.id,
            project_id=build.project_id,
            details={"state": "failed", "version": build.version, "error": build.error},
        )
    session.commit()
    return len(lost)
