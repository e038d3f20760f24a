"""The built-in secret store: AES-256-GCM in the database, the key outside it.

Each value is sealed with a fresh 96-bit nonce, and the associated data binds the
ciphertext to its project and name: a row copied to another project or renamed
does not open. The key comes from `EDGEFN_SECRETS_KEY` (base64 of 32 bytes) or a
key file (`EDGEFN_SECRETS_KEY_FILE`, default `data_dir/secrets.key`) created
with mode 0600 on first start. A database dump alone therefore reveals names,
never values; losing the key loses every value.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edgefn.controlplane.errors import SecretStoreError
from edgefn.controlplane.settings import CPSettings

log = logging.getLogger(__name__)

KEY_BYTES = 32
_FORMAT = b"\x01"  # format byte, then nonce, then ciphertext and tag
_NONCE_BYTES = 12
_TAG_BYTES = 16


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{where} is not base64") from exc
    if len(key) != KEY_BYTES:
        raise ValueError(f"{where} must be {KEY_BYTES} bytes in base64 (it is {len(key)})")
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`, created (0600, exclusively: two replicas starting together
    end with one key) when the file does not exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            log.warning("secrets key file %s is readable by others (mode %o)", path, mode)
        return _decode_key(path.read_text(), str(path))
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(key).decode() + "\n")
        f.flush()
        os.fsync(f.fileno())
    log.info("created the secrets key %s; back it up: without it no secret opens", path)
    return key


def _aad(project_id: str, name: str) -> bytes:
    # Neither ids nor names can hold a NUL, so the encoding is unambiguous.
    return b"edgefn-secret-v1\x00" + project_id.encode() + b"\x00" + name.encode()


class BuiltinSecretStore:
    name = "builtin"

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the secrets key must be {KEY_BYTES} bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: CPSettings) -> BuiltinSecretStore:
        if settings.secrets_key is not None:
            return cls(_decode_key(settings.secrets_key.get_secret_value(), "secrets_key"))
        return cls(load_or_create_key(settings.resolved_secrets_key_file()))

    def seal(self, project_id: str, name: str, value: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT + nonce + self._aead.encrypt(nonce, value.encode(), _aad(project_id, name))

    def unseal(self, project_id: str, name: str, sealed: bytes | None) -> str:
        if (
            sealed is None
            or len(sealed) < 1 + _NONCE_BYTES + _TAG_BYTES
            or sealed[:1] != _FORMAT
        ):
            raise SecretStoreError(f"secret {name} has no sealed value this store can read")
        nonce, ciphertext = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, ciphertext, _aad(project_id, name)).decode()
        except InvalidTag:
            raise SecretStoreError(
                f"secret {name} does not open: another key, or the row was altered or moved"
            ) from None

    def remove(self, project_id: str, name: str) -> None:
        """Nothing outside the row to forget."""
