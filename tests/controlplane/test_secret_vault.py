"""The Vault adapter against the real `hvac` client. No Vault server runs here and
none is faked: these tests check that every call the adapter makes is one hvac's
KV v2 API accepts (a wrong name or keyword would raise before any request), and
that hvac's and requests' errors become `SecretStoreError` without the value or
the token in the message. Behaviour against a live Vault is not tested."""

from __future__ import annotations

import pytest

from edgefn.controlplane.errors import SecretStoreError
from edgefn.controlplane.secrets import open_secret_store
from edgefn.controlplane.secrets.vault import VaultSecretStore
from edgefn.controlplane.settings import CPSettings

VALUE = "vault-bound-value-0123"
TOKEN = "hvs.test-token-0123456789"


def _store(port: int) -> VaultSecretStore:
    settings = CPSettings(secret_backend="vault", vault_url=f"http://127.0.0.1:{port}",
                          vault_token=TOKEN, vault_mount="kv", vault_path_prefix="edgefn")
    store = open_secret_store(settings)
    assert isinstance(store, VaultSecretStore)
    return store


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("op", ["seal", "unseal", "remove"])
def test_every_call_is_accepted_by_hvac_and_failures_are_translated(op: str) -> None:
    store = _store(_closed_port())
    with pytest.raises(SecretStoreError) as caught:
        if op == "seal":
            store.seal("project-a", "API_KEY", VALUE)
        elif op == "unseal":
            store.unseal("project-a", "API_KEY", None)
        else:
            store.remove("project-a", "API_KEY")
    message = caught.value.message
    assert "API_KEY" in message and "ConnectionError" in message
    assert VALUE not in message and TOKEN not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_vault_settings_are_required() -> None:
    with pytest.raises(ValueError, match="vault_url and vault_token"):
        CPSettings(secret_backend="vault")
