"""Precompiling every version for each engine tag the nodes report, off the API's path.

A `Precompiler` thread per control plane wakes when a version is committed (an
upload or a build) and every `poll_s` (a node reported a new tag), finds the
versions with no row for a tag it can produce, and for each: reads the `.wasm`
from the store, checks its sha256, compiles it with its own engine of that tag,
and stores the code beside the `.wasm` under a key naming the tag and the code's
sha256, then the row. The control plane produces the tags of the engines it runs
itself with their default settings on its own CPU; a node whose tag differs
(another engine version, other settings, another CPU) compiles for itself, as
without precompiled artifacts. Replicas may race on a version: the key is
content-addressed and the row unique, so the loser's work is only wasted.

A deploy carries, for the node's tags, each ready object's key (turned into a
signed URL when it is handed out) and sha256 (`for_node`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from edgefn.controlplane import db
from edgefn.controlplane.artifacts import ArtifactStore
from edgefn.controlplane.errors import ArtifactStoreError, CPError
from edgefn.controlplane.functions.models import FunctionVersion
from edgefn.controlplane.nodes.models import Node
from edgefn.controlplane.precompiled.models import FAILED, READY, PrecompiledArtifact
from edgefn.sandbox import Engine, SandboxError, create_engine

log = logging.getLogger("edgefn.controlplane.precompiled")

# Versions compiled per tag per round; the next round takes the rest at once.
BATCH = 16


def precompiled_key(function_id: str, version: str, tag: str, sha256: str) -> str:
    """Beside the version's `.wasm`; the code's digest in the name makes the key
    content-addressed, so two replicas racing never leave a row naming other bytes."""
    return f"functions/{function_id}/{version}.{tag}.{sha256}.cwasm"


def wanted_tags(session: Session) -> set[str]:
    """Every engine tag some node reports."""
    tags: set[str] = set()
    for reported in session.scalars(select(Node.engine_tags).where(Node.engine_tags.is_not(None))):
        tags.update(t for t in reported or () if isinstance(t, str))
    return tags


def for_node(session: Session, node: Node, function_id: str, version: str) -> list[dict[str, str]]:
    """What a deploy to `node` carries: the ready objects of `function_id@version` for
    the tags the node reports, as {engine_tag, artifact_key, sha256}."""
    tags = [t for t in node.engine_tags or () if isinstance(t, str)]
    if not tags:
        return []
    rows = session.scalars(
        select(PrecompiledArtifact).where(
            PrecompiledArtifact.function_id == function_id,
            PrecompiledArtifact.version == version,
            PrecompiledArtifact.state == READY,
            PrecompiledArtifact.engine_tag.in_(tags),
        ).order_by(PrecompiledArtifact.engine_tag)
    )
    return [{"engine_tag": r.engine_tag, "artifact_key": r.artifact_key or "",
             "sha256": r.sha256 or ""} for r in rows]


def keys_of(session: Session, function_id: str) -> list[str]:
    """The store keys of a function's precompiled objects (to delete with it)."""
    return [k for k in session.scalars(
        select(PrecompiledArtifact.artifact_key).where(
            PrecompiledArtifact.function_id == function_id)) if k]


def missing(session: Session, tag: str, limit: int = BATCH) -> list[FunctionVersion]:
    """Versions with no row for `tag`, newest first."""
    done = select(PrecompiledArtifact.id).where(
        PrecompiledArtifact.function_id == FunctionVersion.function_id,
        PrecompiledArtifact.version == FunctionVersion.version,
        PrecompiledArtifact.engine_tag == tag,
    )
    return list(session.scalars(
        select(FunctionVersion).where(~done.exists())
        .order_by(FunctionVersion.created_at.desc(), FunctionVersion.id).limit(limit)
    ))


class Precompiler:
    """The thread that precompiles; `run_once` is one round, for tests and benches."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: ArtifactStore,
        engines: Iterable[str],
        *,
        poll_s: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._engine_names = list(engines)
        self._engines: dict[str, Engine] | None = None
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.compiled = 0
        self.failed = 0

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        _wake_on_new_versions(self._sessions, self)
        self._thread = threading.Thread(target=self._run, name="edgefn-precompile", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for engine in (self._engines or {}).values():
            engine.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                while self.run_once() and not self._stop.is_set():
                    pass
            except Exception:  # the database may be back at the next round
                log.exception("precompiling failed")
            self._wake.wait(self.poll_s)

    # -- the work -------------------------------------------------------------
    @property
    def engines(self) -> dict[str, Engine]:
        """The engines this control plane compiles with, by tag (made on first use)."""
        if self._engines is None:
            engines: dict[str, Engine] = {}
            for name in self._engine_names:
                try:
                    engine = create_engine(name)
                except SandboxError as exc:
                    log.info("not precompiling for %s: %s", name, exc)
                    continue
                if engine.tag:
                    engines[engine.tag] = engine
                else:
                    engine.close()
            self._engines = engines
            log.info("precompiling for engine tags: %s", ", ".join(engines) or "none")
        return self._engines

    def run_once(self) -> int:
        """One round: every version missing for a wanted tag this control plane makes,
        up to `BATCH` per tag. Returns how many it did (ready or failed)."""
        with db.session_scope(self._sessions) as session:
            tags = wanted_tags(session)
            if not tags:
                return 0
            todo = [(tag, v.function_id, v.version, v.sha256, v.artifact_key)
                    for tag in sorted(tags & set(self.engines))
                    for v in missing(session, tag)]
        for tag, function_id, version, sha256, key in todo:
            if self._stop.is_set():
                break
            self._precompile(tag, function_id, version, sha256, key)
        return len(todo)

    def _precompile(self, tag: str, function_id: str, version: str, sha256: str, key: str) -> None:
        row: dict[str, Any] = {"function_id": function_id, "version": version, "engine_tag": tag}
        started = time.perf_counter()
        try:
            wasm = self._store.get(key)
            if hashlib.sha256(wasm).hexdigest() != sha256:
                raise CPError(f"the stored module of {function_id}@{version} does not match "
                              "its sha256")
            code = self.engines[tag].precompile(wasm)
            digest = hashlib.sha256(code).hexdigest()
            object_key = precompiled_key(function_id, version, tag, digest)
            self._store.put(object_key, code)
        except (SandboxError, CPError) as exc:
            # A store that is away is tried again next round; a module the compiler
            # refuses is not: the nodes compile it (and refuse it) themselves.
            if isinstance(exc, ArtifactStoreError):
                log.warning("precompiling %s@%s for %s: %s; trying again later",
                            function_id, version, tag, exc)
                return
            row.update(state=FAILED, error=str(exc)[:2000])
            self.failed += 1
            log.warning("precompiling %s@%s for %s failed: %s", function_id, version, tag, exc)
        else:
            row.update(state=READY, artifact_key=object_key, sha256=digest, size=len(code),
                       compile_ms=round((time.perf_counter() - started) * 1000))
            self.compiled += 1
            log.info("precompiled %s@%s for %s: %d bytes, sha256 %s", function_id, version,
                     tag, len(code), digest)
        with db.session_scope(self._sessions) as session:
            session.add(PrecompiledArtifact(**row))
            try:
                session.commit()
            except IntegrityError:  # another replica got there first, or the
                session.rollback()  # function was deleted meanwhile


def _wake_on_new_versions(sessions: sessionmaker[Session], precompiler: Precompiler) -> None:
    """Wake the precompiler after every commit that added a version (an upload or a
    build), so that its code is ready before most deploys of it."""

    @event.listens_for(sessions, "after_flush")
    def _collect(session: Session, _flush_context: Any) -> None:
        if any(isinstance(obj, FunctionVersion) for obj in session.new):
            session.info["edgefn_new_version"] = True

    @event.listens_for(sessions, "after_commit")
    def _wake(session: Session) -> None:
        if session.info.pop("edgefn_new_version", False):
            precompiler.wake()

    @event.listens_for(sessions, "after_rollback")
    def _forget(session: Session) -> None:
        session.info.pop("edgefn_new_version", None)


__all__ = ["Precompiler", "for_node", "keys_of", "missing", "precompiled_key", "wanted_tags"]
