"""Slow-client benchmark: latency of normal requests with and without attackers holding sockets.

Starts `edgefn edge serve` with the echo function, measures sequential POSTs from
one well-behaved client (127.0.0.1), then opens from 127.0.0.2 `--idle`
connections that send nothing and `--slow` connections that announce a
100,000-byte body and trickle one byte a second (each reopened when the server
ends it), and measures the same requests again while they are held. A node that
stalls shows up as failed (timed out) requests or a huge p99.

    python bench/slow_clients.py [--requests 500] [--idle 64] [--slow 16] [-- serve flags...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from edgefn.cluster import free_port, spawn, stop_process
from hot_path import wait_port

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "tests" / "fixtures" / "wasm" / "echo.wasm"
# The attackers are another client than the one measured (per-client limits apply).
ATTACKER = "127.0.0.2"
REQUEST = b"POST /echo HTTP/1.1\r\nHost: bench\r\nContent-Length: 10\r\n\r\nhello edge"


def one_request(port: int, timeout: float) -> float | None:
    """Seconds for a fresh connection's request and full response; None when it failed."""
    t0 = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(max(0.01, timeout - (time.perf_counter() - t0)))
            s.sendall(REQUEST)
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"hello edge"):
                chunk = s.recv(65536)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    if not data.startswith(b"HTTP/1.1 200"):
        return None
    return time.perf_counter() - t0


def measure(port: int, n: int, timeout: float) -> dict[str, float]:
    samples, failed = [], 0
    for _ in range(n):
        took = one_request(port, timeout)
        if took is None:
            failed += 1
        else:
            samples.append(took)
    samples.sort()
    if not samples:
        return {"ok": 0, "failed": failed, "p50_ms": float("nan"), "p99_ms": float("nan"),
                "max_ms": float("nan")}
    return {
        "ok": len(samples), "failed": failed,
        "p50_ms": samples[len(samples) // 2] * 1000,
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
        "max_ms": samples[-1] * 1000,
    }


class Attackers:
    """Idle and slow-body connections, each reopened when the server closes it."""

    def __init__(self, port: int, idle: int, slow: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.closed_by_server = 0
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._idle, daemon=True) for _ in range(idle)]
        self.threads += [threading.Thread(target=self._slow, daemon=True) for _ in range(slow)]

    def start(self) -> None:
        for t in self.threads:
            t.start()
        time.sleep(0.5)  # let every socket connect before measuring

    def _closed(self) -> None:
        with self._lock:
            self.closed_by_server += 1

    def _hold(self, first: bytes, trickle: bytes | None) -> None:
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1,
                                              source_address=(ATTACKER, 0)) as s:
                    if first:
                        s.sendall(first)
                    while not self.stop.is_set():
                        if trickle is not None:
                            s.sendall(trickle)
                        s.settimeout(1)
                        try:
                            if not s.recv(4096):
                                break
                            break  # any answer (408) means the server let go of us
                        except TimeoutError:
                            continue
            except OSError:
                pass
            if not self.stop.is_set():
                self._closed()
                self.stop.wait(0.05)

    def _idle(self) -> None:
        self._hold(b"", None)

    def _slow(self) -> None:
        head = b"POST /echo HTTP/1.1\r\nHost: bench\r\nContent-Length: 100000\r\n\r\nx"
        self._hold(head, b"x")

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--idle", type=int, default=64)
    parser.add_argument("--slow", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="a normal request slower than this counts as failed")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("serve_args", nargs="*", help="extra flags for `edgefn edge serve`")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        fn = tmp / "functions" / "echo"
        fn.mkdir(parents=True)
        shutil.copy(ECHO, fn / "echo.wasm")
        (fn / "function.json").write_text(json.dumps({
            "id": "echo", "version": "1.0.0", "artifact": "echo.wasm",
            "routes": [{"host": "*", "path": "/echo"}],
        }))
        port, mport = free_port(), free_port()
        cmd = [sys.executable, "-m", "edgefn", "edge", "serve", "--functions",
               str(tmp / "functions"), "--port", str(port), "--metrics-port", str(mport),
               "--data-dir", str(tmp / "data"), "--workers", str(args.workers),
               "--log-file", str(tmp / "edge.log"), *args.serve_args]
        proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port, proc)
            time.sleep(1)
            measure(port, 50, args.timeout)  # warm up
            quiet = measure(port, args.requests, args.timeout)
            attackers = Attackers(port, args.idle, args.slow)
            attackers.start()
            try:
                loud = measure(port, args.requests, args.timeout)
            finally:
                attackers.close()
        finally:
            stop_process(proc)
    print(f"{args.requests} sequential POSTs on fresh connections, {args.workers} workers, "
          f"timeout {args.timeout:g} s")
    print(f"{'case':44} {'ok':>6} {'failed':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, r in (("no attackers", quiet),
                    (f"{args.idle} idle + {args.slow} slow-body connections", loud)):
        print(f"{name:44} {r['ok']:>6.0f} {r['failed']:>6.0f} {r['p50_ms']:>8.2f} "
              f"{r['p99_ms']:>8.2f} {r['max_ms']:>8.2f}")
    print(f"attacker connections the server ended: {attackers.closed_by_server}")


if __name__ == "__main__":
    main()
