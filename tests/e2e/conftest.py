"""End-to-end fixtures: a real cluster on loopback (`edgefn.cluster`), per test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefn.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def transport() -> str:
    """The nodes' control stream; distribution tests parametrize it over both."""
    return "grpc"


@pytest.fixture
def cluster(tmp_path: Path, transport: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path, token="e2e-admin-token", project="e2e")
    c.env["EDGEFN_TRANSPORT"] = transport  # read by `edgefn edge serve`
    c.start_cp()
    yield c
    c.close()


def module(name: str) -> bytes:
    if name in ("hello-c", "hello-wagi"):
        return (ROOT / "examples" / name / "hello.wasm").read_bytes()
    return (ROOT / "tests" / "fixtures" / "wasm" / f"{name}.wasm").read_bytes()


def cli_env(cluster: Cluster, token: str) -> dict[str, str]:
    """The command line's environment: the cluster's API and `token`, nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFN_")}
    return {**env, "EDGEFN_TOKEN": token,
            "EDGEFN_CP_URL": cluster.api.removesuffix("/api/v1"),
            "XDG_CONFIG_HOME": str(cluster.root / "cli-config")}


def edgefn(cluster: Cluster, *args: str,
           token: str | None = None) -> subprocess.CompletedProcess[str]:
    """`edgefn ARGS` as a process against the cluster, as its admin unless `token`."""
    return subprocess.run([sys.executable, "-m", "edgefn", *args], capture_output=True,
                          text=True, timeout=60, env=cli_env(cluster, token or cluster.token))
