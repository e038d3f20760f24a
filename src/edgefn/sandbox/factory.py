"""Choosing an engine by name: `wasmtime` (the default) or `wasmedge`."""

from __future__ import annotations

from typing import TypeVar

from edgefn.sandbox.compilecache import CompileCache
from edgefn.sandbox.engine import Engine
from edgefn.sandbox.errors import EngineUnavailable
from edgefn.sandbox.options import EngineOptions, WasmEdgeOptions, WasmtimeOptions

ENGINES = ("wasmtime", "wasmedge")

T = TypeVar("T", WasmtimeOptions, WasmEdgeOptions)


def create_engine(
    name: str = "wasmtime",
    *,
    options: EngineOptions | None = None,
    compile_cache: CompileCache | None = None,
) -> Engine:
    """Build the named engine; `EngineUnavailable` says why it cannot run here.

    `options`: that engine's own dataclass (`WasmtimeOptions`, `WasmEdgeOptions`);
    options of the other engine are refused, not ignored. `compile_cache`: where
    compiled code is kept between processes (sealed); None compiles in every
    process, with either engine.
    """
    if name == "wasmtime":
        from edgefn.sandbox.wasmtime_engine import WasmtimeEngine

        return WasmtimeEngine(_options(name, options, WasmtimeOptions), compile_cache=compile_cache)
    if name == "wasmedge":
        wasmedge_options = _options(name, options, WasmEdgeOptions)
        try:
            from edgefn.sandbox.wasmedge_engine import WasmEdgeEngine
        except ImportError as exc:
            raise EngineUnavailable(f"the wasmedge engine is not available: {exc}") from exc
        return WasmEdgeEngine(wasmedge_options, compile_cache=compile_cache)
    raise EngineUnavailable(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


def _options(name: str, options: EngineOptions | None, kind: type[T]) -> T:
    if options is None:
        return kind()
    if not isinstance(options, kind):
        raise TypeError(f"the {name} engine takes {kind.__name__}, not {type(options).__name__}")
    return options
