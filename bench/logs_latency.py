"""How long a request's log line takes to reach `edgefn logs --follow`: from the edge's
response to the line on a follower's HTTP stream, through the node's worker, its
main process, the control stream and the control plane (goal: within a second).

    python bench/logs_latency.py [--requests 50] [--transport grpc|websocket]

A control plane and one edge node (`edgefn.cluster`, processes on loopback); the
follower reads `GET /functions/{id}/logs?follow=true` in this process. The node
forwards every 0.1 s, so a line waits up to about 0.2 s by design (the worker's
tick, then the agent's), plus the stream and the follower's read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from edgefn.cluster import Cluster, wait_until

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "tests" / "fixtures" / "wasm" / "env_stdout.wasm"
GOAL_S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--transport", choices=["grpc", "websocket"], default="grpc")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgefn-logs-") as tmp:
        cluster = Cluster(Path(tmp), token="bench-admin", project="bench")
        cluster.env["EDGEFN_TRANSPORT"] = args.transport
        cluster.start_cp()
        try:
            run(cluster, args.requests, args.transport)
        finally:
            cluster.close()


def run(cluster: Cluster, requests: int, transport: str) -> None:
    edge = cluster.add_edge("bench-1", "pop-1")
    fid = cluster.function("logger")
    cluster.upload(fid, "1.0.0", MODULE.read_bytes())
    cluster.route(fid, "/out/*")
    cluster.deploy(fid, "1.0.0")
    wait_until("serving", lambda: edge.get("/out/ready").status_code == 200)

    arrived: dict[str, float] = {}
    lock = threading.Condition()

    def follow() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the cluster stops at the end
            read_lines()

    def read_lines() -> None:
        url = f"{cluster.api}/functions/{fid}/logs"
        with httpx.stream("GET", url, params={"follow": "true", "tail": 0},
                          headers=cluster.headers, timeout=None) as resp:
            for line in resp.iter_lines():
                if not line.strip():
                    continue
                record = json.loads(line)
                if record.get("type") == "invocation":
                    with lock:
                        arrived[record["request_id"]] = time.monotonic()
                        lock.notify_all()

    threading.Thread(target=follow, daemon=True).start()

    def seen(rid: str, timeout: float) -> float | None:
        with lock:
            lock.wait_for(lambda: rid in arrived, timeout)
            return arrived.get(rid)

    # Until the follow is open: a request whose line comes through.
    wait_until("following", lambda: seen(edge.get("/out/warmup").headers["x-request-id"],
                                         1.0) is not None)
    samples = []
    for i in range(requests):
        resp = edge.get(f"/out/{i}")
        answered = time.monotonic()
        at = seen(resp.headers["x-request-id"], 10.0)
        if at is None:
            raise SystemExit(f"request {i}: no line within 10 s")
        samples.append(at - answered)
        time.sleep(0.05)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"log line latency over {transport}, {requests} requests: "
          f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {samples[-1] * 1000:.0f} ms "
          f"(goal: under {GOAL_S * 1000:.0f} ms) -> {'ok' if samples[-1] < GOAL_S else 'OVER'}")


if __name__ == "__main__":
    main()
