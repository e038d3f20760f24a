"""The wasmtime epoch tickers: the native POSIX timer (armed only while guests may run)
and the Python thread it falls back to. Real guests, real timers, real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefn.sandbox import Limits, WasiOptions, WasmtimeOptions, epoch_timer, wasmtime_engine
from edgefn.sandbox.errors import GuestTimeout
from edgefn.sandbox.wasmtime_engine import WasmtimeEngine, WasmtimeModule
from tests.conftest import wasm_path
from tests.sandbox.test_engine_conformance import FakeHost, request

ROOT = Path(__file__).resolve().parents[2]
native_only = pytest.mark.skipif(
    not epoch_timer.available(), reason="no POSIX timer here: the thread ticker is used")


@pytest.fixture
def quick_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    """A watchdog that looks every 50 ms and a slack of 50 ms: idle in well under a
    second instead of a few."""
    monkeypatch.setattr(wasmtime_engine, "_WATCH_S", 0.05)
    monkeypatch.setattr(wasmtime_engine, "_SLACK_S", 0.05)


def _engine(native: bool) -> WasmtimeEngine:
    return WasmtimeEngine(WasmtimeOptions(native_epoch_timer=native))


@pytest.fixture
def native_engine(quick_watchdog: None) -> Iterator[WasmtimeEngine]:
    eng = _engine(True)
    assert eng.describe()["epoch_ticker"] == "posix timer"
    yield eng
    eng.close()


def _module(eng: WasmtimeEngine, name: str, ms: int) -> WasmtimeModule:
    return eng.compile(wasm_path(name).read_bytes(), Limits(max_execution_ms=ms), WasiOptions())


def _time_out(module: WasmtimeModule) -> float:
    """Seconds until the looping guest was interrupted."""
    inst = module.instantiate()
    started = time.monotonic()
    try:
        with pytest.raises(GuestTimeout):
            inst.invoke(request(), FakeHost())
        return time.monotonic() - started
    finally:
        inst.close()


def _call(module: WasmtimeModule) -> None:
    inst = module.instantiate()
    try:
        inst.invoke(request(), FakeHost())
    finally:
        inst.close()


def _until_disarmed(eng: WasmtimeEngine, within: float = 10.0) -> float:
    ticker = eng._ticker
    assert isinstance(ticker, wasmtime_engine._NativeTicker)
    started = time.monotonic()
    while ticker.armed:
        assert time.monotonic() - started < within, "the timer was never disarmed"
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.parametrize("native", [pytest.param(True, marks=native_only), False],
                         ids=["posix-timer", "thread"])
def test_a_looping_guest_is_interrupted_at_its_deadline(native: bool) -> None:
    eng = _engine(native)
    try:
        assert eng.describe()["epoch_ticker"] == ("posix timer" if native else "thread")
        module = _module(eng, "loop", 200)
        for _ in range(3):
            elapsed = _time_out(module)
            assert 0.2 <= elapsed < 0.6, elapsed  # never early, a few ticks late
    finally:
        eng.close()


@native_only
def test_the_timer_is_disarmed_when_idle_and_armed_again_by_a_call(
    native_engine: WasmtimeEngine,
) -> None:
    module = _module(native_engine, "echo", 100)
    _call(module)
    ticker = native_engine._ticker
    assert isinstance(ticker, wasmtime_engine._NativeTicker)
    assert ticker.armed
    assert _until_disarmed(native_engine) > 0.1  # not before the deadline's end
    time.sleep(0.2)
    assert not ticker.armed
    _call(module)
    assert ticker.armed
    _until_disarmed(native_engine)


@native_only
def test_a_long_deadline_is_not_disarmed_under_a_running_guest(
    native_engine: WasmtimeEngine,
) -> None:
    # Busy, then idle for much longer than the short deadlines' (and the watchdog's)
    # times while the long guest still runs.
    short, long_ = _module(native_engine, "echo", 20), _module(native_engine, "loop", 1500)
    _call(short)
    result: list[float] = []
    runner = threading.Thread(target=lambda: result.append(_time_out(long_)))
    runner.start()
    runner.join(timeout=6)
    if runner.is_alive():  # free it before failing: the timer is gone
        for _ in range(10_000):
            native_engine._engine.increment_epoch()
        runner.join()
        pytest.fail("the timer was disarmed under a running guest")
    assert 1.5 <= result[0] < 2.5


@native_only
def test_late_ticks_keep_the_timer_armed_until_the_deadline_is_reached(
    quick_watchdog: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A timer whose notifications come three times slower than the clock says they
    should (as when a throttled process loses ticks): the guest's deadline ends in
    ticks long after its end by the clock, and the timer stays armed until it has."""
    create = epoch_timer.EpochTimer.create

    def slow(engine_ptr: int, interval_s: float) -> epoch_timer.EpochTimer | None:
        return create(engine_ptr, interval_s * 3)

    monkeypatch.setattr(epoch_timer.EpochTimer, "create", slow)
    eng = _engine(True)
    try:
        module = _module(eng, "loop", 300)
        result: list[float] = []
        runner = threading.Thread(target=lambda: result.append(_time_out(module)))
        runner.start()
        runner.join(timeout=6)
        if runner.is_alive():
            for _ in range(10_000):
                eng._engine.increment_epoch()
            runner.join()
            pytest.fail("the timer was disarmed by the clock before the deadline's ticks")
        assert 0.9 <= result[0] < 2.0
    finally:
        eng.close()


def _fork_and_time_out(loop: WasmtimeModule) -> None:
    pid = os.fork()
    if pid == 0:  # the child: its guest must still be interrupted
        code = 1
        try:
            code = 0 if 0.2 <= _time_out(loop) < 1.0 else 2
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung or its guest was never interrupted")


@native_only
def test_a_child_forked_while_the_timer_ticks_arms_a_timer_of_its_own(
    native_engine: WasmtimeEngine,
) -> None:
    loop = _module(native_engine, "loop", 200)
    for _ in range(5):
        _time_out(loop)  # the parent's timer is armed, ticking
        _fork_and_time_out(loop)
    assert native_engine._ticker.armed  # type: ignore[union-attr]  # again, after the forks


def test_a_child_forked_from_a_ticking_thread_starts_its_own() -> None:
    eng = _engine(False)
    try:
        loop = _module(eng, "loop", 200)
        inst = loop.instantiate()  # made in the parent, used in the child
        _time_out(loop)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                started = time.monotonic()
                try:
                    inst.invoke(request(), FakeHost())
                except GuestTimeout:
                    code = 0 if 0.2 <= time.monotonic() - started < 1.0 else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 10
        while not (waited := os.waitpid(pid, os.WNOHANG))[0]:
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the forked child's guest was never interrupted")
            time.sleep(0.05)
        assert os.waitstatus_to_exitcode(waited[1]) == 0
        inst.close()
    finally:
        eng.close()


_SCRIPT = textwrap.dedent("""
    import gc, sys, time
    from edgefn.sandbox import Limits, WasiOptions, WasmtimeOptions, wasmtime_engine
    from tests.conftest import wasm_path
    from tests.sandbox.test_engine_conformance import FakeHost, request

    wasmtime_engine._WATCH_S = wasmtime_engine._SLACK_S = 0.05
    eng = wasmtime_engine.WasmtimeEngine(WasmtimeOptions())
    module = eng.compile(wasm_path("echo").read_bytes(), Limits(max_execution_ms=50),
                         WasiOptions())
    inst = module.instantiate()
    inst.invoke(request(), FakeHost())
    inst.close()
    assert eng._ticker.armed
    if sys.argv[1] == "idle":
        while eng._ticker.armed:
            time.sleep(0.05)
        cpu = time.process_time()
        time.sleep(1)
        print(time.process_time() - cpu)
    elif sys.argv[1] == "drop":  # unclosed, the last reference to the ticker its watchdog's
        del inst, module, eng
        gc.collect()
    # then exit at once, the timer armed and ticking
""")


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.run([sys.executable, "-c", _SCRIPT, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@native_only
def test_an_idle_process_burns_no_cpu_once_disarmed() -> None:
    done = _python("idle")
    assert done.returncode == 0, done.stderr
    # Armed, the timer costs several percent of a core; disarmed, nothing wakes.
    assert float(done.stdout) < 0.01


@native_only
@pytest.mark.parametrize("how", ["exit", "drop"])
def test_a_process_exiting_with_the_timer_armed_never_crashes(how: str) -> None:
    # Ten fresh processes of each kind, each exiting with the timer armed and ticking
    # (a tick must never land in a half-torn-down interpreter).
    for _ in range(10):
        done = _python(how)
        assert done.returncode == 0, (done.returncode, done.stderr)
