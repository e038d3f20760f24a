"""What only the WasmEdge engine has: where its AOT code may run (stacks with a guard
as large as the module's largest frame, a signal stack, fault handlers that stay put)
and what it falls back to. The contract shared with wasmtime is in
test_engine_conformance.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefn.sandbox import Engine, Limits, WasiOptions, WasmEdgeOptions, create_engine
from edgefn.sandbox import _nativestack as nativestack
from edgefn.sandbox.abi import parse_response
from edgefn.sandbox.errors import EngineUnavailable, GuestTrap
from tests.conftest import wasm_path
from tests.sandbox.test_engine_conformance import FakeHost, request

ROOT = Path(__file__).resolve().parents[2]


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _module(locals_count: int, body: bytes, results: int = 0) -> bytes:
    """One function of type () -> (i32 x results), with that many i32 locals."""
    def section(section_id: int, content: bytes) -> bytes:
        return bytes([section_id]) + _leb(len(content)) + content

    functype = b"\x60\x00" + _leb(results) + b"\x7f" * results
    func = (b"\x01" + _leb(locals_count) + b"\x7f" if locals_count else b"\x00") + body
    return (b"\x00asm\x01\x00\x00\x00" + section(1, b"\x01" + functype)
            + section(3, b"\x01\x00") + section(10, b"\x01" + _leb(len(func)) + func))


def test_frame_bound_counts_locals_and_what_a_body_can_push() -> None:
    small = nativestack.frame_bound(_module(0, b"\x0b"))
    assert small < 128 << 10
    many_locals = nativestack.frame_bound(_module(3_000_000, b"\x0b"))
    assert many_locals >= 3_000_000 * 16
    pushes = b"\x41\x00" * 10_000 + b"\x1a" * 10_000 + b"\x0b"  # i32.const 0 / drop
    assert nativestack.frame_bound(_module(0, pushes)) >= 10_000 * 16
    # A call can push as many values as a function type returns.
    assert nativestack.frame_bound(_module(0, pushes, results=8)) >= 8 * 10_000 * 16


@pytest.fixture(scope="module")
def aot_engine() -> Iterator[Engine]:
    try:
        engine = create_engine("wasmedge", options=WasmEdgeOptions(aot=True))
    except EngineUnavailable as exc:
        pytest.skip(f"wasmedge engine unavailable: {exc}")
    if not engine.describe()["compiler"].startswith("LLVM AOT"):
        engine.close()
        pytest.skip(f"no AOT here: {engine.describe()['compiler']}")
    yield engine
    engine.close()


def _echo_and_recursion(engine: Engine) -> tuple[bytes, GuestTrap]:
    echo = engine.compile(wasm_path("echo").read_bytes(), Limits(), WasiOptions())
    deep = engine.compile(wasm_path("recursion").read_bytes(), Limits(max_execution_ms=10_000),
                          WasiOptions())
    try:
        inst = echo.instantiate()
        try:
            body = parse_response(inst.invoke(request("POST", body=b"ok"), FakeHost())).body
        finally:
            inst.close()
        with pytest.raises(GuestTrap) as info:
            deep.instantiate().invoke(request(), FakeHost())
        return body, info.value
    finally:
        echo.close()
        deep.close()


def test_a_thread_with_a_small_stack_hands_its_calls_over(aot_engine: Engine) -> None:
    """Rust runtimes and the like make 2 MiB threads: too small to take a guard, so
    their calls run on a call thread, with the same answers."""
    results: list[tuple[bytes, GuestTrap]] = []
    before = threading.stack_size(2 << 20)
    try:
        thread = threading.Thread(target=lambda: results.append(_echo_and_recursion(aot_engine)))
        thread.start()
    finally:
        threading.stack_size(before)
    thread.join()
    ((body, trap),) = results
    assert body == b"ok"
    assert "call stack exhausted" in str(trap) and trap.discard


def test_a_module_with_frames_past_every_guard_is_interpreted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Here the guards are made smaller than echo's frame bound instead of the module
    larger: it is interpreted, says so in the log, and answers the same."""
    monkeypatch.setattr(nativestack, "CALL_GUARD_BYTES", 64 << 10)
    try:
        engine = create_engine("wasmedge", options=WasmEdgeOptions(aot=True))
    except EngineUnavailable as exc:
        pytest.skip(f"wasmedge engine unavailable: {exc}")
    try:
        if not engine.describe()["compiler"].startswith("LLVM AOT"):
            pytest.skip("no AOT here")
        body, trap = _echo_and_recursion(engine)
    finally:
        engine.close()
    assert body == b"ok"
    assert "interpreter's stack" in str(trap)
    assert "module interpreted, not compiled ahead of time" in caplog.text


_REPLACED_HANDLER = """
import signal, sys, time
from edgefn.sandbox import Limits, WasiOptions, WasmEdgeOptions, create_engine
from edgefn.sandbox.errors import GuestTrap
from tests.sandbox.test_engine_conformance import FakeHost, request
from tests.conftest import wasm_path

engine = create_engine("wasmedge", options=WasmEdgeOptions(aot=True))
if not engine.describe()["compiler"].startswith("LLVM AOT"):
    print("no AOT"); sys.exit(0)
module = engine.compile(wasm_path("recursion").read_bytes(), Limits(), WasiOptions())
signal.signal(signal.SIGSEGV, signal.SIG_DFL)  # as a library resetting signals would
time.sleep(float(sys.argv[1]))  # the watchdog puts WasmEdge's handler back
try:
    module.instantiate().invoke(request(), FakeHost())
except GuestTrap as exc:
    print("trapped:", exc)
"""


def test_fault_handlers_replaced_later_are_put_back() -> None:
    """A native stack overflow needs WasmEdge's handler on the signal stack; code that
    resets SIGSEGV would turn the next one into a crash. Run in a process of its own:
    a failure here kills the process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    result = subprocess.run([sys.executable, "-c", _REPLACED_HANDLER, "0.5"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=120)
    if "wasmedge engine unavailable" in result.stderr or "EngineUnavailable" in result.stderr:
        pytest.skip("wasmedge engine unavailable")
    assert result.returncode == 0, result.stderr[-2000:]
    if result.stdout.strip() != "no AOT":
        assert "trapped: guest trapped: call stack exhausted" in result.stdout


def test_a_call_due_sooner_wakes_the_sleeping_watchdog(
    aot_engine: Engine, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With only AOT calls running, the watchdog sleeps until the earliest deadline it
    knows; a call due sooner that starts meanwhile wakes it, and is stopped at its own
    deadline rather than at the other's."""
    import time

    from edgefn.sandbox import wasmedge_engine
    from edgefn.sandbox.errors import GuestTimeout

    monkeypatch.setattr(wasmedge_engine, "_HANDLER_CHECK_S", 30.0)  # no routine wake-ups
    loop = wasm_path("loop").read_bytes()
    slow = aot_engine.compile(loop, Limits(max_execution_ms=4_000), WasiOptions())
    fast = aot_engine.compile(loop, Limits(max_execution_ms=50), WasiOptions())
    ended: dict[str, float] = {}

    def run(name: str, module: object) -> None:
        t0 = time.monotonic()
        with pytest.raises(GuestTimeout):
            module.instantiate().invoke(request(), FakeHost())  # type: ignore[attr-defined]
        ended[name] = time.monotonic() - t0

    try:
        first = threading.Thread(target=run, args=("slow", slow))
        first.start()
        time.sleep(0.3)  # the watchdog now sleeps until the slow call's deadline
        run("fast", fast)
        first.join()
    finally:
        slow.close()
        fast.close()
    assert ended["fast"] < 2.0 < ended["slow"]  # stopped long before the slow one's 4 s


def test_an_interpreted_call_wakes_the_sleeping_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    """An interpreted call's growth is followed from its start: one that begins while
    the watchdog sleeps (no call running, its deadline far off) wakes it, and a
    runaway recursion is stopped as such long before its deadline."""
    import time

    from edgefn.sandbox import wasmedge_engine

    try:
        engine = create_engine("wasmedge", options=WasmEdgeOptions(aot=False))
    except EngineUnavailable as exc:
        pytest.skip(f"wasmedge engine unavailable: {exc}")
    monkeypatch.setattr(wasmedge_engine, "_HANDLER_CHECK_S", 60.0)  # no routine wake-ups
    deep = engine.compile(wasm_path("recursion").read_bytes(),
                          Limits(max_execution_ms=120_000), WasiOptions())
    try:
        time.sleep(0.3)  # the watchdog, idle, now sleeps for a minute
        t0 = time.monotonic()
        with pytest.raises(GuestTrap, match="grew without bound"):
            deep.instantiate().invoke(request(), FakeHost())
        assert time.monotonic() - t0 < 20
    finally:
        deep.close()
        engine.close()
