"""wasmtime's deadlines: the native deadline thread against the Python ticker.

For each, in a fresh process (a worker's):
- the CPU the process uses in a 2 s sleep right after a call;
- the CPU it uses in 2 s while 20 guests wait in a host call (as requests waiting in
  `http_fetch` do), their 5 s deadlines pending: a periodic tick runs all along;
- how long the `loop` fixture (max_execution_ms=200) runs before it is interrupted.

    python bench/epoch_ticker.py [--calls 20]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import statistics, sys, threading, time
from edgefn.sandbox import Limits, WasiOptions, WasmtimeOptions
from edgefn.sandbox.errors import GuestTimeout
from edgefn.sandbox.wasmtime_engine import WasmtimeEngine
from tests.sandbox.test_engine_conformance import FakeHost, request

ticker, calls = sys.argv[1], int(sys.argv[2])
eng = WasmtimeEngine(WasmtimeOptions(native_epoch_timer=ticker == "deadline-thread"))
assert eng.describe()["epoch_ticker"].startswith(ticker.replace("-", " "))
wasm = "tests/fixtures/wasm/{}.wasm"

def module(name, ms):
    return eng.compile(open(wasm.format(name), "rb").read(), Limits(max_execution_ms=ms),
                       WasiOptions())

def cpu_in(seconds):
    cpu = time.process_time()
    time.sleep(seconds)
    return time.process_time() - cpu

module("echo", 200).instantiate().invoke(request(), FakeHost())
line = [f"idle CPU in 2 s after a call: {cpu_in(2):.3f} s"]

release = threading.Event()
class Waiting(FakeHost):
    def http_fetch(self, req):
        release.wait()
        return b"200\\n\\nok"
hostcalls = module("hostcalls", 5000)
body = b"GET http://example.com/\\n\\n"
waiters = [threading.Thread(target=hostcalls.instantiate().invoke,
                            args=(request("POST", "/fetch", body), Waiting(fetch_allowed=True)))
           for _ in range(20)]
for w in waiters:
    w.start()
time.sleep(0.2)
line.append(f"CPU in 2 s, 20 guests waiting in a host call: {cpu_in(2):.3f} s")
release.set()
for w in waiters:
    w.join()

loop = module("loop", 200)
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
    for ticker in ("deadline-thread", "python-thread"):
        done = subprocess.run([sys.executable, "-c", _CHILD, ticker, str(args.calls)],
                              cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        print(f"{ticker}: {done.stdout.strip()}")


if __name__ == "__main__":
    main()
