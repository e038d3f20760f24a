"""The settings of each engine, one dataclass per engine, so none is silently ignored.

`create_engine` refuses options made for another engine; both dataclasses import
without either engine's library.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WasmtimeOptions:
    """`native_epoch_timer`: deadlines from the native deadline thread, which wakes
    only when one is due (`sandbox/epoch_timer.py`; where it was not built, or when
    off, a Python thread ticks). `epoch_tick_ms`: that Python thread's tick; a
    deadline lands at most one tick late. `opt_level`: Cranelift's optimisation
    level ("none", "speed", "speed_and_size"). `suspend_waiting`: an edge-v1 guest
    that imports a host call that waits (`http_fetch`, KV, `secret_get`) runs on a
    stack of its own and is suspended in that call (`Module.suspends`), so its
    caller need not be a thread that blocks."""

    epoch_tick_ms: float = 1.0
    opt_level: str = "speed"
    native_epoch_timer: bool = True
    suspend_waiting: bool = True


@dataclass(frozen=True, slots=True)
class WasmEdgeOptions:
    """`aot`: compile ahead of time with the library's LLVM compiler, when it has one;
    None reads EDGEFN_WASMEDGE_AOT (on unless "0", see docs/engines.md).
    `cost_limit_per_ms`: an instruction-cost budget per millisecond of
    `max_execution_ms`, a second guard behind cancellation; None is off."""

    aot: bool | None = None
    cost_limit_per_ms: int | None = None


EngineOptions = WasmtimeOptions | WasmEdgeOptions
