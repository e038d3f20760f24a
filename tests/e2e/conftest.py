"""End-to-end fixtures: a real cluster on loopback (`edgefn.cluster`), per test."""

from __future__ import annotations

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
