"""Choosing an engine: each takes its own options, and refuses the other's."""

from __future__ import annotations

import pytest

from edgefn.sandbox import WasmEdgeOptions, WasmtimeOptions, create_engine
from edgefn.sandbox.errors import EngineUnavailable


def test_wasmtime_takes_its_options() -> None:
    engine = create_engine("wasmtime", options=WasmtimeOptions(epoch_tick_ms=5.0))
    try:
        assert engine.describe()["epoch_tick_ms"] == "5.0"
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("name", "options"),
    [("wasmtime", WasmEdgeOptions(aot=True)), ("wasmedge", WasmtimeOptions(epoch_tick_ms=2.0))],
)
def test_options_of_the_other_engine_are_refused(name: str, options: object) -> None:
    # Refused before the library is looked for: WasmEdge need not be installed.
    with pytest.raises(TypeError, match=f"the {name} engine takes"):
        create_engine(name, options=options)  # type: ignore[arg-type]


def test_unknown_engine_is_unavailable() -> None:
    with pytest.raises(EngineUnavailable, match="unknown engine"):
        create_engine("v8")
