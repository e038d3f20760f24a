"""What the deadline costs: the same CPU-bound guest with no interruption, with epoch
interruption (the default; a ticker thread advancing the epoch every 1 ms) and with
fuel metering, on wasmtime.

The guest is tests/fixtures/wasm/compute.wasm (a 64-bit mix over a buffer plus a
tight add loop); the figure is the median wall time of one `handle` call.

    python bench/epoch_overhead.py [--rounds 200] [--calls 30]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import wasmtime

MODULE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "wasm" / "compute.wasm"


def run(mode: str, rounds: int, calls: int) -> float:
    config = wasmtime.Config()
    config.cranelift_opt_level = "speed"
    if mode == "epoch":
        config.epoch_interruption = True
    if mode == "fuel":
        config.consume_fuel = True
    engine = wasmtime.Engine(config)
    stop = threading.Event()
    if mode == "epoch":
        def tick() -> None:
            while not stop.wait(0.001):
                engine.increment_epoch()

        threading.Thread(target=tick, daemon=True).start()
    store = wasmtime.Store(engine)
    if mode == "epoch":
        store.set_epoch_deadline(10**9)
    if mode == "fuel":
        store.set_fuel(2**62)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store.set_wasi(wasmtime.WasiConfig())
    instance = linker.instantiate(store, wasmtime.Module(engine, MODULE.read_bytes()))
    ex = instance.exports(store)
    ex["_initialize"](store)
    memory = ex["memory"]
    method, target = b"GET", f"/c?n={rounds}".encode()
    cap = 4096
    ptr = ex["alloc"](store, len(method) + len(target) + cap)
    memory.write(store, method + target, ptr)
    samples = []
    for _ in range(calls):
        t0 = time.perf_counter()
        ex["handle"](store, ptr, 3, ptr + 3, len(target), ptr, 0, ptr, 0,
                     ptr + 3 + len(target), cap)
        samples.append(time.perf_counter() - t0)
    stop.set()
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    # Interleaved, three times each, best median kept: other load on the machine
    # then inflates no mode more than another.
    modes = ("none", "epoch", "fuel")
    best = {m: float("inf") for m in modes}
    for _ in range(3):
        for mode in modes:
            best[mode] = min(best[mode], run(mode, args.rounds, args.calls))
    print(f"compute.wasm, n={args.rounds}, best of 3 medians of {args.calls} calls")
    print(f"{'deadline mechanism':28} {'ms/call':>9} {'vs none':>8}")
    for mode in modes:
        print(f"{mode:28} {best[mode] * 1000:>9.2f} {best[mode] / best['none']:>7.2f}x")


if __name__ == "__main__":
    main()
