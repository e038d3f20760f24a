"""Projects' secrets: write-only values, sealed at rest, read only by the nodes that
run a function listing them (docs/security.md, Secrets)."""

from edgefn.controlplane.secrets.base import SecretStore
from edgefn.controlplane.secrets.factory import open_secret_store

__all__ = ["SecretStore", "open_secret_store"]
