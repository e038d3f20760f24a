"""CPU of an instance's start and of a suspended guest's call: the C halves, the Python steps.

A burst larger than a function's hot instances instantiates the rest and destroys
them after (`bench/fetch_cost.py`); a function that may wait runs as a suspended
guest whose calls are futures. This measures, in process, alternating the two ways
each is done (A B A B), on the thread's CPU clock:

- an instance made and closed: its store and instance made in C
  (`_edgecall.open_store`, `instantiate`) against the Python steps
  (`WasmtimeModule.new_store`, `_BaseInstance._instantiate`), for echo.wasm (a
  guest that cannot wait) and hostcalls.wasm (one that may, a suspended guest);
- a suspended guest's invoke that does not wait (hostcalls.wasm answering 404):
  `alloc`, the inputs and `handle` started in C (`_edgecall.start`), and the
  response read and `dealloc` called in C (`_edgecall.answer`), against the
  hooks, each call a future driven from Python.

    python bench/instantiate.py [--runs 20] [--count 300]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from edgefn.sandbox import Limits, WasiOptions, create_engine
from edgefn.sandbox.options import WasmtimeOptions
from invoke import _Host

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "tests" / "fixtures" / "wasm"


def _per_op(fn: Callable[[], None], count: int) -> float:
    t0 = time.thread_time()
    for _ in range(count):
        fn()
    return (time.thread_time() - t0) / count * 1e6


def _ab(a: Callable[[], None], b: Callable[[], None], runs: int,
        count: int) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for _ in range(runs):
        xs.append(_per_op(a, count))
        ys.append(_per_op(b, count))
    return xs, ys


def _line(label: str, xs: list[float], ys: list[float]) -> None:
    print(f"{label:<52} C {min(xs):6.1f} best, {statistics.median(xs):6.1f} median   "
          f"Python {min(ys):6.1f} best, {statistics.median(ys):6.1f} median  (µs)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="alternating runs of each way")
    p.add_argument("--count", type=int, default=300, help="operations a run")
    args = p.parse_args()
    from edgefn.sandbox.abi import encode_headers
    from edgefn.sandbox.engine import GuestRequest

    blocking = create_engine("wasmtime", options=WasmtimeOptions(suspend_waiting=False))
    suspending = create_engine("wasmtime", options=WasmtimeOptions(suspend_waiting=True))
    try:
        for label, engine, name in (("echo.wasm: instantiate and close", blocking, "echo"),
                                    ("hostcalls.wasm (suspended guest): instantiate and close",
                                     suspending, "hostcalls")):
            wasm = (WASM / f"{name}.wasm").read_bytes()
            in_c = engine.compile(wasm, Limits(), WasiOptions())
            steps = engine.compile(wasm, Limits(), WasiOptions())
            if in_c.store_spec is None:
                raise SystemExit("the C halves are not built here (setup.py build_ext)")
            steps.store_spec = None
            xs, ys = _ab(lambda m=in_c: m.instantiate().close(),
                         lambda m=steps: m.instantiate().close(), args.runs, args.count)
            _line(label, xs, ys)
            in_c.close()
            steps.close()

        module = suspending.compile((WASM / "hostcalls.wasm").read_bytes(), Limits(),
                                    WasiOptions())
        started, hooks = module.instantiate(), module.instantiate()
        hooks._start_plan = None
        request = GuestRequest(b"GET", b"/nothing", encode_headers([(b"host", b"bench")]), b"")
        host = _Host()
        xs, ys = _ab(lambda: started.invoke(request, host),  # type: ignore[arg-type]
                     lambda: hooks.invoke(request, host),  # type: ignore[arg-type]
                     args.runs, args.count * 10)
        _line("hostcalls.wasm (suspended guest): invoke, no wait", xs, ys)
        started.close()
        hooks.close()
        module.close()
    finally:
        blocking.close()
        suspending.close()


if __name__ == "__main__":
    main()
