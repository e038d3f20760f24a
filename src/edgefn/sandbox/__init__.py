"""The WebAssembly sandbox: one engine interface, its implementations, the guest ABIs."""

from edgefn.sandbox.engine import Engine, GuestRequest, Instance, Limits, Module, WasiOptions
from edgefn.sandbox.errors import (
    GuestError,
    GuestTimeout,
    GuestTrap,
    InvalidModule,
    InvocationError,
    PrecompiledRefused,
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
    "InvocationError",
    "Limits",
    "Module",
    "PrecompiledRefused",
    "ResponseTooLarge",
    "SandboxError",
    "WasiOptions",
    "WasmEdgeOptions",
    "WasmtimeOptions",
    "create_engine",
]
