"""The `Host` an engine calls during one invocation, built from the function's capabilities.

`FunctionHost` is configured once per function version (deny by default);
`InvocationHost` is the cheap per-request object the engine is handed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from edgefn.edge import green
from edgefn.edge.capabilities.env import EnvCapability
from edgefn.edge.capabilities.log import LogCapability
from edgefn.edge.capabilities.metrics import MetricsCapability
from edgefn.edge.capabilities.secrets import SecretsCapability
from edgefn.edge.logs import JsonLog
from edgefn.edge.spec import FunctionSpec
from edgefn.sandbox.hostcodes import DENIED, FAILED, NOT_FOUND


class KvBinding(Protocol):
    def get(self, key: bytes) -> bytes | int: ...

    def put(self, key: bytes, value: bytes, ttl_seconds: int) -> int: ...


class FetchBinding(Protocol):
    def fetch(
        self, request: bytes, *, timeout_s: float, traceparent: str | None = None
    ) -> bytes | int: ...

    def close(self) -> None: ...


@dataclass(slots=True)
class FunctionHost:
    """A function version's configured capabilities; None where it has none."""

    spec: FunctionSpec
    log: LogCapability
    env: EnvCapability
    metrics: MetricsCapability
    kv: KvBinding | None = None
    fetch: FetchBinding | None = None
    secrets: SecretsCapability | None = None

    @classmethod
    def configure(
        cls,
        spec: FunctionSpec,
        *,
        log: JsonLog,
        node_id: str,
        kv: KvBinding | None = None,
        fetch: FetchBinding | None = None,
        secrets: SecretsCapability | None = None,
    ) -> FunctionHost:
        return cls(
            spec=spec,
            log=LogCapability.configure(spec, log, node_id),
            env=EnvCapability.configure(spec),
            metrics=MetricsCapability.configure(spec),
            kv=kv,
            fetch=fetch,
            secrets=secrets,
        )


    def close(self) -> None:
        """Release what the function version holds (outbound connection pools)."""
        if self.fetch is not None:
            self.fetch.close()


class InvocationHost:
    """Implements `edgefn.sandbox.engine.Host` for one request."""

    __slots__ = (
        "_fn",
        "_header_map",
        "_headers",
        "_log_bytes",
        "_rid",
        "deadline",
        "request_id_text",
        "traceparent",
    )

    def __init__(
        self,
        fn: FunctionHost,
        request_id: str,
        headers: list[tuple[bytes, bytes]],
        deadline: float,
        traceparent: str | None = None,
    ) -> None:
        self._fn = fn
        self.request_id_text = request_id
        self._rid = request_id.encode()
        self._headers = headers
        self._header_map: dict[bytes, bytes] | None = None
        self.deadline = deadline
        self.traceparent = traceparent
        self._log_bytes = 0

    def remaining_seconds(self) -> float:
        return self.deadline - time.monotonic()

    # -- logging --------------------------------------------------------------
    def _within_log_budget(self, n: int) -> bool:
        self._log_bytes += n
        return self._log_bytes <= self._fn.log.max_bytes

    def log(self, level: int, message: bytes) -> None:
        if self._within_log_budget(len(message)):
            self._fn.log.write(self.request_id_text, level, message)

    def output(self, stream: int, data: bytes) -> None:
        if data and self._within_log_budget(len(data)):
            self._fn.log.write(
                self.request_id_text, 1 if stream == 1 else 3, data,
                "stdout" if stream == 1 else "stderr",
            )

    # -- data -----------------------------------------------------------------
    def metrics_increment(self, name: bytes, value: float, tags: bytes) -> None:
        self._fn.metrics.increment(name, value, tags)

    # In a green task, the fetch's sockets and Redis over TCP wait on the loop; KV
    # stores that block (capabilities/kv.py) and the secrets broker run on the worker's
    # blocking pool meanwhile (`green.run_blocking`); on a thread, all block as before.
    def kv_get(self, key: bytes) -> bytes | int:
        kv = self._fn.kv
        return DENIED if kv is None else kv.get(key)

    def kv_put(self, key: bytes, value: bytes, ttl_seconds: int) -> int:
        kv = self._fn.kv
        return DENIED if kv is None else kv.put(key, value, ttl_seconds)

    def http_fetch(self, request: bytes) -> bytes | int:
        fetch = self._fn.fetch
        if fetch is None:
            return DENIED
        remaining = self.remaining_seconds()
        if remaining <= 0:
            return FAILED
        return fetch.fetch(request, timeout_s=remaining, traceparent=self.traceparent)

    def env_get(self, key: bytes) -> bytes | int:
        return self._fn.env.get(key)

    def request_id(self) -> bytes | int:
        return self._rid

    def secret_get(self, name: bytes) -> bytes | int:
        secrets = self._fn.secrets
        if secrets is None:
            return DENIED
        return green.run_blocking(secrets.get, name, self.remaining_seconds())

    def request_header(self, name: bytes) -> bytes | int:
        if self._header_map is None:
            merged: dict[bytes, bytes] = {}
            for k, v in self._headers:
                merged[k] = merged[k] + b", " + v if k in merged else v
            self._header_map = merged
        value = self._header_map.get(name.lower())
        return NOT_FOUND if value is None else value
