"""The `KvStore` contract every key-value backend implements, and the rules they share.

A store holds opaque byte keys and values in namespaces (one per function); it
knows nothing of policies beyond the atomic `max_keys` check, which only the
backend can make race-free across threads, processes and nodes.
"""

from __future__ import annotations

import re
from typing import Protocol

# Function ids (spec.py) fit this; no ':' so `namespace:key` can never be ambiguous.
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class KvStore(Protocol):
    """A thread-safe key-value backend. Every failure raises `KvUnavailable`.

    `cooperative`: its calls wait on the event loop when made in a green task
    (`edge.green`); False: they block their thread, and a green task runs them on
    its worker's blocking pool."""

    cooperative: bool

    def get(self, namespace: str, key: bytes) -> bytes | None:
        """The live value of `key`, or None when it is absent or expired."""
        ...

    def put(
        self,
        namespace: str,
        key: bytes,
        value: bytes,
        ttl_seconds: int | None,
        *,
        max_keys: int | None = None,
    ) -> None:
        """Store `value`; it expires after `ttl_seconds` (> 0), or never when None.

        With `max_keys`, a key not yet live in the namespace is refused with
        `KvQuotaExceeded` when the namespace already holds that many live keys;
        the check and the write are one atomic step.
        """
        ...

    def count(self, namespace: str) -> int:
        """Live (unexpired) keys in the namespace."""
        ...

    def close(self) -> None: ...


def check_namespace(namespace: str) -> str:
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"invalid kv namespace {namespace!r}")
    return namespace


def check_ttl(ttl_seconds: int | None) -> int | None:
    if ttl_seconds is not None and ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive, or None for no expiry")
    return ttl_seconds
