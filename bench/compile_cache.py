"""What sealing compiled code costs: loading a module from the node's compile cache
with its seal checked, against loading the same machine code unchecked and against
compiling it.

A worker loads a version once (then pools instances), so this is a per-load cost,
never a per-request one.

    python bench/compile_cache.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

from edgefn.sandbox.compilecache import CompileCache

ROOT = Path(__file__).resolve().parent.parent
MODULES = {
    "hello-c": ROOT / "examples" / "hello-c" / "hello.wasm",
    "compute": ROOT / "tests" / "fixtures" / "wasm" / "compute.wasm",
}


def median_ms(rounds: int, fn: Callable[[], object]) -> float:
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    config = wasmtime.Config()
    config.epoch_interruption = True
    engine = wasmtime.Engine(config)
    print(f"{'module':<10} {'code KiB':>8} {'compile':>10} {'unchecked':>10} "
          f"{'sealed':>10} {'seal check':>10}   (median ms per load)")
    for name, path in MODULES.items():
        wasm = path.read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            cache = CompileCache(Path(tmp) / "compiled", b"k" * 32)
            source = hashlib.sha256(wasm).hexdigest()
            code = bytes(wasmtime.Module(engine, wasm).serialize())
            cache.store(source, "bench", code)
            raw = Path(tmp) / "raw.cwasm"
            raw.write_bytes(code)
            compile_ms = median_ms(max(5, args.rounds // 20),
                                   lambda w=wasm: wasmtime.Module(engine, w))
            unchecked = median_ms(args.rounds, lambda p=raw: wasmtime.Module.deserialize_file(
                engine, str(p)))
            sealed = median_ms(args.rounds, lambda s=source, c=cache: wasmtime.Module.deserialize(
                engine, c.load(s, "bench")))
            check = median_ms(args.rounds, lambda s=source, c=cache: c.load(s, "bench"))
        print(f"{name:<10} {len(code) / 1024:>8.1f} {compile_ms:>10.3f} {unchecked:>10.3f} "
              f"{sealed:>10.3f} {check:>10.3f}")


if __name__ == "__main__":
    main()
