"""Applying control-plane instructions to the node's desired state, idempotently.

An instruction (the contract's model, from the gRPC stream or a heartbeat answer)
becomes a new `NodeState` written atomically to disk, which the workers load. A deploy is
applied only when the function is within the node's resource caps and its
artifact is in the disk cache with the right sha256 and compiles; otherwise the
previous version keeps serving and the ack says why.
Applying the same instruction twice changes nothing the second time.

An instruction that carries a trace context is applied in spans of that trace:
`apply <type>` with the download, verify, compile, activate and ack steps inside.

`repair` puts back artifacts and unpacked data archives of the state that went
missing from the cache (a corrupt file is deleted where it is found), through a
fresh URL from the control plane: the one a deploy came with expires within minutes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgefn.contract import (
    AckState,
    ConfigInstruction,
    DataArchive,
    DeployInstruction,
    Instruction,
    InstructionAck,
    LoadState,
    ResourceCaps,
    RouteSpec,
    UndeployInstruction,
)
from edgefn.edge import metrics
from edgefn.edge.cache import ArtifactCache
from edgefn.edge.errors import ArtifactError, DigestMismatch, EdgeError, FunctionUnavailable
from edgefn.edge.spec import FunctionSpec, NodeState, SplitState, read_state, write_state
from edgefn.edge.tracing import OtlpSpanExporter, Spans
from edgefn.sandbox.engine import Engine
from edgefn.sandbox.errors import InvalidModule, PrecompiledRefused

log = logging.getLogger("edgefn.edge.node.agent")

# (function_id, version) -> a freshly signed URL of that artifact, from the control
# plane; raises `ArtifactError` when it cannot be had.
FreshUrl = Callable[[str, str], str]
# After a failed repair, the same artifact waits this long (doubling, up to the cap)
# before the next try: a control plane that is away is not asked every few seconds.
REPAIR_RETRY_S = 5.0
REPAIR_RETRY_CAP_S = 300.0


class OverCaps(FunctionUnavailable):
    """A deploy asks for more than this node's operator allows."""


class NodeController:
    """Owns the node state file; thread-safe, one instruction at a time."""

    def __init__(
        self,
        state_path: Path,
        cache: ArtifactCache,
        engine: Engine | None,
        *,
        fresh_url: FreshUrl | None = None,
        caps: ResourceCaps | None = None,
        tracer: OtlpSpanExporter | None = None,
        node_id: str = "",
    ) -> None:
        self.state_path = state_path
        self.cache = cache
        self.engine = engine
        self.fresh_url = fresh_url
        # The same for a version's data archive (the agent's, like `fresh_url`).
        self.fresh_data_url: FreshUrl | None = None
        # (function_id, version) -> (monotonic time of the next try, delay after it)
        self._repair_backoff: dict[tuple[str, str], tuple[float, float]] = {}
        # The node operator's caps (the shared-node defaults unless given).
        self.caps = caps or ResourceCaps()
        self._lock = threading.Lock()
        self.tracer = tracer
        self.node_id = node_id
        # The spans of the instruction being applied (no-ops outside `apply`).
        self._spans = Spans(None, None)
        self.state = read_state(state_path) if state_path.exists() else NodeState()
        self.function_states: dict[str, tuple[str, LoadState]] = {
            fn.id: (fn.version, LoadState.CACHED) for fn in self.state.functions
        }
        # function id -> the version served before the current one: kept in the cache
        # like the current one, so that a rollback needs no download; and its spec,
        # whose data archive stays unpacked for the same reason.
        self.previous: dict[str, str] = {}
        self._previous_specs: dict[str, FunctionSpec] = {}

    def receive(self, ack_id: int, decode: Callable[[], Instruction]) -> InstructionAck:
        """Decode and apply one instruction. One that cannot be read is acked as an
        error like one that fails, so a bad instruction never ends the stream or the
        heartbeat loop, and the next one still applies."""
        try:
            instr = decode()
        except Exception as exc:
            log.warning("instruction %d cannot be read: %s", ack_id, exc)
            return InstructionAck(ack_id, AckState.ERROR, f"unreadable instruction: {exc}")
        return self.apply(instr)

    def apply(self, instr: Instruction) -> InstructionAck:
        with self._lock:
            context = instr.trace_context
            self._spans = Spans(self.tracer, context.traceparent if context else None)
            function_id, version = _subject(instr)
            try:
                with self._spans.span(f"apply {instr.type}", {
                    "edgefn.node_id": self.node_id, "edgefn.instruction_id": instr.id,
                    "edgefn.function_id": function_id, "edgefn.function_version": version,
                }) as span:
                    ack = self._apply(instr)
                    with self._spans.span("ack", {"edgefn.ack_state": str(ack.state)}) as step:
                        if ack.state is AckState.ERROR:
                            for failed in (span, step):
                                if failed is not None:
                                    failed.error = ack.message
                return ack
            finally:
                self._spans = Spans(None, None)

    def _apply(self, instr: Instruction) -> InstructionAck:
        try:
            if isinstance(instr, DeployInstruction):
                self._deploy(instr)
            elif isinstance(instr, UndeployInstruction):
                self._undeploy(instr)
            elif isinstance(instr, ConfigInstruction):
                self._config(instr)
            else:
                return InstructionAck(instr.id, AckState.ERROR,
                                      f"unknown instruction type {instr.type!r}")
        except (EdgeError, InvalidModule, ValidationError, ValueError, KeyError) as exc:
            log.warning("instruction %s (%s) failed: %s", instr.id, _about(instr), exc)
            return self._answer(instr, AckState.ERROR, str(exc))
        except Exception as exc:
            # Not an error we expect, yet still this instruction's alone: it is
            # acked as failed and the node goes on with the next one.
            log.exception("instruction %s (%s) failed unexpectedly", instr.id, _about(instr))
            return self._answer(instr, AckState.ERROR, f"{type(exc).__name__}: {exc}")
        return self._answer(instr, AckState.CACHED)

    def _answer(self, instr: Instruction, state: AckState, message: str = "") -> InstructionAck:
        function_id, version = _subject(instr)
        if state is AckState.ERROR and isinstance(instr, DeployInstruction):
            self.function_states[function_id] = (version, LoadState.ERROR)
        return InstructionAck(instr.id, state, message, function_id, version)

    def _deploy(self, instr: DeployInstruction) -> None:
        current = {fn.id: fn for fn in self.state.functions}
        existing = current.get(instr.function_id)
        spec = FunctionSpec.of(instr)
        excess = self.caps.excess(spec.limits, spec)
        if excess:
            # Before any download: the previous version, if any, keeps serving.
            raise OverCaps(f"over this node's resource caps: {excess}")
        self.function_states[spec.id] = (spec.version, LoadState.LOADING)
        # The artifact first: a bad one must never replace a good version.
        wasm = self._artifact(spec)
        if spec.data is not None:
            # Mounted from the archive the node unpacked itself, never from a path an
            # instruction names (it can name none).
            spec = spec.model_copy(update={"volumes": self._data(spec, spec.data)})
        if self.engine is not None:
            # Compile here, once per node: the workers then load machine code from disk.
            with self._spans.span("compile") as span:
                used = self._compile(self.engine, instr, spec, wasm)
                if span is not None:
                    span.attributes["edgefn.precompiled"] = str(used).lower()
        current[spec.id] = spec
        table = list(self.state.route_table)
        if instr.routes:
            table = [r for r in table if r.function_id != spec.id]
            table += [_owned(r, spec) for r in instr.routes]
        unavailable = dict(self.state.unavailable)
        unavailable.pop(spec.id, None)
        splits = dict(self.state.splits)
        split = _split(instr, existing, spec, splits.pop(spec.id, None))
        if split is not None:
            splits[spec.id] = split
        if (existing == spec and tuple(table) == self.state.route_table
                and splits == self.state.splits):
            self.function_states[spec.id] = (spec.version, LoadState.CACHED)
            return
        # The new state is what the workers load (and warm up) the version from.
        with self._spans.span("activate"):
            self._write(functions=tuple(current.values()), route_table=tuple(table),
                        unavailable=unavailable, splits=splits)
        if existing is not None and existing.version != spec.version:
            self.previous[spec.id] = existing.version
            self._previous_specs[spec.id] = existing
        self.function_states[spec.id] = (spec.version, LoadState.CACHED)

    def _data(self, spec: FunctionSpec, data: DataArchive, *, fresh: bool = False
              ) -> dict[str, str]:
        """Guest path -> host directory of the version's data archive: unpacked in the
        cache already (by any version with the same files), else downloaded (with the
        URL it came with unless `fresh`, then through a fresh one from the control
        plane, as for the module), its sha256 checked, and unpacked once under its
        digest. `ArtifactError` (the deploy fails, what the node ran keeps running)
        for an archive that is tampered with, too big or hostile."""
        what = f"data archive of {spec.id}@{spec.version}"
        with self._spans.span("data") as span:
            found = self.cache.data_mounts(data.sha256, data.mounts)
            if span is not None:
                span.attributes["edgefn.cache_hit"] = str(found is not None).lower()
            if found is not None:
                return found
            if data.size > self.cache.max_data_bytes:
                raise ArtifactError(f"{what} is {data.size} bytes, over this node's limit "
                                    f"of {self.cache.max_data_bytes}")
            archive = self._data_bytes(spec, data, what, fresh=fresh)
            mounts = self.cache.unpack_data(data.sha256, archive, data.mounts)
        self.cache.evict(pinned=[*self._pinned(), (spec.id, spec.version)],
                         pinned_data=[*self._data_in_use(), data.sha256])
        return mounts

    def _data_bytes(self, spec: FunctionSpec, data: DataArchive, what: str, *,
                    fresh: bool) -> bytes:
        fresh_url = self.fresh_data_url
        if not fresh or fresh_url is None:
            try:
                if not data.url:
                    raise ArtifactError(f"{what} is not unpacked here and has no URL")
                return self.cache.download(data.url, data.sha256, what,
                                           limit=self.cache.max_data_bytes)
            except ArtifactError:
                if fresh_url is None:
                    raise
        return self.cache.download(fresh_url(spec.id, spec.version), data.sha256, what,
                                   limit=self.cache.max_data_bytes)

    def _pinned(self) -> list[tuple[str, str]]:
        """The artifacts the cache must keep: every version the state runs, and the
        previous version of each function (a rollback needs no download)."""
        return [(f.id, f.version) for f in self.state.specs()] + list(self.previous.items())

    def _data_in_use(self) -> list[str]:
        """The digests of the data archives the state's versions, and the versions
        before them, mount."""
        specs = [*self.state.specs(), *self._previous_specs.values()]
        return [s.data.sha256 for s in specs if s.data is not None]

    def _compile(
        self, engine: Engine, instr: DeployInstruction, spec: FunctionSpec, wasm: bytes
    ) -> bool:
        """Load the control plane's precompiled code for this engine's tag when the
        deploy carries it, its sha256 verifies and the engine takes it; else compile
        the `.wasm` (counted, with why). Either way the code lands in the sealed
        compile cache the workers load from. True when precompiled code was used."""
        code = self._precompiled(engine, instr, spec)
        if code is not None:
            try:
                engine.compile(wasm, spec.limits, spec.wasi, precompiled=code).close()
                metrics.PRECOMPILED_LOADED.inc()
                return True
            except PrecompiledRefused as exc:
                log.warning("precompiled code of %s@%s refused, compiling the module: %s",
                            spec.id, spec.version, exc)
                metrics.PRECOMPILED_FALLBACK.labels(reason="refused").inc()
        engine.compile(wasm, spec.limits, spec.wasi).close()
        return False

    def _precompiled(
        self, engine: Engine, instr: DeployInstruction, spec: FunctionSpec
    ) -> bytes | None:
        """The deploy's precompiled code for `engine`'s tag, verified against the sha256
        it came with over the authenticated stream; None (counted) when there is none
        or it cannot be had whole."""
        entry = instr.precompiled_for(engine.tag)
        if entry is None:
            metrics.PRECOMPILED_FALLBACK.labels(reason="missing").inc()
            return None
        what = f"precompiled code of {spec.id}@{spec.version} for {entry.engine_tag}"
        try:
            with self._spans.span("download precompiled"):
                return self.cache.download(entry.url, entry.sha256, what)
        except DigestMismatch as exc:
            log.warning("%s refused, compiling the module: %s", what, exc)
            metrics.PRECOMPILED_FALLBACK.labels(reason="digest").inc()
        except ArtifactError as exc:
            log.warning("%s not fetched, compiling the module: %s", what, exc)
            metrics.PRECOMPILED_FALLBACK.labels(reason="download").inc()
        return None

    def engine_tags(self) -> list[str]:
        """The tags this node loads precompiled code of (none without an engine here)."""
        tag = self.engine.tag if self.engine is not None else ""
        return [tag] if tag else []

    def _artifact(self, spec: FunctionSpec, *, fresh: bool = False) -> bytes:
        """`spec`'s artifact from the cache, else downloaded: with the URL it came with
        unless `fresh`, and through a fresh URL from the control plane when that one
        fails (expired, or the store moved)."""
        fresh_url = self.fresh_url
        if not fresh or fresh_url is None:
            try:
                return self._cached_or_fetched(spec, lambda: spec.artifact_url)
            except ArtifactError:
                if fresh_url is None:
                    raise
        return self._cached_or_fetched(spec, lambda: fresh_url(spec.id, spec.version))

    def _cached_or_fetched(self, spec: FunctionSpec, url: Callable[[], str]) -> bytes:
        """The artifact from the cache if it is there and whole, else downloaded from
        `url()` (its sha256 checked as it streams)."""
        with self._spans.span("verify") as span:
            data = self.cache.get(spec.id, spec.version, spec.sha256)
            if span is not None:
                span.attributes["edgefn.cache_hit"] = str(data is not None).lower()
        if data is not None:
            return data
        where = url()
        if not where:
            raise ArtifactError(f"{spec.id}@{spec.version} is not cached and has no artifact URL")
        with self._spans.span("download"):
            return self.cache.fetch(spec.id, spec.version, spec.sha256, where,
                                    pinned=self._pinned())

    def repair(self, *, verify: bool = False, now: float | None = None) -> list[str]:
        """Fetch again every artifact of the state missing from the cache (with `verify`,
        also those failing their sha256: a full read, done at start), and every data
        archive no longer unpacked there. When any came
        back, the state's generation moves on so the workers retry loading them.
        One that could not be fetched waits before the next try (5 s, doubling up to
        5 min; `now` is the monotonic clock). Returns the `id@version` of those
        repaired."""
        with self._lock:
            repaired = []
            now = time.monotonic() if now is None else now
            for spec in self.state.specs():
                if not spec.artifact_url:  # a local functions directory: not ours to fetch
                    continue
                key = (spec.id, spec.version)
                next_try, delay = self._repair_backoff.get(key, (0.0, REPAIR_RETRY_S))
                if now < next_try:
                    continue
                if verify:
                    present = self.cache.get(spec.id, spec.version, spec.sha256) is not None
                else:
                    present = self.cache.has(spec.id, spec.version)
                data = spec.data
                unpacked = data is None or self._unpacked(data)
                if present and unpacked:
                    continue
                try:
                    if not present:
                        self._artifact(spec, fresh=True)
                    if data is not None and not unpacked:
                        self._data(spec, data, fresh=True)
                except EdgeError as exc:
                    log.warning("artifact of %s@%s is missing or corrupt and could not be "
                                "fetched again (next try in %g s): %s", spec.id, spec.version,
                                delay, exc)
                    self._repair_backoff[key] = (now + delay, min(delay * 2, REPAIR_RETRY_CAP_S))
                    continue
                self._repair_backoff.pop(key, None)
                log.warning("artifact of %s@%s was missing or corrupt: fetched again through "
                            "a fresh URL", spec.id, spec.version)
                repaired.append(f"{spec.id}@{spec.version}")
            if repaired:
                self._write()
            return repaired

    def _unpacked(self, data: DataArchive) -> bool:
        try:
            return self.cache.data_mounts(data.sha256, data.mounts) is not None
        except ArtifactError:
            return False

    def _undeploy(self, instr: UndeployInstruction) -> None:
        functions = tuple(f for f in self.state.functions if f.id != instr.function_id)
        table = tuple(r for r in self.state.route_table if r.function_id != instr.function_id)
        self.function_states.pop(instr.function_id, None)
        splits = {k: v for k, v in self.state.splits.items() if k != instr.function_id}
        if (functions != self.state.functions or table != self.state.route_table
                or splits != self.state.splits):
            self._write(functions=functions, route_table=table, splits=splits)

    def _config(self, instr: ConfigInstruction) -> None:
        if instr.routes != self.state.route_table or instr.quotas != self.state.quotas:
            self._write(route_table=instr.routes, quotas=instr.quotas)

    def _write(self, **changes: Any) -> None:
        # Validated before anything reaches the disk, yet not function by function
        # again: the records it is made of are validated already (read from the
        # file, or made from the instruction), and with 10,000 functions a full
        # validation would cost every deploy half a second or more.
        state = NodeState.model_validate(
            {**dict(self.state), **changes, "generation": self.state.generation + 1}
        )
        write_state(self.state_path, state)
        self.state = state

    def statuses(self) -> list[dict[str, str]]:
        return [{"id": fid, "version": v, "state": s}
                for fid, (v, s) in sorted(self.function_states.items())]

    def served(self) -> list[dict[str, str]]:
        """The statuses, and every other version the node's state still serves: a
        split's previous version, or the version serving while its successor loads."""
        statuses = self.statuses()
        seen = {(s["id"], s["version"]) for s in statuses}
        return [*statuses, *({"id": spec.id, "version": spec.version, "state": "cached"}
                             for spec in self.state.specs()
                             if (spec.id, spec.version) not in seen)]


def _subject(instr: Instruction) -> tuple[str, str]:
    """The function and version an instruction is about ("" where it names none)."""
    return getattr(instr, "function_id", ""), getattr(instr, "version", "")


def _about(instr: Instruction) -> str:
    function_id, version = _subject(instr)
    return f"{instr.type} {function_id}@{version}"


def _split(
    instr: DeployInstruction,
    existing: FunctionSpec | None,
    spec: FunctionSpec,
    held: SplitState | None,
) -> SplitState | None:
    """The function's split after deploying `spec` over `existing` (`held` its split
    before): none without one in the instruction, at 100% or with no earlier version;
    the same version deployed again keeps the previous version it was split with."""
    if instr.split is None or instr.split.percent == 100:
        return None
    if existing is not None and _module(existing) == _module(spec):
        previous = held.previous if held is not None else None
    else:
        previous = existing
    if previous is None:
        return None
    return SplitState(percent=instr.split.percent, key=instr.split.key, previous=previous)


def _module(spec: FunctionSpec) -> tuple[str, str, str]:
    return spec.id, spec.version, spec.sha256


def _owned(route: RouteSpec, spec: FunctionSpec) -> RouteSpec:
    """A deploy's route, serving its function for its project unless it names others."""
    return RouteSpec.model_validate({**dict(route),
                                     "function_id": route.function_id or spec.id,
                                     "project_id": route.project_id or spec.project_id})
