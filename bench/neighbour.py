"""Noisy neighbour: how much a looping function costs another function on the same node.

A real `edgefn edge serve --functions DIR` with two tenants' functions: `echo`
(tests/fixtures/wasm/echo.wasm) and `loop` (loop.wasm, max_execution_ms 200).
wrk measures the echo alone, then again while a second wrk hammers the loop
with 8 connections, in several rounds; the figures are the medians of the
echo's req/s and p99 in both phases and of their ratio per round. The node runs
once without the penalty threads (`--penalty-threads 0`) and once with them (the
default), each measured alone and with the neighbour back to back, so that the
ratios hold on a machine shared with other work.

`--quota-cost` instead measures what a quota admission (enter + leave on the
node's shared table) costs in this process.

    python bench/neighbour.py [--duration 5] [--rounds 3] [--connections 50] [--workers 2]
    python bench/neighbour.py --quota-cost
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edgefn.cluster import free_port, spawn, stop_process
from hot_path import checkout_src, parse_wrk, wait_port

ROOT = Path(__file__).resolve().parent.parent
WASM = ROOT / "tests" / "fixtures" / "wasm"


def write_functions(root: Path) -> None:
    for fid, module, extra in (
        ("echo", "echo", {"min_hot_instances": 8, "max_hot_instances": 8,
                          "project_id": "tenant-echo"}),
        ("loop", "loop", {"max_execution_ms": 200, "project_id": "tenant-loop"}),
    ):
        folder = root / fid
        folder.mkdir(parents=True)
        shutil.copy(WASM / f"{module}.wasm", folder / f"{module}.wasm")
        (folder / "function.json").write_text(json.dumps({
            "id": fid, "version": "1.0.0", "artifact": f"{module}.wasm",
            "routes": [{"host": "*", "path": f"/{fid}"}], **extra,
        }))


def wrk(url: str, duration: int, connections: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def measure(args: argparse.Namespace, tmp: Path, penalty_threads: int) -> dict[str, Any]:
    tmp = tmp / f"penalty-{penalty_threads}"
    write_functions(tmp / "functions")
    port, mport = free_port(), free_port()
    cmd = [sys.executable, "-m", "edgefn", "edge", "serve", "--functions", str(tmp / "functions"),
           "--port", str(port), "--metrics-port", str(mport), "--data-dir", str(tmp / "data"),
           "--workers", str(args.workers),
           *(["--threads", str(args.threads)] if args.threads else []),
           "--log-file", str(tmp / "edge.log"), "--penalty-threads", str(penalty_threads),
           # Quotas out of the way: this measures sharing the CPU, not refusing.
           "--quota-invocations-per-minute", str(10**9), "--quota-max-concurrency", "1000"]
    env = {**os.environ, "PYTHONPATH": str(checkout_src(args.src))} if args.src else None
    proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_port(port, proc)
        time.sleep(1)
        wrk(base + "/echo", 2, args.connections).communicate()  # warm up
        rounds = []
        loop_req_s = []
        for _ in range(args.rounds):
            # Alone, then with the neighbour, back to back: the machine's other load
            # drifts less within a round than across the run.
            alone = run(base + "/echo", args.duration, args.connections)
            noisy = wrk(base + "/loop", args.duration + 3, 8)
            time.sleep(2)  # the loop's first timeouts: its strikes
            busy = run(base + "/echo", args.duration, args.connections)
            loop_out = noisy.communicate()[0]
            if "Requests/sec" in loop_out and "50%" in loop_out:
                loop_req_s.append(parse_wrk(loop_out)["req_s"])
            rounds.append((alone, busy))
        statuses = loop_statuses(mport)
    finally:
        stop_process(proc)
    return {
        "alone_req_s": median(a["req_s"] for a, _ in rounds),
        "alone_p99_ms": median(a["p99_ms"] for a, _ in rounds),
        "busy_req_s": median(b["req_s"] for _, b in rounds),
        "busy_p99_ms": median(b["p99_ms"] for _, b in rounds),
        "ratio": median(b["req_s"] / a["req_s"] for a, b in rounds),
        "ratios": [round(b["req_s"] / a["req_s"], 2) for a, b in rounds],
        "loop_req_s": median(loop_req_s) if loop_req_s else 0.0,
        "echo_non_2xx": sum(a["non_2xx"] + b["non_2xx"] for a, b in rounds),
        **statuses,
    }


def run(url: str, duration: int, connections: int) -> dict[str, float]:
    return parse_wrk(wrk(url, duration, connections).communicate()[0])


def loop_statuses(metrics_port: int) -> dict[str, float]:
    """The loop's timeouts and refusals (503: its penalty threads were full)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    out = {"loop_timeouts": 0.0, "loop_refused": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "wasm_invoke_errors_total" and sample.labels["function_id"] == "loop":
                key = "loop_timeouts" if sample.labels["code"] == "timeout" else "loop_refused"
                out[key] += sample.value
    return out


def quota_cost(n: int = 200_000) -> None:
    from edgefn.edge.quotas import QuotaLimits, open_table

    with tempfile.TemporaryDirectory() as d:
        table = open_table(Path(d) / "quotas.bin", node_id="bench")
        limits = QuotaLimits(10**6, 10**12, 10**15)
        table.enter("bench-project", limits)
        t0 = time.perf_counter()
        for _ in range(n):
            table.enter("bench-project", limits)
            table.leave("bench-project", 0.0001)
        per = (time.perf_counter() - t0) / n * 1e6
    print(f"quota admission (enter + leave, shared table, lockf): {per:.2f} µs per request")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per phase")
    p.add_argument("--rounds", type=int, default=3,
                   help="alone / with the neighbour pairs; medians are printed")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--threads", type=int, default=None,
                   help="edgefn --threads [the node's default]")
    p.add_argument("--src", type=Path, help="run the edge from this checkout's src/")
    p.add_argument("--only-default", action="store_true",
                   help="measure the node with its penalty threads only")
    p.add_argument("--quota-cost", action="store_true")
    return p


def main() -> None:
    args = parser().parse_args()
    if args.quota_cost:
        quota_cost()
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    print(f"echo: wrk -t2 -c{args.connections} -d{args.duration}s, {args.rounds} rounds (medians);"
          f" neighbour: wrk -c8 on a looping function (200 ms deadline); {args.workers} workers,"
          f" threads {args.threads or 'default'}")
    with tempfile.TemporaryDirectory() as d:
        variants = [(0, "without penalty threads"), (1, "with penalty threads (default)")]
        for penalty_threads, label in variants[1:] if args.only_default else variants:
            r = measure(args, Path(d), penalty_threads)
            print(f"{label:32} alone {r['alone_req_s']:8.0f} req/s p99 {r['alone_p99_ms']:6.1f} ms"
                  f" | with neighbour {r['busy_req_s']:8.0f} req/s p99 {r['busy_p99_ms']:6.1f} ms"
                  f" | ratio {r['ratio']:.2f} {r['ratios']} | loop {r['loop_req_s']:.0f} req/s"
                  f" ({r['loop_timeouts']:.0f} timeouts, {r['loop_refused']:.0f} refused)"
                  f" | echo non-2xx {r['echo_non_2xx']:.0f}")
            if not penalty_threads:
                continue
            kept = r["ratio"] >= 0.8
            fast = r["busy_p99_ms"] <= 5
            print(f"goals (default node): echo keeps >= 80% of its req/s: "
                  f"{'met' if kept else 'NOT met'} ({r['ratio']:.0%}); its p99 with the "
                  f"neighbour <= 5 ms: {'met' if fast else 'NOT met'} ({r['busy_p99_ms']:.1f} ms)")


if __name__ == "__main__":
    main()
