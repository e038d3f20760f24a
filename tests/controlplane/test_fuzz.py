"""Schemathesis over the control plane's own OpenAPI document, against a real
`edgefn cp serve` on loopback (SQLite): every phase, the stateful one included
(links between what a call creates and the calls that read it), every check.
Any 5xx, status the document does not declare, response that breaks its
schema, or valid request refused fails the test. The settings, seed included,
are in fuzz/schemathesis.toml; see docs/security.md, Input validation."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefn.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).parent / "fuzz" / "schemathesis.toml"
ADMIN_TOKEN = "fuzz-admin-token"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, token=ADMIN_TOKEN, project="fuzz")
    c.start_cp()
    yield c
    c.close()


# About 1 to 2 minutes on two idle cores (max-examples in the config sets it).
@pytest.mark.timeout(900)
def test_openapi_has_no_5xx_and_no_undocumented_status(cluster: Cluster) -> None:
    project = cluster.call("POST", "/projects", json={"name": "fuzz"})["id"]
    owner_key = cluster.call(
        "POST", f"/projects/{project}/api-keys", json={"name": "fuzz", "role": "owner"}
    )["key"]
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(CONFIG),
            "run",
            cluster.api.removesuffix("/api/v1") + "/openapi.json",
            "--no-color",
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "EDGEFN_FUZZ_OWNER_KEY": owner_key,
            "EDGEFN_FUZZ_ADMIN_TOKEN": ADMIN_TOKEN,
        },
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    # The run must have reached the stateful phase, not skipped it for want of links.
    assert "Stateful" in result.stdout, result.stdout[-5000:]
