"""`secret_get`: the project secrets a function lists, held in this worker's memory only.

Values are resolved once per function version, when it is loaded and before its
first instance is created, from a `SecretSource`: the control plane (a call
authenticated by the node's token, answered only for a function deployed to this
node and only for the names it lists) or, on a node without one, an operator's
secrets file. Only the node's main process holds the token: a worker asks it
through `SecretBroker`, a Unix socket in the node's private data directory, so a
worker (the process that runs guests) holds no control-plane credential.
They are never written to the node state, the cache or a log. A
name the function does not list is -2; one listed but absent from the project is
-1; one that could not be resolved (control plane unreachable) is -4, and the
next call retries, at most every `RETRY_S`, within the invocation's deadline.
"""

from __future__ import annotations

import json
import logging
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx

from edgefn.edge.capabilities.errors import CallFailed
from edgefn.edge.spec import FunctionSpec
from edgefn.sandbox.hostcodes import DENIED, FAILED, NOT_FOUND

if TYPE_CHECKING:  # the workers never load the node's credentials
    from edgefn.edge.node.credentials import NodeCertificate

log = logging.getLogger(__name__)

RETRY_S = 10.0
RESOLVE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Resolved:
    """A source's answer: values by name, and the names it has no value for."""

    values: dict[str, bytes] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()
    denied: frozenset[str] = frozenset()


class SecretSource(Protocol):
    def resolve(self, function_id: str, names: Sequence[str], timeout_s: float) -> Resolved:
        """The values of `names` for the function; raises `CallFailed` when it cannot say."""
        ...


class ControlPlaneSecrets:
    """`POST /api/v1/nodes/{node_id}/secrets` with the node's token (docs/api.md), and
    its client certificate under mutual TLS."""

    def __init__(self, cp_url: str, node_id: str, token: str,
                 tls: NodeCertificate | None = None) -> None:
        self._url = f"{cp_url.rstrip('/')}/api/v1/nodes/{node_id}/secrets"
        self._headers = {"authorization": f"Bearer {token}"}
        self._tls = tls
        # After a transport failure every function fails fast until then: a node
        # loading many functions while the control plane is away must not wait
        # out a timeout for each.
        self._down_until = 0.0

    def resolve(self, function_id: str, names: Sequence[str], timeout_s: float) -> Resolved:
        if time.monotonic() < self._down_until:
            raise CallFailed("control plane unreachable (retrying later)")
        try:
            verify = self._tls.ssl_context() if self._tls is not None else True
            resp = httpx.post(self._url, json={"function_id": function_id, "names": list(names)},
                              headers=self._headers, timeout=timeout_s, verify=verify)
        except (httpx.HTTPError, OSError) as exc:
            self._down_until = time.monotonic() + RETRY_S
            # The exception's text can hold the URL; its class is enough to act on.
            raise CallFailed(f"control plane unreachable ({type(exc).__name__})") from None
        if resp.status_code != 200:
            raise CallFailed(f"control plane answered HTTP {resp.status_code}")
        try:
            body = resp.json()
        except ValueError:
            body = None
        return _resolved(body, "control plane")


def _resolved(body: object, who: str) -> Resolved:
    """The control plane's answer (`{secrets, missing, denied}`, which the broker
    passes on in the same shape) as a `Resolved`."""
    try:
        if not isinstance(body, dict):
            raise TypeError("not an object")
        return Resolved(
            values={str(k): str(v).encode() for k, v in body["secrets"].items()},
            missing=frozenset(body.get("missing") or ()),
            denied=frozenset(body.get("denied") or ()),
        )
    except (KeyError, TypeError, AttributeError):
        raise CallFailed(f"{who} answered something that is not secrets") from None


# One request or answer on the broker's socket: a JSON line, bounded.
_BROKER_LINE_MAX = 1024 * 1024


class SecretBroker:
    """The main process's side: resolves workers' requests through `source` (the
    control plane with the node's token) on a Unix socket only the node's user
    can open. Each connection carries one JSON line each way."""

    def __init__(self, path: Path, source: SecretSource) -> None:
        self.path = path
        self.source = source
        path.unlink(missing_ok=True)
        broker = self

        class _Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(broker._answer(self.rfile.readline(_BROKER_LINE_MAX)))

        self._server = socketserver.ThreadingUnixStreamServer(str(path), _Handler)
        self._server.daemon_threads = True
        path.chmod(0o600)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="edgefn-secrets", daemon=True)

    def _answer(self, line: bytes) -> bytes:
        try:
            ask = json.loads(line)
            function_id, names = str(ask["function_id"]), [str(n) for n in ask["names"]]
            timeout_s = min(float(ask.get("timeout_s", RESOLVE_TIMEOUT_S)), RESOLVE_TIMEOUT_S)
        except (ValueError, KeyError, TypeError):
            return b'{"error": "bad request"}\n'
        try:
            got = self.source.resolve(function_id, names, timeout_s)
        except CallFailed as exc:
            return json.dumps({"error": str(exc)}).encode() + b"\n"
        return json.dumps({
            "secrets": {k: v.decode() for k, v in got.values.items()},
            "missing": sorted(got.missing), "denied": sorted(got.denied),
        }).encode() + b"\n"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)


class BrokerSecrets:
    """A worker's side of `SecretBroker`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resolve(self, function_id: str, names: Sequence[str], timeout_s: float) -> Resolved:
        ask = {"function_id": function_id, "names": list(names), "timeout_s": timeout_s}
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                # The broker's own call to the control plane is bounded by timeout_s.
                sock.settimeout(timeout_s + 1.0)
                sock.connect(str(self.path))
                sock.sendall(json.dumps(ask).encode() + b"\n")
                with sock.makefile("rb") as answer:
                    body = json.loads(answer.readline(_BROKER_LINE_MAX))
        except (OSError, ValueError) as exc:
            raise CallFailed(f"node secrets broker unreachable ({type(exc).__name__})") from None
        if isinstance(body, dict) and "error" in body:
            raise CallFailed(str(body["error"]))
        return _resolved(body, "node secrets broker")


class FileSecrets:
    """A standalone node's secrets: a JSON file `{function_id: {name: value}}`.

    Read on every resolve (so an operator can rotate a value and reload the
    function), and refused when group or others may read it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def resolve(self, function_id: str, names: Sequence[str], timeout_s: float) -> Resolved:
        try:
            if stat.S_IMODE(self.path.stat().st_mode) & 0o077:
                raise CallFailed(f"{self.path} is readable by others; chmod 600 it")
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise CallFailed(f"cannot read {self.path}: {type(exc).__name__}") from None
        own = data.get(function_id) if isinstance(data, dict) else None
        own = own if isinstance(own, dict) else {}
        values = {n: str(own[n]).encode() for n in names if n in own}
        return Resolved(values=values, missing=frozenset(n for n in names if n not in values))


class SecretsCapability:
    """One function version's secrets; thread-safe (request threads share it)."""

    __slots__ = ("_function_id", "_lock", "_names", "_next_try", "_source", "_values")

    def __init__(self, function_id: str, names: tuple[str, ...],
                 source: SecretSource | None) -> None:
        self._function_id = function_id
        self._names = {n.encode(): n for n in names}
        self._source = source
        # name -> value, or a negative code; None until resolved.
        self._values: dict[bytes, bytes | int] | None = None
        self._next_try = 0.0
        self._lock = threading.Lock()

    @classmethod
    def configure(cls, spec: FunctionSpec, source: SecretSource | None) -> SecretsCapability | None:
        """None (every name is -2) unless the function lists secrets; resolves them now."""
        if not spec.secrets:
            return None
        cap = cls(spec.id, spec.secrets, source)
        cap.prepare(RESOLVE_TIMEOUT_S)
        return cap

    def prepare(self, timeout_s: float) -> None:
        """Resolve the listed names unless done (or tried within `RETRY_S`)."""
        if self._values is not None or time.monotonic() < self._next_try:
            return
        if not self._lock.acquire(blocking=False):
            return  # another request thread is resolving; this call answers -4
        try:
            if self._values is None:
                self._values = self._resolve(timeout_s)
        finally:
            self._lock.release()

    def _resolve(self, timeout_s: float) -> dict[bytes, bytes | int] | None:
        if self._source is None:
            self._next_try = float("inf")
            log.warning("function %s lists secrets but this node has no secret source",
                        self._function_id)
            return None
        try:
            got = self._source.resolve(self._function_id, sorted(self._names.values()),
                                       max(0.1, timeout_s))
        except CallFailed as exc:
            self._next_try = time.monotonic() + RETRY_S
            log.warning("secrets of function %s not resolved: %s", self._function_id, exc)
            return None
        out: dict[bytes, bytes | int] = {}
        for raw, name in self._names.items():
            if name in got.values:
                out[raw] = got.values[name]
            elif name in got.denied:
                out[raw] = DENIED
            elif name in got.missing:
                out[raw] = NOT_FOUND
            else:
                out[raw] = FAILED
        return out

    def get(self, name: bytes, timeout_s: float) -> bytes | int:
        if name not in self._names:
            return DENIED
        if self._values is None:
            self.prepare(timeout_s)
            if self._values is None:
                return FAILED
        return self._values.get(name, FAILED)
