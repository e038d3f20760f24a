"""The WSGI application each server worker runs, and its bootstrap.

Granian's WSGI interface was chosen by measurement (docs/performance.md): it
runs each request on a pool of blocking threads, which is what a WebAssembly
call needs anyway (host functions are synchronous and the engine releases the
GIL while the guest runs), without an event-loop-to-thread hop per request.
"""

from __future__ import annotations

import http
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from edgefn import redact
from edgefn.edge.runtime import HttpRequest, Runtime
from edgefn.edge.settings import WORKER_CONFIG_ENV, EdgeSettings
from edgefn.edge.spec import read_state

log = logging.getLogger("edgefn.edge")

_REASONS = {s.value: f"{s.value} {s.phrase}" for s in http.HTTPStatus}
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def _status_line(status: int) -> str:
    return _REASONS.get(status) or f"{status} Status"


def _request_target(path: str) -> str:
    # The server hands over a percent-decoded path; re-encode what must be.
    if path.isascii() and " " not in path and "%" not in path and "?" not in path:
        return path
    return quote(path, safe=_PATH_SAFE)


class EdgeApp:
    """WSGI callable: environ in, `Runtime.handle`, status + headers + body out."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        headers: list[tuple[bytes, bytes]] = []
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers.append(
                    (key[5:].lower().replace("_", "-").encode("latin-1"), value.encode("latin-1"))
                )
        content_type = environ.get("CONTENT_TYPE")
        if content_type:
            headers.append((b"content-type", content_type.encode("latin-1")))
        content_length: int | None = None
        raw_length = environ.get("CONTENT_LENGTH")
        if raw_length:
            try:
                content_length = int(raw_length)
            except ValueError:
                content_length = None
            headers.append((b"content-length", raw_length.encode("latin-1")))
        stream = environ["wsgi.input"]
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        req = HttpRequest(
            method=environ["REQUEST_METHOD"],
            host=host,
            path=_request_target(environ.get("PATH_INFO") or "/"),
            query=environ.get("QUERY_STRING", ""),
            headers=headers,
            read_body=stream.read,
            content_length=content_length,
            scheme=environ.get("wsgi.url_scheme", "http"),
            server_port=str(environ.get("SERVER_PORT", "")),
            remote_addr=environ.get("REMOTE_ADDR", ""),
        )
        resp = self.runtime.handle(req)
        start_response(_status_line(resp.status), resp.headers)
        if req.method == "HEAD":
            return [b""]
        return [resp.body]


class StateWatcher:
    """Reloads the node state file when it changes (the agent or `serve` writes it)."""

    def __init__(self, runtime: Runtime, path: Path, interval_s: float) -> None:
        self.runtime = runtime
        self.path = path
        self.interval_s = interval_s
        self._mtime = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgefn-state", daemon=True)

    def check(self) -> bool:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            state = read_state(self.path)
        except (OSError, ValueError) as exc:
            log.error("cannot read node state %s: %s", self.path, exc)
            return False
        self.runtime.apply_state(state)
        return True

    def start(self) -> None:
        self.check()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:
                log.exception("applying node state failed")

    def stop(self) -> None:
        self._stop.set()


def create_app() -> EdgeApp:
    """Granian's factory in every worker: settings from the server, then the runtime."""
    from edgefn.edge.bootstrap import build_runtime

    redact.install()
    raw = os.environ.get(WORKER_CONFIG_ENV)
    settings = EdgeSettings.model_validate_json(raw) if raw else EdgeSettings()
    runtime = build_runtime(settings)
    watcher = StateWatcher(runtime, settings.state_path, settings.state_poll_s)
    watcher.start()
    runtime.pools.start()
    return EdgeApp(runtime)
