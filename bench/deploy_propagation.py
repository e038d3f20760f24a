"""Deploy propagation: from `POST /deploy` returning to the first 200 of the new version
on every node, over 20 deploys, with 2 and with 10 edge processes on loopback.

    python bench/deploy_propagation.py [--deploys 20] [--nodes 2 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import wasmtime

from edgefn.cluster import Cluster, Edge, wait_until

POLL_S = 0.002


def version_module(tag: str) -> bytes:
    """An edge-v1 module whose whole response is `200`, a blank line and `tag`."""
    response = f"200\\0a\\0a{tag}"
    length = 5 + len(tag)
    return bytes(wasmtime.wat2wasm(f"""
      (module
        (memory (export "memory") 2)
        (data (i32.const 0) "{response}")
        (func (export "alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
          (memory.copy (local.get 8) (i32.const 0) (i32.const {length}))
          (i32.const {length})))
    """))


def first_200(edge: Edge, tag: bytes, start: float, out: dict[str, float]) -> None:
    with httpx.Client(base_url=edge.url, timeout=5) as client:
        while True:
            try:
                resp = client.get("/p")
                if resp.status_code == 200 and resp.content == tag:
                    out[edge.node_id] = time.perf_counter() - start
                    return
            except httpx.HTTPError:
                pass
            time.sleep(POLL_S)


def run(nodes: int, deploys: int) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        cluster = Cluster(Path(d), token="bench-token", project="bench")
        try:
            cluster.start_cp()
            edges = [cluster.add_edge(f"node-{i}", f"pop-{i}", region=f"r{i % 3}")
                     for i in range(nodes)]
            fid = cluster.function("propagation")
            cluster.route(fid, "/p")
            for i in range(deploys + 1):
                cluster.upload(fid, f"1.0.{i}", version_module(f"v{i}"))
            cluster.deploy(fid, "1.0.0")  # warm: routes, first pull
            for edge in edges:
                wait_until("first version", lambda e=edge: e.get("/p").content == b"v0", 60)
            samples = []
            for i in range(1, deploys + 1):
                tag = f"v{i}".encode()
                seen: dict[str, float] = {}
                cluster.deploy(fid, f"1.0.{i}")
                start = time.perf_counter()
                threads = [threading.Thread(target=first_200, args=(e, tag, start, seen))
                           for e in edges]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=30)
                if len(seen) != len(edges):
                    raise RuntimeError(f"deploy {i}: only {sorted(seen)} served it in 30 s")
                samples.append(max(seen.values()))
            return samples
        finally:
            cluster.close()


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=20)
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 10])
    args = parser.parse_args()
    print(f"{'edge processes':>14} {'deploys':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'mean ms':>8}")
    for n in args.nodes:
        samples = run(n, args.deploys)
        print(f"{n:>14} {len(samples):>8} {pct(samples, 0.5) * 1000:>8.0f} "
              f"{pct(samples, 0.99) * 1000:>8.0f} {max(samples) * 1000:>8.0f} "
              f"{statistics.mean(samples) * 1000:>8.0f}")


if __name__ == "__main__":
    main()
