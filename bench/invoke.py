"""In-process cost of one edge-v1 call: `Instance.invoke` of echo.wasm on a hot instance.

The engine's share of the hot path without HTTP, workers or wrk: what a change to
the engines costs shows here first. With --baseline-src, the same loop also runs
from another checkout's src/ directory, alternating (A B A B), and the ratio of
the medians is printed.

    python bench/invoke.py [--engine wasmtime] [--calls 20000] [--rounds 5]
                           [--baseline-src ../main/src]

WasmEdge compiles ahead of time where its library has LLVM; EDGEFN_WASMEDGE_AOT=0
measures its interpreter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from hot_path import checkout_src

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "tests" / "fixtures" / "wasm" / "echo.wasm"


class _Host:
    def remaining_seconds(self) -> float:
        return 1.0

    def output(self, stream: int, data: bytes) -> None:
        pass


def measure(engine_name: str, calls: int) -> float:
    """Microseconds per invoke, the best of three passes of `calls` calls.

    The calls are made from a thread of their own, as a node's request threads make
    them; both engines run the guest on the calling thread, so that thread's CPU time
    is the figure: it holds still on a busy machine, where wall time does not.
    """
    import threading
    import time

    from edgefn.sandbox import GuestRequest, Limits, WasiOptions, create_engine

    engine = create_engine(engine_name)
    module = engine.compile(ECHO.read_bytes(), Limits(), WasiOptions())
    inst = module.instantiate()
    request = GuestRequest(b"POST", b"/echo", b"host: edge.test\nx-request-id: r1\n", b"hello edge")
    host = _Host()
    clock = time.thread_time
    best = float("inf")

    def passes() -> None:
        nonlocal best
        for _ in range(1000):
            inst.invoke(request, host)
        for _ in range(3):
            t0 = clock()
            for _ in range(calls):
                inst.invoke(request, host)
            best = min(best, (clock() - t0) / calls * 1e6)

    thread = threading.Thread(target=passes)
    thread.start()
    thread.join()
    inst.close()
    module.close()
    engine.close()
    return best


def _run(src: Path, engine: str, calls: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, __file__, "--engine", engine, "--calls", str(calls), "--one"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="wasmtime")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src/ directory")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(f"{measure(args.engine, args.calls):.3f}")
        return
    this = ROOT / "src"
    sides = [("this", this)] + ([("baseline", checkout_src(args.baseline_src))]
                                if args.baseline_src else [])
    figures: dict[str, list[float]] = {name: [] for name, _ in sides}
    for _ in range(args.rounds):
        for name, src in sides:
            figures[name].append(_run(src, args.engine, args.calls))
    print(f"{args.engine}: echo invoke, thread CPU µs per call (best of 3 x {args.calls}), "
          f"median of {args.rounds} rounds; {os.cpu_count()} CPUs")
    for name, values in figures.items():
        print(f"  {name:9} {statistics.median(values):7.2f}  "
              f"({', '.join(f'{v:.2f}' for v in values)})")
    if args.baseline_src:
        this, base = figures["this"], figures["baseline"]
        # The fastest round is the one least disturbed by whatever else the machine ran.
        print(f"  this / baseline: {statistics.median(this) / statistics.median(base):.3f} "
              f"(medians), {min(this) / min(base):.3f} (fastest rounds)")


if __name__ == "__main__":
    main()
