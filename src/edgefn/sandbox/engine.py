"""The engine interface: compile a module once, instantiate it cheaply, call it fast.

Everything engine-specific (wasmtime, WasmEdge) lives behind these Protocols; the
edge runtime, the pool and the tests see only them. An engine links the `edge`
host functions to a `Host` it is handed per invocation, so the policy behind each
host function (allowlists, quotas) is written once, outside the engines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol

from edgefn.sandbox.errors import InvalidModule
from edgefn.sandbox.wasminfo import ABI_EDGE_V1, ModuleInfo

DEFAULT_MEMORY_PAGES = 16
DEFAULT_MAX_EXECUTION_MS = 500
DEFAULT_MAX_RESPONSE_BYTES = 65536
DEFAULT_MAX_OUTPUT_BYTES = 65536
DEFAULT_MAX_HTTP_RESPONSES = 16


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits of one function, enforced by the engine on every instance."""

    memory_pages: int = DEFAULT_MEMORY_PAGES
    max_execution_ms: int = DEFAULT_MAX_EXECUTION_MS
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    # stdout/stderr bytes kept per invocation; the rest is dropped and counted.
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    # Responses of `wasi_experimental_http` a WAGI invocation may hold open at once.
    max_http_responses: int = DEFAULT_MAX_HTTP_RESPONSES


@dataclass(frozen=True, slots=True)
class WasiOptions:
    """The WASI capabilities an instance gets: nothing beyond these."""

    env: tuple[tuple[str, str], ...] = ()
    # Host directory preopened read-only at /config, or None.
    config_dir: str | None = None
    # More host directories preopened read-only, as (guest path, host directory);
    # no directory at all: no filesystem.
    volumes: tuple[tuple[str, str], ...] = ()

    def preopens(self) -> list[tuple[str, str]]:
        """Every read-only directory, (guest path, host directory), `/config` first;
        `InvalidModule` when one cannot be mounted."""
        out = [("/config", self.config_dir)] if self.config_dir else []
        for guest, host in [*out, *self.volumes]:
            parts = guest.split("/")
            if not guest.startswith("/") or ".." in parts or "." in parts or ":" in guest:
                raise InvalidModule(f"volume guest path {guest!r} is not an absolute path")
            if ":" in host or not os.path.isdir(host):
                raise InvalidModule(f"volume directory {host!r} is not a usable directory")
        guests = [g for g, _ in out]
        for guest, host in self.volumes:
            guest = guest.rstrip("/") or "/"
            if guest in guests:
                raise InvalidModule(f"guest path {guest!r} is mounted twice")
            guests.append(guest)
            out.append((guest, host))
        return out

    def environ(self, extra: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The function's variables with `extra` (a request's CGI variables) over them."""
        if not extra:
            return list(self.env)
        names = {name for name, _ in extra}
        return [kv for kv in self.env if kv[0] not in names] + extra


@dataclass(slots=True)
class GuestRequest:
    """One HTTP request, already in the guest's encoding (the edge-v1 ABI, docs/edge.md)."""

    method: bytes
    path: bytes
    headers: bytes
    body: bytes
    # WAGI only: the CGI/1.1 environment for this request, its argv, and the export
    # to call.
    cgi_env: list[tuple[str, str]] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    entrypoint: str = "_start"


class Host(Protocol):
    """What a guest may ask of the host during one invocation (docs/edge.md, Host functions).

    Methods returning `bytes | int` give the value, or a negative code:
    -1 not found, -2 denied, -3 quota exceeded, -4 failed.
    """

    def log(self, level: int, message: bytes) -> None: ...

    def output(self, stream: int, data: bytes) -> None:
        """Bytes the guest wrote to WASI stdout (1) or stderr (2) outside a WAGI response."""
        ...

    def metrics_increment(self, name: bytes, value: float, tags: bytes) -> None: ...

    def kv_get(self, key: bytes) -> bytes | int: ...

    def kv_put(self, key: bytes, value: bytes, ttl_seconds: int) -> int: ...

    def http_fetch(self, request: bytes) -> bytes | int: ...

    def env_get(self, key: bytes) -> bytes | int: ...

    def request_id(self) -> bytes | int: ...

    def request_header(self, name: bytes) -> bytes | int: ...

    def secret_get(self, name: bytes) -> bytes | int:
        """A secret the function lists; -2 for a name it does not list."""
        ...

    def remaining_seconds(self) -> float:
        """Time left before the invocation's deadline; host calls stay within it."""
        ...


class Instance(Protocol):
    """A live instance. It serves one invocation at a time and is closed exactly once."""

    @property
    def memory_bytes(self) -> int:
        """Current size of the instance's linear memory."""
        ...

    def invoke(self, request: GuestRequest, host: Host) -> bytes:
        """Run the request; return the raw response (edge-v1 encoding, or WAGI stdout).

        Raises an `InvocationError`; when its `discard` is true (or on any other
        exception) the instance has closed itself and must not be used again.
        """
        ...

    def close(self) -> None: ...


class Module(Protocol):
    """A compiled and linked module, shared by all instances of one function version."""

    @property
    def info(self) -> ModuleInfo: ...

    @property
    def abi(self) -> str: ...

    @property
    def reusable(self) -> bool:
        """False where every request needs a fresh instance (WAGI runs `_start` once)."""
        ...

    @property
    def code_bytes(self) -> int:
        """Approximate host memory held by the compiled code."""
        ...

    @property
    def suspends(self) -> bool:
        """Whether a guest waiting in a host call is suspended instead of its thread."""
        ...

    def instantiate(self) -> Instance: ...

    def close(self) -> None: ...


class ModuleFacts:
    """What every engine's module reports the same way: its facts, its ABI, its limits.

    Engines subclass it and add how their instances are made.
    """

    def __init__(self, info: ModuleInfo, limits: Limits, wasi: WasiOptions, wasm_size: int):
        self._info = info
        self.limits = limits
        self.wasi = wasi
        # Compiled code is a few times the size of the bytecode.
        self._code_bytes = wasm_size * 4

    @property
    def info(self) -> ModuleInfo:
        return self._info

    @property
    def abi(self) -> str:
        return self._info.abi

    @property
    def reusable(self) -> bool:
        return self._info.abi == ABI_EDGE_V1

    @property
    def code_bytes(self) -> int:
        return self._code_bytes

    @property
    def suspends(self) -> bool:
        """True when a guest waiting in a host call is suspended, not its thread: the
        call's work is run by the caller of `invoke` (`program.WaitingCall`), which may
        be a green task on an event loop (`edge.green`). False: the host call blocks the
        thread that called `invoke`."""
        return False


class Engine(Protocol):
    """A WebAssembly engine. One per process; thread-safe for compile and instantiate."""

    name: str

    @property
    def tag(self) -> str:
        """What code this engine compiles loads into (`enginetag`): engine, version,
        code-affecting settings, host CPU. "" when it compiles nothing ahead (an
        interpreter): then there is nothing to precompile for it."""
        ...

    def compile(
        self, wasm: bytes, limits: Limits, wasi: WasiOptions, *, precompiled: bytes | None = None
    ) -> Module:
        """Validate, compile and link `wasm`; raise `InvalidModule` when it cannot run here.

        `precompiled`: code `precompile` made of these very bytes under this engine's
        tag, already verified by its digest; it is loaded instead of compiling, and
        `PrecompiledRefused` says the engine would not load it. Loading it runs it:
        only pass code from a source as trusted as the `.wasm` itself.
        """
        ...

    def precompile(self, wasm: bytes) -> bytes:
        """`wasm` compiled to what `compile(precompiled=...)` loads on an engine of the
        same tag; `InvalidModule` when it does not compile or this engine has no
        ahead-of-time form of it."""
        ...

    def describe(self) -> dict[str, str]:
        """Facts for `edgefn doctor`: version, compiler (AOT or interpreter), library path."""
        ...

    def close(self) -> None: ...
