"""The secret store the settings name, opened once at start."""

from __future__ import annotations

from edgefn.controlplane.secrets.base import SecretStore
from edgefn.controlplane.settings import CPSettings


def open_secret_store(settings: CPSettings) -> SecretStore:
    if settings.secret_backend == "vault":
        from edgefn.controlplane.secrets.vault import VaultSecretStore

        return VaultSecretStore.from_settings(settings)
    from edgefn.controlplane.secrets.builtin import BuiltinSecretStore

    return BuiltinSecretStore.from_settings(settings)
