"""The WebAssembly sandbox: one engine interface, its implementations, the guest ABIs."""

from edgefn.sandbox.engine import Engine, GuestRequest, Instance, Limits, Module, WasiOptions
from edgefn.sandbox.errors import (
    GuestError,
    GuestTimeout,
    GuestTrap,
    InvalidModule,
    PrecompiledRefused,
    InvocationError,
    ResponseTooLarge,
    SandboxError,
)
from edgefn.sandbox.factory import create_engine
from edgefn.sandbox.options import WasmEdgeOptions, WasmtimeOptions

__all__ = [
    "Engine",
    "GuestError",
    "GuestRequest",
    "GuestTimeout",
    "GuestTrap",
    "Instance",
    "InvalidModule",
    "PrecompiledRefused",
    "InvocationError",
    "Limits",
    "Module",
    "ResponseTooLarge",
    "SandboxError",
    "WasiOptions",
    "WasmEdgeOptions",
    "WasmtimeOptions",
    "create_engine",
]
