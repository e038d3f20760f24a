"""Errors raised by the sandbox; engine-specific exceptions never leave their adapter.

    SandboxError
    ├── EngineUnavailable      the engine's library cannot be loaded
    ├── InvalidModule          a module that must not run here (upload 400, load refused)
    ├── PrecompiledRefused     precompiled code the engine would not load (compile the .wasm)
    └── InvocationError        one call failed; `discard` says whether the instance is spent
        ├── GuestTrap          the guest trapped (500), instance discarded
        ├── GuestTimeout       ran past max_execution_ms (504), instance discarded
        ├── GuestError         negative return or non-zero WAGI exit (500)
        └── ResponseTooLarge   the response did not fit response_cap (502)
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base of every sandbox error."""


class EngineUnavailable(SandboxError):
    """The engine cannot run on this machine (its library is missing or broken)."""


class InvalidModule(SandboxError):
    """The module is malformed or breaks the platform's rules."""


class PrecompiledRefused(SandboxError):
    """Precompiled code the engine refused (another engine, version or CPU, or
    damaged); the caller compiles the `.wasm` instead."""


class InvocationError(SandboxError):
    """An invocation failed. `status` is the HTTP status the client gets."""

    status = 500
    discard = True

    def __init__(self, message: str, *, output: bytes = b"") -> None:
        super().__init__(message)
        self.output = output


class GuestTrap(InvocationError):
    status = 500


class GuestTimeout(InvocationError):
    status = 504


class GuestError(InvocationError):
    status = 500
    discard = False


class ResponseTooLarge(InvocationError):
    status = 502
    discard = False
