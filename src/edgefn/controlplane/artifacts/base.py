"""The contract every artifact backend keeps, and the key layout they share."""

from __future__ import annotations

from typing import Protocol


def artifact_key(function_id: str, version: str) -> str:
    return f"functions/{function_id}/{version}.wasm"


def data_key(function_id: str, version: str) -> str:
    """A version's data archive, beside its module (docs/wagi.md, Volumes)."""
    return f"functions/{function_id}/{version}.data.tar.gz"


def staging_key(function_id: str) -> str:
    """Where a direct upload through `upload_url` lands before it becomes a version."""
    return f"functions/{function_id}/staging/upload.wasm"


class ArtifactStore(Protocol):
    """Bytes by key. Backends raise only `ArtifactStoreError` (and `NotFound` on a
    missing key from `get`)."""

    def put(self, key: str, data: bytes) -> str:
        """Store `data` under `key`; return the artifact's canonical URL."""
        ...

    def get(self, key: str) -> bytes: ...

    def size(self, key: str) -> int | None:
        """Size in bytes, or None when the key does not exist."""
        ...

    def delete(self, key: str) -> None: ...

    def presign_get(self, key: str, expires_in: int) -> str:
        """A URL anyone holding it can GET for `expires_in` seconds."""
        ...

    def presign_put(self, key: str, expires_in: int) -> str:
        """A URL anyone holding it can PUT bytes to for `expires_in` seconds."""
        ...
