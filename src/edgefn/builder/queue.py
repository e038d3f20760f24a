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
import queue
import threading
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
    def take(self, timeout_s: float) -> Job | None: ...
    def append_log(self, build_id: str, text: str) -> None: ...
    def complete(self, build_id: str, result: BuildResult) -> None: ...

    def close(self) -> None: ...


class MemoryQueue:
    """Jobs, logs and results in this process's memory."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[Job] = queue.Queue()
        self._done: queue.Queue[tuple[str, BuildResult]] = queue.Queue()
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
        with self._lock:
            self._running.add(job.build_id)
            self._logs.setdefault(job.build_id, [])
        return job

    def append_log(self, build_id: str, text: str) -> None:
        with self._lock:
            self._logs.setdefault(build_id, []).append(text)

    def complete(self, build_id: str, result: BuildResult) -> None:
        self._done.put((build_id, result))

    def collect(self, timeout_s: float) -> tuple[str, BuildResult] | None:
        try:
            build_id, result = self._done.get(timeout=timeout_s)
        except queue.Empty:
            return None
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

    def close(self) -> None:
        pass


class RedisQueue:
    """The same over Redis: a list of pending job ids, one key per job, log and
    result, and a list of finished ids that the control planes pop from. Keys
    expire after `ttl_s`, so a build whose collector vanished leaves nothing."""

    def __init__(self, url: str, *, prefix: str = "edgefn:builds", ttl_s: int = 86400) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix
        self._ttl = ttl_s
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)

    def _key(self, build_id: str, what: str) -> str:
        return f"{self._prefix}:{build_id}:{what}"

    def submit(self, job: Job) -> None:
        pipe = self._redis.pipeline()
        pipe.set(self._key(job.build_id, "job"), job.to_json(), ex=self._ttl)
        pipe.rpush(f"{self._prefix}:pending", job.build_id)
        pipe.execute()

    def take(self, timeout_s: float) -> Job | None:
        popped = self._redis.blpop([f"{self._prefix}:pending"], timeout=max(1, int(timeout_s)))
        if popped is None:
            return None
        build_id = _text(popped[1])
        text = self._redis.get(self._key(build_id, "job"))
        if text is None:
            return None
        self._redis.set(self._key(build_id, "running"), "1", ex=self._ttl)
        self._redis.delete(self._key(build_id, "job"))
        return Job.from_json(text)

    def append_log(self, build_id: str, text: str) -> None:
        key = self._key(build_id, "log")
        self._redis.append(key, text.encode())
        self._redis.expire(key, self._ttl)

    def complete(self, build_id: str, result: BuildResult) -> None:
        pipe = self._redis.pipeline()
        pipe.set(self._key(build_id, "result"), result_to_json(result), ex=self._ttl)
        pipe.rpush(f"{self._prefix}:done", build_id)
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

    def close(self) -> None:
        self._redis.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
