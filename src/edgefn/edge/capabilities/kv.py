"""`kv_get` / `kv_put`: a function's own namespace in the node's store, under its `KvPolicy`.

The namespace is the function id, so one function can never name another's
keys. TTL rule: `ttl_seconds <= 0` asks for no expiry and gets the longest the
policy allows (`max_ttl_seconds`), because that cap is the operator's retention
limit and a zero must not slip past it; a TTL above the cap is refused (-3)
rather than silently shortened, so a guest never believes a value lives longer
than it will. Sizes are checked on both calls: a key too long to store is -3
for `kv_get` too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from edgefn.contract import KvPolicy
from edgefn.edge import green
from edgefn.edge.kv.base import KvStore
from edgefn.edge.kv.errors import KvError, KvQuotaExceeded
from edgefn.edge.spec import FunctionSpec
from edgefn.sandbox.hostcodes import FAILED, NOT_FOUND, QUOTA_EXCEEDED

log = logging.getLogger(__name__)
T = TypeVar("T")


class KvCapability:
    __slots__ = ("_namespace", "_policy", "_store")

    def __init__(self, namespace: str, policy: KvPolicy, store: KvStore) -> None:
        self._namespace = namespace
        self._policy = policy
        self._store = store

    def _call(self, op: Callable[[], T]) -> T:
        """A store call: as it is where the store waits on the loop by itself (or on a
        thread), else on the worker's blocking pool from a green task."""
        return op() if self._store.cooperative else green.run_blocking(op)

    @classmethod
    def configure(cls, spec: FunctionSpec, store: KvStore | None) -> KvCapability | None:
        """None (the host answers -2) unless the function enables KV and the node has a store."""
        if not spec.kv.enabled or store is None:
            return None
        return cls(spec.id, spec.kv, store)

    def get(self, key: bytes) -> bytes | int:
        if len(key) > self._policy.max_key_bytes:
            return QUOTA_EXCEEDED
        try:
            value = self._call(lambda: self._store.get(self._namespace, key))
        except Exception as exc:
            return self._failed("get", exc)
        return NOT_FOUND if value is None else value

    def put(self, key: bytes, value: bytes, ttl_seconds: int) -> int:
        policy = self._policy
        if (
            len(key) > policy.max_key_bytes
            or len(value) > policy.max_value_bytes
            or ttl_seconds > policy.max_ttl_seconds
        ):
            return QUOTA_EXCEEDED
        ttl = ttl_seconds if ttl_seconds > 0 else policy.max_ttl_seconds
        try:
            self._call(lambda: self._store.put(self._namespace, key, value, ttl,
                                               max_keys=policy.max_keys))
        except KvQuotaExceeded:
            return QUOTA_EXCEEDED
        except Exception as exc:
            return self._failed("put", exc)
        return 0

    def _failed(self, op: str, exc: Exception) -> int:
        # Anything raised here would trap the guest; a store fault is the guest's -4.
        if isinstance(exc, KvError):
            log.warning("kv %s failed for %s: %s", op, self._namespace, exc)
        else:
            log.exception("kv %s failed for %s", op, self._namespace)
        return FAILED
