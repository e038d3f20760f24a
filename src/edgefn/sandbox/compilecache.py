"""Compiled machine code kept on disk, sealed so that only code this node compiled runs.

Engines cache what they compile (wasmtime's serialized modules, WasmEdge's AOT
output) so that a version is compiled once per node, not once per worker or
restart. Loading that file is running it: an engine trusts serialized code as
it trusts its own compiler. So every file carries a keyed MAC (HMAC-SHA256) of
its bytes, bound to the sha256 of the `.wasm` it was compiled from and to the
engine, its version and its settings; a file whose MAC does not match (damaged,
from another node or another engine version, or the compiled code of another
module put in its place) is deleted, reported through `on_reject`, and the
module is compiled again from its verified `.wasm`.

The key lives outside the cache directory (by default `{data_dir}/compile.key`,
0600). What that does and does not protect against is in docs/security.md,
"Integrity of what runs".
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgefn.atomicfile import PARTIAL_PREFIX, private_dir, read_secret, write_atomic

log = logging.getLogger("edgefn.sandbox")

_MAGIC = b"edgefn-sealed-code-v1\n"
_MAC_SIZE = hashlib.sha256().digest_size
_KEY_BYTES = 32
SUFFIX = ".cwasm"


def load_or_create_key(path: Path) -> bytes:
    """The node's compile-cache key: 32 random bytes, hex in a 0600 file made on first use."""
    if not path.exists():
        private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(_KEY_BYTES) + "\n")
                f.flush()
                os.fsync(f.fileno())
            # A hard link never replaces: when several processes start at once, the
            # first key in place wins, complete, and every process reads that one.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    try:
        key = bytes.fromhex(read_secret(path))
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ValueError(f"{path} does not hold a compile-cache key (64 hex digits)")
    return key


class CompileCache:
    """Sealed compiled code under `root`, one file per (source module, engine). Thread-safe
    and shared by processes: each write is an atomic rename."""

    def __init__(
        self,
        root: Path,
        key: bytes,
        *,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.root = private_dir(root)
        self._key = key
        self._on_reject = on_reject
        self.rejected = 0

    @classmethod
    def open(
        cls, root: Path, key_file: Path, *, on_reject: Callable[[str], None] | None = None
    ) -> CompileCache:
        return cls(root, load_or_create_key(key_file), on_reject=on_reject)

    def path_for(self, source_sha256: str, engine_id: str) -> Path:
        name = hashlib.sha256(f"{engine_id}\n{source_sha256}".encode()).hexdigest()
        return self.root / f"{name}{SUFFIX}"

    def _mac(self, source_sha256: str, engine_id: str, code: bytes) -> bytes:
        mac = hmac.new(self._key, _MAGIC, hashlib.sha256)
        mac.update(f"{engine_id}\n{source_sha256}\n".encode())
        mac.update(code)
        return mac.digest()

    def load(self, source_sha256: str, engine_id: str) -> bytes | None:
        """The compiled code of `source_sha256` for `engine_id`, verified; None when there
        is none or it fails its check (then the file is gone)."""
        path = self.path_for(source_sha256, engine_id)
        try:
            with open(path, "rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                # Header and code read apart: the code is not copied again to slice it.
                header = f.read(len(_MAGIC) + _MAC_SIZE)
                code = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read compiled code %s: %s", path, exc)
            return None
        if code and header.startswith(_MAGIC):
            sealed = header[len(_MAGIC):]
            if hmac.compare_digest(sealed, self._mac(source_sha256, engine_id, code)):
                return code
        self.reject(source_sha256, engine_id, "its seal does not match", inode=inode)
        return None

    def store(self, source_sha256: str, engine_id: str, code: bytes) -> None:
        """Seal and keep `code`; a cache that cannot be written only costs a compile later."""
        path = self.path_for(source_sha256, engine_id)
        mac = self._mac(source_sha256, engine_id, code)
        try:
            write_atomic(path, [_MAGIC, mac, code])
        except OSError as exc:
            log.warning("cannot keep compiled code in %s: %s", self.root, exc)

    def reject(
        self, source_sha256: str, engine_id: str, reason: str, *, inode: int | None = None
    ) -> None:
        """Delete a compiled file that must not run (failed its seal, or the engine refused
        it), log it and count it; the caller compiles again from the `.wasm`."""
        path = self.path_for(source_sha256, engine_id)
        with contextlib.suppress(OSError):
            # Only the file that was checked: another process may have replaced it
            # with a good one in the meantime.
            if inode is None or os.stat(path).st_ino == inode:
                path.unlink()
        self.rejected += 1
        log.warning(
            "compiled code %s for module sha256 %s (%s) refused: %s; compiling it again "
            "from the verified module", path.name, source_sha256, engine_id, reason,
        )
        if self._on_reject is not None:
            self._on_reject(reason)


__all__ = ["SUFFIX", "CompileCache", "load_or_create_key"]
