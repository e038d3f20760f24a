"""The secret store's contract: where a project's secret values live.

The service keeps one row per secret (project, name, who changed it and when) in
the database whatever the store; the store decides where the value goes. `seal`
takes a value and returns what the row keeps (the built-in store's ciphertext),
or None when the value went elsewhere (Vault); `unseal` gets that back and
returns the value; `remove` forgets a value kept elsewhere. Every method raises
`SecretStoreError` (502) and nothing else.
"""

from __future__ import annotations

from typing import Protocol


class SecretStore(Protocol):
    # Recorded on each row, so a value is never read through the wrong store.
    name: str

    def seal(self, project_id: str, name: str, value: str) -> bytes | None: ...

    def unseal(self, project_id: str, name: str, sealed: bytes | None) -> str: ...

    def remove(self, project_id: str, name: str) -> None: ...
