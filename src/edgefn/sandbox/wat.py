"""WebAssembly text (`.wat`) to a binary module, for WAGI programs shipped as text.

The text is compiled once, where a module map is read; every engine then loads
the same binary, so WasmEdge runs a `.wat` program as wasmtime does.
"""

from __future__ import annotations

import wasmtime

from edgefn.sandbox.errors import InvalidModule


def wat_to_wasm(text: str) -> bytes:
    """The binary of a module in text form; `InvalidModule` saying what is wrong."""
    try:
        return bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise InvalidModule(f"not valid WebAssembly text: {exc}") from exc
