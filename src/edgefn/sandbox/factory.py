"""Choosing an engine by name: `wasmtime` (the default) or `wasmedge`."""

from __future__ import annotations

from edgefn.sandbox.compilecache import CompileCache
from edgefn.sandbox.engine import Engine
from edgefn.sandbox.errors import EngineUnavailable

ENGINES = ("wasmtime", "wasmedge")


def create_engine(
    name: str = "wasmtime", *, epoch_tick_ms: float = 1.0, compile_cache: CompileCache | None = None
) -> Engine:
    """Build the named engine; `EngineUnavailable` says why it cannot run here.

    `compile_cache`: where compiled code is kept between processes (sealed); None
    compiles in every process (and WasmEdge keeps its AOT output in memory only).
    """
    if name == "wasmtime":
        from edgefn.sandbox.wasmtime_engine import WasmtimeEngine

        return WasmtimeEngine(epoch_tick_ms=epoch_tick_ms, compile_cache=compile_cache)
    if name == "wasmedge":
        try:
            from edgefn.sandbox.wasmedge_engine import WasmEdgeEngine
        except ImportError as exc:
            raise EngineUnavailable(f"the wasmedge engine is not available: {exc}") from exc
        return WasmEdgeEngine(compile_cache=compile_cache)
    raise EngineUnavailable(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
