"""One node holding many functions with routes: route lookup, state file and start-up.

For each size N (default 100, 1,000 and 10,000 functions) it builds the state a
node gets from the control plane (N functions of N/10 projects, one route each:
a third on a host of their own, a third on a wildcard, a third on a `*` path),
then measures, in this process:

- the state file: writing it (what the agent does at every deploy), reading and
  validating it (what every worker does at every change), its size;
- the agent's start (`NodeController`, reading the state) and one deploy applied
  on top of the N functions (artifact in the cache; the compile is left out:
  bench/compile_cache.py measures it);
- a worker's reload: `Runtime.apply_state` of a state it already runs with one
  function changed, and its first load at start-up, which loads and warms every
  function (min_hot_instances 1) from the compiled-code cache: one module for all
  (the same bytes under N ids, so the compile happens once and the rest is loading);
- route lookup (`Router.match`) for the first, middle and last function's route
  of each kind, and a miss: flat means the same ns at every N.

    python bench/node_scale.py [--functions 100 1000 10000] [--no-startup]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

from edgefn.contract import DeployInstruction, RouteSpec
from edgefn.edge.bootstrap import build_cache, build_runtime
from edgefn.edge.node.controller import NodeController
from edgefn.edge.settings import EdgeSettings
from edgefn.edge.spec import FunctionSpec, NodeState, read_state, write_state

WAT = """(module
  (memory (export "memory") 1)
  (data (i32.const 0) "200\\0a\\0aok")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (memory.copy (local.get 8) (i32.const 0) (i32.const 7))
    (i32.const 7)))"""


def route_of(i: int, project: str) -> tuple[str, str]:
    kind = i % 3
    if kind == 0:
        return f"f{i}.{project}.test", "/*"
    if kind == 1:
        return f"*.w{i}.{project}.test", "/api/*"
    return "*", f"/{project}/f{i}/*"


def state_of(n: int, sha: str, *, version: str = "1.0.0") -> NodeState:
    functions, table = [], []
    for i in range(n):
        project = f"p{i // 10}"
        functions.append(FunctionSpec(
            id=f"fn-{i:05d}", name=f"f{i}", project_id=project, version=version,
            abi="edge-v1", sha256=sha, artifact_url="http://127.0.0.1:9/unused",
        ))
        host, path = route_of(i, project)
        table.append(RouteSpec(id=f"r{i}", host=host, path=path, function_id=f"fn-{i:05d}",
                               project_id=project))
    # Sorted as the control plane sends routes (host, path, priority, id).
    table.sort(key=lambda r: (r.host, r.path, -r.priority, r.id))
    return NodeState(generation=1, functions=tuple(functions), route_table=tuple(table))


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def per_call_ns(fn: Callable[[], object], calls: int = 20_000, rounds: int = 5) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(samples)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def run(n: int, wasm: bytes, startup: bool) -> None:
    sha = hashlib.sha256(wasm).hexdigest()
    with tempfile.TemporaryDirectory() as d:
        # The artifact cache holds every version run and the one before it.
        settings = EdgeSettings(data_dir=Path(d), node_id="scale", workers=1,
                                cache_max_files=2 * n + 10)
        state = state_of(n, sha)
        cache = build_cache(settings)
        for fn in state.functions:
            cache.put(fn.id, fn.version, sha, wasm)

        write_s, _ = timed(lambda: write_state(settings.state_path, state))
        size = settings.state_path.stat().st_size
        read_s, _ = timed(lambda: read_state(settings.state_path))
        agent_s, made = timed(lambda: NodeController(settings.state_path, cache, None))
        controller = made if isinstance(made, NodeController) else None
        assert controller is not None
        # One deploy on top: a new version of the middle function, its route unchanged.
        middle = state.functions[n // 2]
        cache.put(middle.id, "2.0.0", sha, wasm)
        instr = DeployInstruction(
            id=1, function_id=middle.id, version="2.0.0", artifact_url=middle.artifact_url,
            sha256=sha, project_id=middle.project_id, abi="edge-v1",
        )
        deploy_s, ack = timed(lambda: controller.apply(instr))
        assert getattr(ack, "state", "") == "cached", ack
        print(f"{n:>6} functions: state file {size / 2**20:.1f} MiB, written {ms(write_s)}, "
              f"read {ms(read_s)}; agent start {ms(agent_s)}; a deploy applied {ms(deploy_s)}")

        runtime = build_runtime(settings)
        try:
            if startup:
                first_s, _ = timed(lambda: runtime.apply_state(state))
                print(f"{'':>6} worker start-up: every function loaded and warmed "
                      f"{ms(first_s)} ({first_s / n * 1e6:.0f} us a function)")
            else:
                cold = state.model_copy(update={"functions": tuple(
                    f.model_copy(update={"min_hot_instances": 0}) for f in state.functions)})
                first_s, _ = timed(lambda: runtime.apply_state(cold))
                print(f"{'':>6} worker start-up, nothing loaded (min_hot_instances 0): "
                      f"{ms(first_s)}")
            if not startup:
                # What the runtime holds must be what the reader hands back next.
                write_state(settings.state_path, cold)
                controller.state = cold
                controller.apply(instr.model_copy(update={"id": 2, "version": "1.0.0"}))
            reread_s, after = timed(lambda: read_state(settings.state_path))
            assert isinstance(after, NodeState)
            reload_s, _ = timed(lambda: runtime.apply_state(after))
            print(f"{'':>6} worker reload after a deploy: read {ms(reread_s)} + apply "
                  f"{ms(reload_s)}")
            cases = {}
            for label, i in (("first", 0), ("middle", n // 2), ("last", n - 1)):
                for kind in range(3):
                    j = i - i % 3 + kind
                    if j >= n:
                        j -= 3
                    host, path = route_of(j, f"p{j // 10}")
                    host = host.replace("*.", "a.") if host != "*" else "nobody.test"
                    cases[f"{label} {('host', 'wildcard', '* path')[kind]}"] = (
                        host, path.replace("*", "x"))
            cases["miss"] = ("nobody.test", "/none/of/these")
            # The router's match itself: `Runtime.route` keeps recent targets in a small
            # cache, which a benchmark repeating a few targets would measure instead.
            router = runtime._tables.router
            figures = []
            for name, (host, path) in cases.items():
                assert (router.match(host, path, "GET") is not None) == (name != "miss"), name
                ns = per_call_ns(lambda h=host, p=path: router.match(h, p, "GET"))
                figures.append(f"{name} {ns:.0f}")
            print(f"{'':>6} route lookup (Router.match), ns: " + ", ".join(figures))
            cached = per_call_ns(lambda: runtime.route("nobody.test", "/p0/f2/x", "GET"))
            print(f"{'':>6} Runtime.route on a recent target (its cache): {cached:.0f} ns")
        finally:
            runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, nargs="+", default=[100, 1000, 10_000])
    parser.add_argument("--no-startup", dest="startup", action="store_false",
                        help="skip loading and warming every function at the worker's start")
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} cores")
    wasm = bytes(wasmtime.wat2wasm(WAT))
    for n in args.functions:
        run(n, wasm, args.startup)


if __name__ == "__main__":
    main()
