"""Git link rules: who may link a function to a repository (its developers, like
any change to the function), and what a push delivery does.

A delivery is trusted only through its HMAC: the links of the repository it names
are found first, then the `X-Hub-Signature-256` is checked against each link's
secret in constant time; only the links whose secret signed it act. Each of those
ignores a push to another branch, acts once per delivery id and once per commit
(a replayed body under a new delivery id builds nothing), fetches the commit in a
build jail, and queues a build whose version comes from the tree's `function.json`
or, when that version exists, from the commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgefn.builder import LANGUAGES
from edgefn.builder import git as gitfetch
from edgefn.builder.errors import BuildError, RepositoryRefused
from edgefn.builder.jail import Jail, JailLimits
from edgefn.builder.queue import BuildQueue
from edgefn.controlplane.audit import service as audit
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.builds import service as builds
from edgefn.controlplane.builds.models import Build
from edgefn.controlplane.db import utcnow
from edgefn.controlplane.errors import (
    BadRequest,
    CPError,
    NotFound,
    Unauthorized,
    ValidationFailed,
)
from edgefn.controlplane.functions import service as functions
from edgefn.controlplane.functions.models import Function, FunctionVersion
from edgefn.controlplane.functions.schemas import SEMVER
from edgefn.controlplane.gitlinks.models import GitDelivery, GitLink
from edgefn.controlplane.gitlinks.schemas import GitLinkIn, HookResult
from edgefn.controlplane.secrets.base import SecretStore
from edgefn.controlplane.settings import CPSettings

_ZERO = "0" * 40


def policy(settings: CPSettings, private: Sequence[Path]) -> gitfetch.GitPolicy:
    return gitfetch.GitPolicy(
        schemes=frozenset(settings.git_url_schemes),
        allow_private=settings.git_allow_private_hosts,
        private=tuple(private),
    )


def get_link(session: Session, who: Principal, function_id: str) -> GitLink:
    fn = functions.get_function(session, who, function_id)
    link = session.get(GitLink, fn.id)
    if link is None:
        raise NotFound(f"function {fn.id} is not linked to a repository")
    return link


def put_link(
    session: Session,
    who: Principal,
    store: SecretStore,
    rules: gitfetch.GitPolicy,
    function_id: str,
    body: GitLinkIn,
) -> tuple[GitLink, bool]:
    """Link the function (or change its link); True when the link is new."""
    fn = functions.get_function(session, who, function_id, minimum="developer")
    if body.language not in LANGUAGES:
        raise ValidationFailed(f"language: one of {', '.join(LANGUAGES)}")
    try:
        repo = gitfetch.parse_repo_url(body.repository, rules)
        subdirectory = gitfetch.check_subdirectory(body.subdirectory)
    except RepositoryRefused as exc:
        raise ValidationFailed(exc.message) from None
    if ".." in body.branch or body.branch.endswith((".", "/", ".lock")) or "//" in body.branch:
        raise ValidationFailed(f"branch {body.branch!r} is not a valid branch name")
    link = session.get(GitLink, fn.id)
    created = link is None
    if link is None:
        if body.secret is None:
            raise ValidationFailed("secret: Field required when linking a function")
        link = GitLink(function_id=fn.id, project_id=fn.project_id)
        session.add(link)
    if body.secret is not None:
        link.secret_sealed = store.seal(
            fn.project_id, link.secret_name, body.secret.get_secret_value()
        )
        link.secret_backend = store.name
    link.repository = repo.url
    link.repository_key = gitfetch.repository_key(repo.url)
    link.branch = body.branch
    link.subdirectory = subdirectory
    link.language = body.language
    link.auto_deploy = body.auto_deploy
    link.actor_kind = who.kind
    link.actor_id = who.id
    link.updated_at = utcnow()
    audit.record(
        session, who, "git_link.create" if created else "git_link.update",
        target_type="function", target_id=fn.id, project_id=fn.project_id,
        details={
            "repository": repo.url, "branch": body.branch, "subdirectory": subdirectory,
            "language": body.language, "auto_deploy": body.auto_deploy,
            "secret_changed": body.secret is not None,
        },
    )
    session.commit()
    return link, created


def delete_link(session: Session, who: Principal, store: SecretStore, function_id: str) -> None:
    fn = functions.get_function(session, who, function_id, minimum="developer")
    link = session.get(GitLink, fn.id)
    if link is None:
        raise NotFound(f"function {fn.id} is not linked to a repository")
    backend, name = link.secret_backend, link.secret_name
    session.delete(link)
    audit.record(session, who, "git_link.delete", target_type="function", target_id=fn.id,
                 project_id=fn.project_id, details={"repository": link.repository})
    session.commit()
    if backend == store.name:
        store.remove(fn.project_id, name)


# ---- the push webhook ------------------------------------------------------------


@dataclass(frozen=True)
class Push:
    """The fields of a GitHub push event the hook reads."""

    ref: str
    commit: str
    deleted: bool
    repositories: frozenset[str]  # repository keys of every URL the payload names

    @classmethod
    def parse(cls, body: bytes) -> Push:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"the payload is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise BadRequest("the payload is not a JSON object")
        repo = payload.get("repository")
        urls = [
            repo.get(k) for k in ("clone_url", "html_url", "git_url", "url", "ssh_url")
        ] if isinstance(repo, dict) else []
        keys = frozenset(gitfetch.repository_key(u) for u in urls if isinstance(u, str) and u)
        if not keys:
            raise BadRequest("the payload names no repository (repository.clone_url)")
        ref, after = payload.get("ref"), payload.get("after")
        return cls(
            ref=ref if isinstance(ref, str) else "",
            commit=after.lower() if isinstance(after, str) else "",
            deleted=payload.get("deleted") is True,
            repositories=keys,
        )


def signed_by(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under
    `secret`; compared in constant time."""
    if not signature:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.strip().encode("utf-8", "replace"))


def signed_links(
    session: Session, store: SecretStore, push: Push, body: bytes, signature: str | None
) -> list[GitLink]:
    """The links of the push's repository whose secret signed it: 404 when no
    function is linked to it, 401 when none of their secrets signed it."""
    links = list(session.scalars(
        select(GitLink)
        .where(GitLink.repository_key.in_(sorted(push.repositories)))
        .order_by(GitLink.function_id)
    ))
    if not links:
        raise NotFound("no function is linked to this repository")
    signed = [
        link for link in links
        if link.secret_backend == store.name
        and signed_by(store.unseal(link.project_id, link.secret_name, link.secret_sealed),
                      body, signature)
    ]
    if not signed:
        raise Unauthorized("X-Hub-Signature-256 is missing or does not match the webhook secret")
    return signed


@dataclass
class HookContext:
    """What acting on a push needs besides the session."""

    settings: CPSettings
    jobs: BuildQueue
    rules: gitfetch.GitPolicy


def act(
    session: Session, hook: HookContext, link: GitLink, push: Push, delivery: str | None
) -> HookResult:
    """What `push` does to the function of `link` (its signature already checked)."""
    branch = f"refs/heads/{link.branch}"
    if push.ref != branch:
        return _ignored(link, f"a push to {push.ref or '(no ref)'}; this function builds {branch}")
    if push.deleted or push.commit in ("", _ZERO):
        return _ignored(link, f"{branch} was deleted")
    if not gitfetch.COMMIT.fullmatch(push.commit):
        raise BadRequest(f"after: {push.commit[:80]!r} is not a commit id")
    who = builds.acting_for(link.actor_kind, link.actor_id, link.project_id)
    earlier = session.scalar(
        select(Build).where(
            Build.function_id == link.function_id,
            Build.git_commit == push.commit,
            Build.state != "failed",
        ).limit(1)
    )
    if earlier is not None:
        return _duplicate(link, f"commit {push.commit[:12]} was built already", earlier, hook)
    record = _claim(session, link, push.commit, delivery)
    if isinstance(record, Build):
        return _duplicate(link, f"delivery {delivery} was received already", record, hook)
    if record is None and delivery is not None:
        return HookResult(function_id=link.function_id, status="duplicate",
                          reason=f"delivery {delivery} is being handled")
    function_id, language, auto_deploy = link.function_id, link.language, link.auto_deploy
    repository, subdirectory = link.repository, link.subdirectory
    session.commit()  # no transaction stays open while git runs
    try:
        fetched = fetch(hook, repository, push.commit, subdirectory)
        version = _version(session, function_id, fetched.manifest, push.commit)
        build = builds.submit(
            session, who, hook.jobs, hook.settings, function_id=function_id,
            language=language, version=version, source=fetched.archive,
            allow_critical=False, git_commit=push.commit, auto_deploy=auto_deploy,
        )
    except (BuildError, CPError) as exc:
        session.rollback()
        message = exc.message
        _release(session, record, who, function_id, push.commit, message)
        return HookResult(function_id=function_id, status="failed", reason=message)
    if record is not None:
        row = session.get(GitDelivery, record)
        if row is not None:
            row.build_id = build.id
            session.commit()
    return HookResult(function_id=function_id, status="building",
                      build=builds.describe(build, hook.jobs))


def _ignored(link: GitLink, reason: str) -> HookResult:
    return HookResult(function_id=link.function_id, status="ignored", reason=reason)


def _duplicate(link: GitLink, reason: str, build: Build, hook: HookContext) -> HookResult:
    return HookResult(function_id=link.function_id, status="duplicate", reason=reason,
                      build=builds.describe(build, hook.jobs))


def _claim(
    session: Session, link: GitLink, commit: str, delivery: str | None
) -> str | Build | None:
    """Record the delivery before acting on it: its row's id; the build an earlier
    copy of it started; None when there is no delivery id, or when a copy is being
    handled right now."""
    if delivery is None:
        return None
    row = GitDelivery(function_id=link.function_id, delivery_id=delivery, commit=commit)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        earlier = session.scalar(select(GitDelivery).where(
            GitDelivery.function_id == link.function_id, GitDelivery.delivery_id == delivery))
        if earlier is not None and earlier.build_id is not None:
            build = session.get(Build, earlier.build_id)
            if build is not None:
                return build
        return None
    return row.id


def _release(
    session: Session, record: str | Build | None, who: Principal, function_id: str,
    commit: str, message: str,
) -> None:
    """A push that built nothing: forget its delivery (a redelivery may try again)
    and audit why."""
    if isinstance(record, str):
        row = session.get(GitDelivery, record)
        if row is not None:
            session.delete(row)
    fn = session.get(Function, function_id)
    if fn is not None:
        audit.record(session, who, "git.push_failed", target_type="function",
                     target_id=function_id, project_id=fn.project_id,
                     details={"commit": commit, "error": message[:500]})
    session.commit()


def fetch(hook: HookContext, repository: str, commit: str, subdirectory: str) -> gitfetch.Fetched:
    """The commit's subdirectory as a source archive, fetched in a build jail."""
    settings = hook.settings
    repo = gitfetch.parse_repo_url(repository, hook.rules)  # the policy may have changed
    scratch = Path(tempfile.mkdtemp(prefix="edgefn-git-", dir=settings.build_scratch_dir))
    try:
        jail = Jail(scratch, JailLimits(timeout_s=settings.git_fetch_timeout_s),
                    private=hook.rules.private)
        fetched = gitfetch.fetch(jail, repo, commit, subdirectory, hook.rules)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if len(fetched.archive) > settings.max_source_bytes:
        raise RepositoryRefused(
            f"the tree is {len(fetched.archive)} bytes packed; the limit is "
            f"{settings.max_source_bytes}"
        )
    return fetched


def _version(
    session: Session, function_id: str, manifest: dict[str, Any] | None, commit: str
) -> str:
    """`function.json`'s version; when the function has it already (a push that
    did not bump it), or the tree has no manifest, that version (or 0.0.0) with
    the commit as build metadata: `1.2.0+git.1a2b3c4d5e6f`."""
    declared = (manifest or {}).get("version")
    if declared is not None and not (isinstance(declared, str) and SEMVER.fullmatch(declared)):
        raise ValidationFailed(f"function.json: version {declared!r} is not a semantic version")
    base = (declared or "0.0.0").split("+", 1)[0]
    if declared is not None and not _exists(session, function_id, declared):
        return declared
    return f"{base}+git.{commit[:12]}"


def _exists(session: Session, function_id: str, version: str) -> bool:
    return session.scalar(select(FunctionVersion.id).where(
        FunctionVersion.function_id == function_id, FunctionVersion.version == version
    )) is not None
