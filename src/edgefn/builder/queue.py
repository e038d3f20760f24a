"""The build queue between whoever accepts builds (the control plane) and whoever
runs them (its own worker threads, or `edgefn build-worker` processes).

One narrow protocol, two backends: `MemoryQueue` inside one process (the
embedded mode), `RedisQueue` across machines. Workers only ever talk to the
queue: they take a job (the archive travels with it), stream its log into the
queue, and hand back the result; they never see the database or the artifact
store. The control plane collects results and turns them into versions.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import socket
import threading
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from edgefn.builder.job import BuildResult


@dataclass(frozen=True)
class Job:
    build_id: str
    language: str
    source: bytes
    allow_critical: bool = False
    timeout_s: float = 120.0
    max_output_bytes: int = 10 * 1024 * 1024

    def to_json(self) -> str:
        body = asdict(self)
        body["source"] = base64.b64encode(self.source).decode()
        return json.dumps(body)

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        body = json.loads(text)
        body["source"] = base64.b64decode(body["source"])
        return cls(**body)


def result_to_json(result: BuildResult) -> str:
    return json.dumps(
        {
            "wasm": base64.b64encode(result.wasm).decode() if result.wasm is not None else None,
            "error": result.error,
            "scan": result.scan,
        }
    )


def result_from_json(text: str | bytes, log: str) -> BuildResult:
    body: dict[str, Any] = json.loads(text)
    wasm = base64.b64decode(body["wasm"]) if body.get("wasm") is not None else None
    return BuildResult(wasm=wasm, error=body.get("error"), scan=body.get("scan"), log=[log])


class BuildQueue(Protocol):
    # -- the accepting side
    def submit(self, job: Job) -> None: ...
    def collect(self, timeout_s: float) -> tuple[str, BuildResult] | None: ...
    def log(self, build_id: str) -> str: ...
    def is_running(self, build_id: str) -> bool: ...
    def forget(self, build_id: str) -> None: ...

    # -- the worker side
    # How often a worker building a job calls `renew` for it.
    renew_every_s: float

    def take(self, timeout_s: float) -> Job | None: ...
    def renew(self, build_id: str) -> None: ...
    def append_log(self, build_id: str, text: str) -> None: ...
    def complete(self, build_id: str, result: BuildResult) -> None: ...

    # Wakes every `take` and `collect` waiting, to answer None, for a stop that does
    # not wait out their timeouts (where the queue can; Redis's waits end within 1 s).
    def wake(self) -> None: ...
    def close(self) -> None: ...


class MemoryQueue:
    """Jobs, logs and results in this process's memory: its workers die with it,
    so there is no lease to renew."""

    renew_every_s = 60.0

    def __init__(self) -> None:
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._done: queue.Queue[tuple[str, BuildResult] | None] = queue.Queue()
        self._logs: dict[str, list[str]] = {}
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def submit(self, job: Job) -> None:
        self._jobs.put(job)

    def take(self, timeout_s: float) -> Job | None:
        try:
            job = self._jobs.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if job is None:  # woken: the next waiter sees it too
            self._jobs.put(None)
            return None
        with self._lock:
            self._running.add(job.build_id)
            self._logs.setdefault(job.build_id, [])
        return job

    def renew(self, build_id: str) -> None:
        pass

    def append_log(self, build_id: str, text: str) -> None:
        with self._lock:
            self._logs.setdefault(build_id, []).append(text)

    def complete(self, build_id: str, result: BuildResult) -> None:
        self._done.put((build_id, result))

    def collect(self, timeout_s: float) -> tuple[str, BuildResult] | None:
        try:
            done = self._done.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if done is None:
            self._done.put(None)
            return None
        build_id, result = done
        return build_id, BuildResult(result.wasm, result.error, result.scan, [self.log(build_id)])

    def log(self, build_id: str) -> str:
        with self._lock:
            return "".join(self._logs.get(build_id, ()))

    def is_running(self, build_id: str) -> bool:
        with self._lock:
            return build_id in self._running

    def forget(self, build_id: str) -> None:
        with self._lock:
            self._running.discard(build_id)
            self._logs.pop(build_id, None)

    def wake(self) -> None:
        self._jobs.put(None)
        self._done.put(None)

    def close(self) -> None:
        pass


class RedisQueue:
    """The same over Redis. Jobs are entries of a stream read by one consumer
    group, so a job taken is pending against the worker that took it until that
    worker acknowledges it with the result. A worker renews its lease on a job
    every `lease_s / 3` while it builds; a job whose lease ran out (its worker was
    killed, or lost Redis) is claimed by the next worker that asks for one
    (XAUTOCLAIM), at most `max_attempts` deliveries in all, after which the build
    fails saying so. The archive, log and result are keys of their own; a list of
    finished ids is what the control planes pop from. Keys expire after `ttl_s`,
    so a build whose collector vanished leaves nothing."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "edgefn:builds",
        ttl_s: int = 86400,
        lease_s: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix
        self._ttl = ttl_s
        self._lease_ms = max(1, int(lease_s * 1000))
        self.renew_every_s = lease_s / 3
        self._max_attempts = max_attempts
        self._stream = f"{prefix}:jobs"
        self._group = "workers"
        # One consumer per queue object; the threads of a worker share it.
        self._consumer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._entries: dict[str, str] = {}  # build id -> stream entry id, jobs taken here
        self._lock = threading.Lock()
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        try:
            self._redis.xgroup_create(self._stream, self._group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _key(self, build_id: str, what: str) -> str:
        return f"{self._prefix}:{build_id}:{what}"

    def submit(self, job: Job) -> None:
        pipe = self._redis.pipeline()
        pipe.set(self._key(job.build_id, "job"), job.to_json(), ex=self._ttl)
        pipe.xadd(self._stream, {"build": job.build_id})
        pipe.execute()

    def take(self, timeout_s: float) -> Job | None:
        """A job whose worker stopped, else a new one (waiting up to `timeout_s`)."""
        claimed: Any
        _next, claimed, *_ = self._redis.xautoclaim(
            self._stream, self._group, self._consumer, self._lease_ms, "0-0", count=1
        )
        if claimed:
            entry_id, fields = claimed[0]
            return self._start(_text(entry_id), fields, redelivered=True)
        answer: Any = self._redis.xreadgroup(
            self._group, self._consumer, {self._stream: ">"}, count=1,
            block=max(1, int(timeout_s * 1000)),
        )
        if not answer:
            return None
        entry_id, fields = answer[0][1][0]
        return self._start(_text(entry_id), fields, redelivered=False)

    def _start(self, entry_id: str, fields: Any, *, redelivered: bool) -> Job | None:
        build_id = _text(fields.get(b"build") or fields.get("build") or b"") if fields else ""
        text = self._redis.get(self._key(build_id, "job")) if build_id else None
        if text is None:  # forgotten or expired meanwhile
            self._done_with(entry_id)
            return None
        if redelivered:
            pending = self._redis.xpending_range(
                self._stream, self._group, min=entry_id, max=entry_id, count=1
            )
            attempt = int(pending[0]["times_delivered"]) if pending else self._max_attempts + 1
            if attempt > self._max_attempts:
                self.append_log(
                    build_id, f"[the build's worker stopped; {self._max_attempts} attempts made]\n"
                )
                with self._lock:
                    self._entries[build_id] = entry_id
                self.complete(build_id, BuildResult(error=(
                    f"no build worker finished the build in {self._max_attempts} attempts: "
                    "each one stopped (killed, or cut off from Redis) before it ended"
                )))
                return None
            self.append_log(
                build_id,
                f"[the worker building this stopped; attempt {attempt} of {self._max_attempts}]\n",
            )
        with self._lock:
            self._entries[build_id] = entry_id
        self._redis.set(self._key(build_id, "running"), "1", px=self._lease_ms)
        return Job.from_json(text)

    def renew(self, build_id: str) -> None:
        """Keep the lease on a job this worker is building."""
        with self._lock:
            entry_id = self._entries.get(build_id)
        if entry_id is None:
            return
        pending: Any = self._redis.xpending_range(
            self._stream, self._group, min=entry_id, max=entry_id, count=1
        )
        if not pending or _text(pending[0]["consumer"]) != self._consumer:
            return  # another worker took it over; its result will count
        self._redis.xclaim(
            self._stream, self._group, self._consumer, 0, [entry_id], justid=True
        )
        self._redis.set(self._key(build_id, "running"), "1", px=self._lease_ms)

    def append_log(self, build_id: str, text: str) -> None:
        key = self._key(build_id, "log")
        self._redis.append(key, text.encode())
        self._redis.expire(key, self._ttl)

    def complete(self, build_id: str, result: BuildResult) -> None:
        pipe = self._redis.pipeline()
        pipe.set(self._key(build_id, "result"), result_to_json(result), ex=self._ttl)
        pipe.rpush(f"{self._prefix}:done", build_id)
        pipe.delete(self._key(build_id, "job"))
        pipe.execute()
        with self._lock:
            entry_id = self._entries.pop(build_id, None)
        if entry_id is not None:
            self._done_with(entry_id)

    def _done_with(self, entry_id: str) -> None:
        pipe = self._redis.pipeline()
        pipe.xack(self._stream, self._group, entry_id)
        pipe.xdel(self._stream, entry_id)
        pipe.execute()

    def collect(self, timeout_s: float) -> tuple[str, BuildResult] | None:
        popped = self._redis.blpop([f"{self._prefix}:done"], timeout=max(1, int(timeout_s)))
        if popped is None:
            return None
        build_id = _text(popped[1])
        text = self._redis.get(self._key(build_id, "result"))
        if text is None:
            return None
        return build_id, result_from_json(text, self.log(build_id))

    def log(self, build_id: str) -> str:
        raw = self._redis.get(self._key(build_id, "log"))
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""

    def is_running(self, build_id: str) -> bool:
        return bool(self._redis.exists(self._key(build_id, "running")))

    def forget(self, build_id: str) -> None:
        self._redis.delete(*(self._key(build_id, w) for w in ("job", "log", "result", "running")))

    def wake(self) -> None:
        pass

    def close(self) -> None:
        self._redis.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
