"""Artifacts in a local directory, reachable through HMAC-signed CP URLs."""

from __future__ import annotations

from pathlib import Path

from edgefn.atomicfile import private_dir, write_atomic
from edgefn.controlplane.artifacts.signing import UrlSigner
from edgefn.controlplane.errors import ArtifactStoreError, NotFound

# The CP routes that serve signed local URLs (see artifacts/api.py).
DOWNLOAD_PREFIX = "/api/v1/artifacts/"
UPLOAD_PREFIX = "/api/v1/uploads/"


class LocalArtifactStore:
    def __init__(self, root: Path, *, signer: UrlSigner, public_url: str) -> None:
        self.root = root.resolve()
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        private_dir(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        # Keys come from our own layout, but a signed URL carries one in its path:
        # never let it climb out of the root.
        if not path.is_relative_to(self.root):
            raise NotFound(f"no artifact {key!r}")
        return path

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        try:
            write_atomic(path, [data])
        except OSError as exc:
            raise ArtifactStoreError(f"cannot write artifact {key}: {exc}") from exc
        return f"local:{key}"

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"no artifact {key!r}") from exc
        except OSError as exc:
            raise ArtifactStoreError(f"cannot read artifact {key}: {exc}") from exc

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def presign_get(self, key: str, expires_in: int) -> str:
        return self.public_url + self.signer.sign("GET", DOWNLOAD_PREFIX + key, expires_in)

    def presign_put(self, key: str, expires_in: int) -> str:
        return self.public_url + self.signer.sign("PUT", UPLOAD_PREFIX + key, expires_in)
