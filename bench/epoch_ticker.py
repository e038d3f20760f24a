"""The wasmtime epoch tickers: the native POSIX timer against the Python thread.

For each, in a fresh process (a worker's): the CPU the process uses in a 2 s sleep
right after one call (the ticker running) and, for the timer, once it has been
disarmed; and the time the `loop` fixture (max_execution_ms=200) runs before it is
interrupted.

    python bench/epoch_ticker.py [--calls 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import statistics, sys, time
from edgefn.sandbox import Limits, WasiOptions, WasmtimeOptions
from edgefn.sandbox.errors import GuestTimeout
from edgefn.sandbox.wasmtime_engine import WasmtimeEngine
from tests.sandbox.test_engine_conformance import FakeHost, request

native, calls = sys.argv[1] == "posix-timer", int(sys.argv[2])
wasm = "tests/fixtures/wasm/{}.wasm"
eng = WasmtimeEngine(WasmtimeOptions(native_epoch_timer=native))
assert eng.describe()["epoch_ticker"] == ("posix timer" if native else "thread")

def idle_cpu() -> float:
    cpu = time.process_time()
    time.sleep(2)
    return time.process_time() - cpu

echo = eng.compile(open(wasm.format("echo"), "rb").read(), Limits(max_execution_ms=200),
                   WasiOptions())
echo.instantiate().invoke(request(), FakeHost())
line = [f"idle CPU in 2 s, ticking: {idle_cpu():.3f} s"]
if native:
    started = time.monotonic()
    while eng._ticker.armed:
        time.sleep(0.01)
    line.append(f"disarmed {time.monotonic() - started + 2:.1f} s after the call")
    line.append(f"idle CPU in 2 s, disarmed: {idle_cpu():.3f} s")

loop = eng.compile(open(wasm.format("loop"), "rb").read(), Limits(max_execution_ms=200),
                   WasiOptions())
times = []
for _ in range(calls):
    inst = loop.instantiate()
    started = time.monotonic()
    try:
        inst.invoke(request(), FakeHost())
    except GuestTimeout:
        times.append((time.monotonic() - started) * 1000)
    inst.close()
assert len(times) == calls
line.append(f"loop interrupted after {min(times):.1f} / {statistics.median(times):.1f} / "
            f"{max(times):.1f} ms (min / median / max of {calls})")
print("; ".join(line))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    for ticker in ("thread", "posix-timer"):
        done = subprocess.run([sys.executable, "-c", _CHILD, ticker, str(args.calls)],
                              cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        print(f"{ticker}: {done.stdout.strip()}")


if __name__ == "__main__":
    main()
