"""HMAC-signed, expiring URLs for artifacts served by the CP itself (local store)."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode


class UrlSigner:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"edgefn-url-signing:" + secret.encode()).digest()

    def _mac(self, method: str, path: str, expires: int) -> str:
        msg = f"{method.upper()}\n{path}\n{expires}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def sign(self, method: str, path: str, expires_in: int, *, now: float | None = None) -> str:
        """`path?expires=..&sig=..` for `method` on `path`."""
        expires = int((time.time() if now is None else now) + expires_in)
        query = urlencode({"expires": expires, "sig": self._mac(method, path, expires)})
        return f"{path}?{query}"

    def verify(self, method: str, path: str, expires: int, sig: str) -> bool:
        if expires < time.time():
            return False
        return hmac.compare_digest(self._mac(method, path, expires), sig)
