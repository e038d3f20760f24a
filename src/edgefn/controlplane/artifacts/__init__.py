"""Where module bytes live: one `ArtifactStore` protocol, a local-directory and an
S3 implementation, and the signed URLs nodes and clients use to reach them."""

from __future__ import annotations

from edgefn.controlplane.artifacts.base import (
    ArtifactStore,
    artifact_key,
    data_key,
    staging_key,
)
from edgefn.controlplane.artifacts.local import LocalArtifactStore
from edgefn.controlplane.artifacts.signing import UrlSigner
from edgefn.controlplane.settings import CPSettings


def open_store(settings: CPSettings, signer: UrlSigner) -> ArtifactStore:
    """The store the settings ask for."""
    if settings.artifact_store == "s3":
        from edgefn.controlplane.artifacts.s3 import S3ArtifactStore

        assert settings.s3_bucket is not None  # checked by CPSettings
        secret = settings.s3_secret_access_key
        return S3ArtifactStore(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            create_bucket=settings.s3_create_bucket,
        )
    return LocalArtifactStore(
        settings.resolved_artifact_dir(), signer=signer, public_url=settings.resolved_public_url()
    )


__all__ = [
    "ArtifactStore",
    "LocalArtifactStore",
    "UrlSigner",
    "artifact_key",
    "data_key",
    "open_store",
    "staging_key",
]
