"""Choosing an engine by name: `wasmtime` (the default) or `wasmedge`."""

from __future__ import annotations

from pathlib import Path

from edgefn.sandbox.engine import Engine
from edgefn.sandbox.errors import EngineUnavailable

ENGINES = ("wasmtime", "wasmedge")


def create_engine(
    name: str = "wasmtime", *, epoch_tick_ms: float = 1.0, compile_cache_dir: Path | None = None
) -> Engine:
    """Build the named engine; `EngineUnavailable` says why it cannot run here."""
    if name == "wasmtime":
        from edgefn.sandbox.wasmtime_engine import WasmtimeEngine

        return WasmtimeEngine(epoch_tick_ms=epoch_tick_ms, compile_cache_dir=compile_cache_dir)
    if name == "wasmedge":
        try:
            from edgefn.sandbox.wasmedge_engine import WasmEdgeEngine
        except ImportError as exc:
            raise EngineUnavailable(f"the wasmedge engine is not available: {exc}") from exc
        return WasmEdgeEngine()
    raise EngineUnavailable(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
