"""The local cluster's balancer in front of control-plane replicas: requests move
to a live backend when one is SIGKILLed, on new and on kept-alive connections."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgefn import cluster
from edgefn.cluster import Balancer, free_port, spawn, stop_process, wait_until

# A keep-alive HTTP server answering its name, as a process of its own to kill.
SERVER = """
import http.server, sys
class Named(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "1")
        self.end_headers()
        self.wfile.write(sys.argv[2].encode())
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Named).serve_forever()
"""


@pytest.fixture
def balanced() -> Iterator[tuple[Balancer, dict[str, subprocess.Popen[bytes]]]]:
    balancer = Balancer()
    procs = {}
    for name in ("a", "b"):
        port = free_port()
        procs[name] = spawn([sys.executable, "-c", SERVER, str(port), name])
        wait_until(name, lambda p=port: httpx.get(f"http://127.0.0.1:{p}").status_code == 200)
        balancer.backends.append(port)
    yield balancer, procs
    balancer.close()
    for proc in procs.values():
        stop_process(proc)


def test_requests_go_round_and_avoid_a_killed_backend(
    balanced: tuple[Balancer, dict[str, subprocess.Popen[bytes]]],
) -> None:
    balancer, procs = balanced
    assert {httpx.get(balancer.url).text for _ in range(4)} == {"a", "b"}
    with httpx.Client(base_url=balancer.url) as kept:
        first = kept.get("/").text
        procs[first].kill()
        procs[first].wait()
        other = "b" if first == "a" else "a"
        assert {httpx.get(balancer.url).text for _ in range(4)} == {other}
        assert kept.get("/").text == other


def test_passthrough_forwards_connections_to_a_live_backend(
    balanced: tuple[Balancer, dict[str, subprocess.Popen[bytes]]],
) -> None:
    # What TLS to the replicas' node ports goes through: bytes it cannot read.
    http, procs = balanced
    balancer = Balancer(passthrough=True)
    balancer.backends.extend(http.backends)
    try:
        assert {httpx.get(balancer.url).text for _ in range(4)} == {"a", "b"}
        procs["a"].kill()
        procs["a"].wait()
        assert {httpx.get(balancer.url).text for _ in range(4)} == {"b"}
    finally:
        balancer.close()


def test_free_ports_are_outside_the_ephemeral_range_and_shared_out_by_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outgoing connection never takes a port `free_port` handed out, and two
    pytest-xdist workers never hand out the same one."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    shares = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
        shares.append(cluster._port_range())
    assert shares[0].start == cluster._PORTS_FROM and shares[1].stop <= low
    assert shares[0].stop <= shares[1].start  # no port in both
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20 and all(p in shares[1] for p in ports)
    with socket.socket() as s:  # free when handed out
        s.bind(("127.0.0.1", ports[-1]))
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert cluster._port_range() == range(cluster._PORTS_FROM, low)  # a single process


def test_a_taken_port_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        monkeypatch.setattr(cluster, "_port_range", lambda: range(port, port + 1))
        assert free_port() != port  # the kernel's choice, the only one being taken
