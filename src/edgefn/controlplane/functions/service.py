"""Registry rules: who may see and change a function, and how a module becomes an
immutable version (validated, hashed, stored, recorded)."""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgefn.contract import POLICY_FIELDS, DataArchive, FunctionPolicy, ResourceCaps
from edgefn.controlplane.artifacts import ArtifactStore, artifact_key, data_key, staging_key
from edgefn.controlplane.audit import service as audit
from edgefn.controlplane.auth.models import Project
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.auth.service import require_project_role
from edgefn.controlplane.db import utcnow
from edgefn.controlplane.deployments import outbox
from edgefn.controlplane.errors import (
    BadRequest,
    Conflict,
    InvalidModule,
    NotFound,
    PayloadTooLarge,
    ValidationFailed,
)
from edgefn.controlplane.functions.models import Function, FunctionVersion
from edgefn.controlplane.functions.schemas import SEMVER, FunctionIn, FunctionPatch
from edgefn.controlplane.precompiled import service as precompiled
from edgefn.data_archive import ArchiveLimits, ArchiveRefused, unpack
from edgefn.sandbox import errors as sandbox_errors
from edgefn.sandbox.engine import Limits
from edgefn.sandbox.wasminfo import validate_module


def get_function(
    session: Session, who: Principal, function_id: str, *, minimum: str = "viewer"
) -> Function:
    """The function if the caller may act on it: 404 when they cannot even see it
    (its existence must not leak to other projects), 403 when their role is too low."""
    fn = session.get(Function, function_id)
    if fn is None or who.role_in(fn.project_id) is None:
        raise NotFound(f"no function {function_id}")
    require_project_role(who, fn.project_id, minimum)
    return fn


def visible_functions(who: Principal) -> Select[Function]:
    query = select(Function).order_by(Function.created_at, Function.id)
    projects = who.visible_projects()
    if projects is not None:
        query = query.where(Function.project_id.in_(projects))
    return query


def _owner_project(session: Session, who: Principal, requested: str | None) -> str:
    if requested is not None:
        # Admins learn a project is missing; others only that they cannot use it.
        if who.is_admin and session.get(Project, requested) is None:
            raise NotFound(f"no project {requested}")
        require_project_role(who, requested, "developer")
        return requested
    writable = [p for p in who.roles if who.has_role(p, "developer")]
    if len(writable) == 1:
        return writable[0]
    raise ValidationFailed(
        "owner_project_id is required (the caller is not in exactly one project)"
    )


def _within_caps(caps: ResourceCaps, limits: Limits, policy: FunctionPolicy) -> None:
    """400 for a function asking for more than the cluster's operator allows."""
    excess = caps.excess(limits, policy)
    if excess:
        raise ValidationFailed(f"over this cluster's resource caps: {excess}")


def check_caps(caps: ResourceCaps, fn: Function) -> None:
    """400 for a stored function over the caps: they may have been lowered since it was
    created, and a deploy must not hand nodes what the cluster no longer allows."""
    _within_caps(caps, _limits(fn), fn.function_policy())


def _limits(source: Any) -> Limits:
    return Limits(
        memory_pages=source.memory_pages,
        max_execution_ms=source.max_execution_ms,
        max_response_bytes=source.max_response_bytes,
    )


def create_function(
    session: Session, who: Principal, body: FunctionIn, *, caps: ResourceCaps
) -> Function:
    project_id = _owner_project(session, who, body.owner_project_id)
    _within_caps(caps, _limits(body), body)
    exists = session.scalar(
        select(Function.id).where(Function.project_id == project_id, Function.name == body.name)
    )
    if exists:
        raise Conflict(f"function {body.name!r} exists in project {project_id}")
    fn = Function(
        project_id=project_id,
        policy=body.model_dump(mode="json", include=set(POLICY_FIELDS)),
        **body.model_dump(exclude={"owner_project_id", *POLICY_FIELDS}),
    )
    session.add(fn)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(f"function {body.name!r} exists in project {project_id}") from exc
    audit.record(
        session,
        who,
        "function.create",
        target_type="function",
        target_id=fn.id,
        project_id=project_id,
        details=body.model_dump(mode="json", exclude={"env"}),
    )
    session.commit()
    return fn


def update_function(
    session: Session,
    who: Principal,
    function_id: str,
    patch: FunctionPatch,
    *,
    caps: ResourceCaps,
) -> Function:
    fn = get_function(session, who, function_id, minimum="developer")
    changes: dict[str, Any] = patch.model_dump(mode="json", exclude_unset=True)
    policy = {k: v for k, v in changes.items() if k in POLICY_FIELDS}
    merged = _merged_policy(fn, policy) if policy else fn.policy
    # The function as it would be after the patch; nothing changes unless it is in caps.
    limits = {
        k: changes[k] if changes.get(k) is not None else getattr(fn, k)
        for k in ("memory_pages", "max_execution_ms", "max_response_bytes")
    }
    _within_caps(caps, Limits(**limits), FunctionPolicy.model_validate(merged or {}))
    if policy:
        fn.policy = merged
    for field, value in changes.items():
        if field not in POLICY_FIELDS:
            setattr(fn, field, value)
    fn.updated_at = utcnow()
    audit.record(
        session,
        who,
        "function.update",
        target_type="function",
        target_id=fn.id,
        project_id=fn.project_id,
        details={k: v for k, v in changes.items() if k != "env"}
        | {"env_changed": "env" in changes},
    )
    session.commit()
    return fn


def _merged_policy(fn: Function, changes: dict[str, Any]) -> dict[str, Any]:
    """The function's policy with `changes` applied, checked as a whole (a `null`
    where the policy needs a value is refused here)."""
    try:
        merged = FunctionPolicy.model_validate(fn.function_policy().model_dump() | changes)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"])
        raise ValidationFailed(f"{where}: {err['msg']}") from exc
    return merged.model_dump(mode="json")


def delete_function(
    session: Session, who: Principal, store: ArtifactStore, function_id: str
) -> None:
    """Undeploy everywhere, forget the function, then drop its artifacts."""
    fn = get_function(session, who, function_id, minimum="owner")
    versions = session.execute(
        select(FunctionVersion.artifact_key, FunctionVersion.data_key).where(
            FunctionVersion.function_id == fn.id
        )
    ).all()
    keys = [key for row in versions for key in row if key] + precompiled.keys_of(session, fn.id)
    outbox.enqueue_undeploy_everywhere(session, fn.id)
    audit.record(
        session,
        who,
        "function.delete",
        target_type="function",
        target_id=fn.id,
        project_id=fn.project_id,
        details={"name": fn.name},
    )
    session.delete(fn)
    session.flush()
    outbox.broadcast_config(session)
    session.commit()
    # After the commit: a failed delete leaves an orphan file, never a version
    # whose bytes are gone.
    for key in [*keys, staging_key(function_id)]:
        store.delete(key)


def list_versions(session: Session, who: Principal, function_id: str) -> Select[FunctionVersion]:
    fn = get_function(session, who, function_id)
    return (
        select(FunctionVersion)
        .where(FunctionVersion.function_id == fn.id)
        .order_by(FunctionVersion.created_at, FunctionVersion.id)
    )


def version_data(
    session: Session, who: Principal, store: ArtifactStore, function_id: str, version: str
) -> bytes:
    """The data archive of a version of a function the caller may see; 404 when they
    cannot see the function, or the version has no archive."""
    fn = get_function(session, who, function_id)
    key = session.scalar(
        select(FunctionVersion.data_key).where(
            FunctionVersion.function_id == fn.id, FunctionVersion.version == version
        )
    )
    session.rollback()  # the store's read may be slow: no transaction held meanwhile
    if not key:
        raise NotFound(f"version {version} of function {fn.id} has no data archive")
    return store.get(key)


def upload_url(store: ArtifactStore, who: Principal, fn: Function, ttl: int) -> str | None:
    if not who.has_role(fn.project_id, "developer"):
        return None
    return store.presign_put(staging_key(fn.id), ttl)


def authorize_upload(session: Session, who: Principal, function_id: str) -> None:
    """Refuse a caller who may not add versions to the function, then end the
    transaction: the body that follows may take long to arrive, and an open
    transaction would hold SQLite's write lock (or a PostgreSQL snapshot) meanwhile."""
    get_function(session, who, function_id, minimum="developer")
    session.rollback()


@dataclass(frozen=True)
class DataUpload:
    """A version's data archive as uploaded: the tar.gz, its mount map as sent (JSON
    text, guest path -> directory inside the archive), and the limits it must keep."""

    archive: bytes | None
    mounts: str | None
    max_bytes: int
    limits: ArchiveLimits


@dataclass(frozen=True)
class _Data:
    archive: bytes
    sha256: str
    mounts: dict[str, str]


def _checked_data(upload: DataUpload | None) -> _Data | None:
    """The data archive, refused (400, or 413 over its size) unless it unpacks within
    its limits, as the build service unpacks sources, and holds every directory its
    mount map names. It is unpacked into a scratch directory, then forgotten."""
    if upload is None or (upload.archive is None and upload.mounts is None):
        return None
    if upload.archive is None or upload.mounts is None:
        raise BadRequest("a data archive is sent as `data` with its `mounts`, both or neither")
    if len(upload.archive) > upload.max_bytes:
        raise PayloadTooLarge(
            f"data archive is {len(upload.archive)} bytes; the limit is {upload.max_bytes}"
        )
    try:
        mounts = json.loads(upload.mounts)
    except ValueError as exc:
        raise ValidationFailed(f"mounts: not JSON: {exc}") from exc
    if not isinstance(mounts, dict):
        raise ValidationFailed("mounts: a JSON object of guest path -> archive directory")
    with tempfile.TemporaryDirectory(prefix="edgefn-data-") as scratch:
        try:
            unpack(upload.archive, Path(scratch), mounts, upload.limits)
        except ArchiveRefused as exc:
            raise BadRequest(f"data archive refused: {exc.message}") from exc
    digest = hashlib.sha256(upload.archive).hexdigest()
    # `unpack` checked the map; this is its normal form, as nodes get it.
    normal = DataArchive(sha256=digest, size=len(upload.archive), mounts=mounts).mounts
    return _Data(upload.archive, digest, normal)


def create_version(
    session: Session,
    who: Principal,
    store: ArtifactStore,
    *,
    function_id: str,
    version: str,
    data: bytes | None,
    sha256: str | None,
    max_bytes: int,
    files: DataUpload | None = None,
) -> FunctionVersion:
    """Make `data` (or, when None, what was PUT to the upload URL) version `version`,
    with the data archive `files` when one is sent."""
    fn = get_function(session, who, function_id, minimum="developer")
    if not SEMVER.fullmatch(version):
        raise ValidationFailed(f"version {version!r} is not a semantic version (e.g. 1.2.0)")
    from_staging = data is None
    if data is None:
        size = store.size(staging_key(fn.id))
        if size is None:
            raise BadRequest("no artifact: send `artifact`, or PUT it to upload_url first")
        if size > max_bytes:
            raise PayloadTooLarge(f"artifact is {size} bytes; the limit is {max_bytes}")
        data = store.get(staging_key(fn.id))
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"artifact is {len(data)} bytes; the limit is {max_bytes}")
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and sha256.lower() != digest:
        raise BadRequest(f"sha256 mismatch: sent {sha256}, the artifact hashes to {digest}")
    try:
        info = validate_module(data, memory_pages=fn.memory_pages)
    except sandbox_errors.InvalidModule as exc:
        raise InvalidModule(f"invalid module: {exc}") from exc
    archive = _checked_data(files)
    if session.scalar(
        select(FunctionVersion.id).where(
            FunctionVersion.function_id == fn.id, FunctionVersion.version == version
        )
    ):
        raise Conflict(f"version {version} of function {fn.id} exists; versions are immutable")
    key = artifact_key(fn.id, version)
    row = FunctionVersion(
        function_id=fn.id,
        version=version,
        sha256=digest,
        size=len(data),
        artifact_key=key,
        artifact_url="",
        abi=info.abi,
    )
    if archive is not None:
        row.data_key = data_key(fn.id, version)
        row.data_sha256 = archive.sha256
        row.data_size = len(archive.archive)
        row.data_mounts = archive.mounts
    session.add(row)
    try:
        # The row goes in before the bytes: a concurrent upload of the same version
        # blocks on (PostgreSQL) or is serialized behind (SQLite) this insert and
        # fails with 409 instead of overwriting the stored module.
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(f"version {version} of function {fn.id} exists") from exc
    row.artifact_url = store.put(key, data)
    details: dict[str, Any] = {"sha256": digest, "size": len(data), "abi": info.abi}
    if archive is not None and row.data_key is not None:
        store.put(row.data_key, archive.archive)
        details["data"] = {"sha256": archive.sha256, "size": len(archive.archive),
                           "mounts": archive.mounts}
    audit.record(
        session,
        who,
        "version.create",
        target_type="function_version",
        target_id=f"{fn.id}@{version}",
        project_id=fn.project_id,
        details=details,
    )
    session.commit()
    if from_staging:
        store.delete(staging_key(fn.id))
    return row
