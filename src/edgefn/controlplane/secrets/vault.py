"""HashiCorp Vault (KV version 2) as the secret store, through `hvac`.

Each secret is one KV v2 entry `{vault_path_prefix}/{project_id}/{name}` on the
mount `vault_mount`, holding `{"value": ...}`; the control plane's row keeps no
value. Written against hvac's documented API (`secrets.kv.v2`
`create_or_update_secret`, `read_secret_version`,
`delete_metadata_and_all_versions`) and not exercised against a live Vault in
this repository's tests: docs/security.md says what to check when enabling it.
The token needs create, update, read and delete on `<mount>/data/<prefix>/*` and
delete on `<mount>/metadata/<prefix>/*`.
"""

from __future__ import annotations

from typing import Any

from edgefn.controlplane.errors import SecretStoreError
from edgefn.controlplane.settings import CPSettings


class VaultSecretStore:
    name = "vault"

    def __init__(self, client: Any, *, mount: str, prefix: str) -> None:
        self._kv = client.secrets.kv.v2
        self._mount = mount
        self._prefix = prefix.strip("/")

    @classmethod
    def from_settings(cls, settings: CPSettings) -> VaultSecretStore:
        try:
            import hvac
        except ImportError as exc:
            raise SecretStoreError(
                "secret_backend=vault needs hvac: pip install 'edgefn[vault]'"
            ) from exc
        token = settings.vault_token.get_secret_value() if settings.vault_token else None
        client = hvac.Client(url=settings.vault_url, token=token,
                             namespace=settings.vault_namespace)
        return cls(client, mount=settings.vault_mount, prefix=settings.vault_path_prefix)

    def _path(self, project_id: str, name: str) -> str:
        return f"{self._prefix}/{project_id}/{name}"

    def _call(self, what: str, name: str, fn: Any, **kwargs: Any) -> Any:
        import hvac.exceptions
        import requests

        try:
            return fn(mount_point=self._mount, **kwargs)
        except hvac.exceptions.InvalidPath:
            raise SecretStoreError(f"secret {name} is not in Vault") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            # Only the class: Vault's message can echo the request.
            raise SecretStoreError(
                f"Vault {what} of secret {name} failed ({type(exc).__name__})"
            ) from None

    def seal(self, project_id: str, name: str, value: str) -> None:
        self._call("write", name, self._kv.create_or_update_secret,
                   path=self._path(project_id, name), secret={"value": value})
        return None

    def unseal(self, project_id: str, name: str, sealed: bytes | None) -> str:
        answer = self._call("read", name, self._kv.read_secret_version,
                            path=self._path(project_id, name), raise_on_deleted_version=True)
        try:
            return str(answer["data"]["data"]["value"])
        except (KeyError, TypeError):
            raise SecretStoreError(f"Vault entry of secret {name} has no value") from None

    def remove(self, project_id: str, name: str) -> None:
        self._call("delete", name, self._kv.delete_metadata_and_all_versions,
                   path=self._path(project_id, name))
