"""A build worker killed mid-build (SIGKILL, with its compiler) loses nothing: once
its lease runs out, another `edgefn build-worker` process takes the job and the
version is made. Real Redis, real worker processes, a real clang build."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from tests.builder.sources import HELLO_C, tgz
from tests.builder.test_redis_queue import REDIS_URL, scratch_prefix
from tests.controlplane.conftest import ADMIN
from tests.controlplane.test_builds import _need, submit, wait

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _slow_tree() -> dict[str, bytes]:
    """The C hello plus a file whose million-element table takes clang seconds, so
    the build is surely running when its worker is killed."""
    lines = ["#define A0 1,"]
    lines += [f"#define A{i} A{i - 1} A{i - 1} A{i - 1} A{i - 1}" for i in range(1, 11)]
    slow = "\n".join(lines) + "\nint slow_table[] = { A10 0 };\n"
    return {"hello.c": HELLO_C, "slow.c": slow.encode()}


def _worker(prefix: str, lease_s: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgefn", "build-worker", "--redis-url", REDIS_URL,
         "--queue-prefix", prefix, "--lease", str(lease_s)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and everything it started (the jail gives the compiler a
    session of its own, so the worker's group alone would leave it running)."""
    family = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL)
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    proc.wait(timeout=10)


@sqlite_only
def test_a_killed_workers_job_is_built_by_another(cp_factory: Any) -> None:
    _need("c")
    with scratch_prefix() as prefix:
        _killed_and_rebuilt(cp_factory, prefix)


def _killed_and_rebuilt(cp_factory: Any, prefix: str) -> None:
    lease_s = 2.0
    cp = cp_factory(build_redis_url=REDIS_URL, build_workers=0, build_queue_prefix=prefix,
                    build_lease_s=lease_s)
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    first = _worker(prefix, lease_s)
    second = None
    try:
        r = submit(cp, ADMIN, fn["id"], "c", tgz(_slow_tree()))
        assert r.status_code == 202, r.text
        build_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while "$ clang" not in cp.ok("GET", f"/builds/{build_id}", ADMIN)["log"]:
            assert time.monotonic() < deadline, "the first worker never started compiling"
            time.sleep(0.05)
        _kill(first)
        assert cp.ok("GET", f"/builds/{build_id}", ADMIN)["state"] == "running"
        second = _worker(prefix, lease_s)
        build = wait(cp, ADMIN, build_id, timeout_s=180)
        assert build["state"] == "succeeded", build["log"]
        assert "attempt 2 of 3" in build["log"]
        assert build["log"].count("$ clang") == 2
        versions = cp.ok("GET", f"/functions/{fn['id']}/versions", ADMIN)
        assert [v["version"] for v in versions] == ["1.0.0"]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
