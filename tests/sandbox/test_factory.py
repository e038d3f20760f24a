"""Choosing an engine: each takes its own options, and refuses the other's."""

from __future__ import annotations

import pytest

from edgefn.sandbox import WasmEdgeOptions, WasmtimeOptions, create_engine
from edgefn.sandbox.errors import EngineUnavailable


def test_wasmtime_takes_its_options() -> None:
    engine = create_engine(
        "wasmtime", options=WasmtimeOptions(epoch_tick_ms=5.0, native_epoch_timer=False))
    try:
        assert engine.describe()["epoch_ticker"] == "python thread, 5.0 ms ticks"
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


def test_wasmedge_compiles_ahead_of_time_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """AOT is the default where the library has its compiler; the option or
    EDGEFN_WASMEDGE_AOT=0 turns it off."""
    monkeypatch.delenv("EDGEFN_WASMEDGE_AOT", raising=False)
    try:
        engine = create_engine("wasmedge")
    except EngineUnavailable as exc:
        pytest.skip(f"wasmedge engine unavailable: {exc}")
    try:
        compiler = engine.describe()["compiler"]
    finally:
        engine.close()
    if "built without LLVM" in compiler:
        pytest.skip("libwasmedge was built without LLVM")
    assert compiler.startswith("LLVM AOT"), compiler
    monkeypatch.setenv("EDGEFN_WASMEDGE_AOT", "0")
    for options in (None, WasmEdgeOptions(aot=False)):
        engine = create_engine("wasmedge", options=options)
        try:
            assert "turned off" in engine.describe()["compiler"]
        finally:
            engine.close()
    engine = create_engine("wasmedge", options=WasmEdgeOptions(aot=True))  # the option wins
    try:
        assert engine.describe()["compiler"].startswith("LLVM AOT")
    finally:
        engine.close()
