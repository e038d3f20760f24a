"""Precompiled artifacts on and off: deploy propagation to N edge processes and the
first request each serves of the new version.

    python bench/precompiled.py [--nodes 2] [--deploys 5] [--functions 1500]

For each mode a fresh cluster (one control plane on SQLite, N `edgefn edge serve`
processes) takes `--deploys` versions of one function, each a module the size of a
real application: `--functions` filler functions beside the handler (compiled like
any other code), and a response naming the version. A version is uploaded, and
with `on` the deploy waits for its precompiled code to be ready (the usual order:
the upload or build, then the deploy), so that "precompile" reports how long after
the upload the code was there. Then the deploy; "propagation" is from the deploy
call returning to the first 200 carrying the new body from every node, and "first
request" is how long that first 200 took (a worker loading the version from the
node's compile cache). With `off` every node compiles each version itself; with
`on` it downloads the code, checks its sha256 and loads it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import wasmtime

from edgefn.cluster import Cluster, Edge, wait_until

POLL_S = 0.005


def module(tag: str, functions: int) -> bytes:
    """An edge-v1 module answering `200`, a blank line and `tag`, with `functions`
    more functions of some arithmetic each, so that compiling it costs what compiling
    an application does."""
    response = f"200\\0a\\0a{tag}"
    length = 5 + len(tag)
    filler = "\n".join(
        f"""(func $f{i} (param i32 i32) (result i32)
              (local i32)
              (local.set 2 (i32.mul (local.get 0) (i32.const {i + 3})))
              (if (i32.gt_u (local.get 2) (local.get 1))
                (then (local.set 2 (i32.xor (local.get 2) (i32.rotl (local.get 1) (i32.const 7)))))
                (else (local.set 2 (i32.add (local.get 2) (i32.popcnt (local.get 1))))))
              (i32.add (local.get 2) (i32.shr_u (local.get 0) (i32.const {i % 31 + 1}))))"""
        for i in range(functions))
    return bytes(wasmtime.wat2wasm(f"""
      (module
        (memory (export "memory") 2)
        (data (i32.const 0) "{response}")
        {filler}
        (func (export "alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
          (memory.copy (local.get 8) (i32.const 0) (i32.const {length}))
          (i32.const {length})))
    """))


@dataclass
class Result:
    mode: str
    propagation: list[float] = field(default_factory=list)  # all nodes, per deploy
    first_request: list[float] = field(default_factory=list)  # per node and deploy
    precompile: list[float] = field(default_factory=list)  # upload -> code ready


def first_200(edge: Edge, body: bytes, start: float, out: dict[str, tuple[float, float]]) -> None:
    """When `edge` first answered 200 with `body` (since `start`), and how long that
    request took."""
    with httpx.Client(base_url=edge.url, timeout=10) as client:
        while True:
            sent = time.perf_counter()
            try:
                resp = client.get("/p")
                if resp.status_code == 200 and resp.content == body:
                    done = time.perf_counter()
                    out[edge.node_id] = (done - start, done - sent)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(POLL_S)


def run(mode: str, args: argparse.Namespace, root: Path) -> Result:
    cluster = Cluster(root / mode, token="bench-admin-token", project="bench")
    cluster.env["EDGEFN_PRECOMPILE_ENGINES"] = "wasmtime" if mode == "on" else ""
    cluster.env["EDGEFN_PRECOMPILE_POLL_S"] = "0.5"
    cluster.start_timeout_s = 300  # the processes start slowly on a loaded machine
    result = Result(mode)
    try:
        cluster.start_cp()
        edges = cluster.add_edges([(f"node-{i}", "jp-t1") for i in range(args.nodes)])
        fid = cluster.function("p")
        cluster.route(fid, "/p")
        for i in range(args.deploys):
            version = f"1.0.{i}"
            tag = f"{mode}-{i}"
            uploaded = time.perf_counter()
            cluster.upload(fid, version, module(tag, args.functions))
            if mode == "on":
                wait_until("precompiled code", lambda v=version: any(
                    r["state"] == "ready" for r in cluster.call(
                        "GET", f"/functions/{fid}/versions/{v}/precompiled")), timeout=120)
                result.precompile.append(time.perf_counter() - uploaded)
            cluster.deploy(fid, version)
            start = time.perf_counter()
            seen: dict[str, tuple[float, float]] = {}
            threads = [threading.Thread(target=first_200, args=(e, tag.encode(), start, seen),
                                        daemon=True) for e in edges]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            if len(seen) != len(edges):
                raise RuntimeError(f"{version}: not served by every node in 120 s")
            result.propagation.append(max(p for p, _ in seen.values()))
            result.first_request.extend(r for _, r in seen.values())
            print(f"  {mode} {version}: all {len(edges)} nodes in "
                  f"{max(p for p, _ in seen.values()) * 1000:.0f} ms", flush=True)
    finally:
        cluster.close()
    return result


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ms(samples: list[float]) -> str:
    if not samples:
        return f"{'-':>8} {'-':>8} {'-':>8}"
    return " ".join(f"{v * 1000:8.0f}" for v in
                    (statistics.median(samples), pct(samples, 99), max(samples)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--deploys", type=int, default=5)
    parser.add_argument("--functions", type=int, default=1500)
    parser.add_argument("--modes", nargs="+", choices=("off", "on"), default=["off", "on"])
    args = parser.parse_args()
    sample = module("x", args.functions)
    engine = wasmtime.Engine()
    t = time.perf_counter()
    code = wasmtime.Module(engine, sample).serialize()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    wasmtime.Module.deserialize(engine, code)
    load_s = time.perf_counter() - t
    print(f"module: {len(sample) // 1024} KiB wasm, {len(code) // 1024} KiB compiled; "
          f"here {compile_s * 1000:.0f} ms to compile, {load_s * 1000:.1f} ms to load compiled")
    results = []
    with tempfile.TemporaryDirectory(prefix="edgefn-bench-precompiled-") as tmp:
        for mode in args.modes:
            results.append(run(mode, args, Path(tmp)))
    print(f"\n{args.nodes} edge processes, {args.deploys} deploys each; ms: p50 p99 max")
    print(f"{'precompiled':<12} {'propagation (all nodes)':>26} {'first request':>26} "
          f"{'precompile after upload':>26}")
    for r in results:
        print(f"{r.mode:<12} {ms(r.propagation):>26} {ms(r.first_request):>26} "
              f"{ms(r.precompile):>26}")


if __name__ == "__main__":
    main()
