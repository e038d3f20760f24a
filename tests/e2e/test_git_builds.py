"""From a git push to a served response: a function linked to a repository served
by `git daemon` on loopback, a signed push webhook, the build, the automatic deploy,
and an edge node answering with each pushed commit's body in turn."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgefn.builder.toolchains import driver
from edgefn.cluster import Cluster, wait_until
from tests.builder.gitrepo import Repo, git_daemon, hook_headers, push_payload
from tests.builder.sources import HELLO_WAT

pytestmark = pytest.mark.e2e
SECRET = "an-e2e-webhook-secret"


@pytest.fixture
def git_cluster(tmp_path: Path, transport: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", token="e2e-admin-token", project="e2e")
    c.env["EDGEFN_TRANSPORT"] = transport
    # This cluster's repositories are on loopback: the operator allows it.
    c.env["EDGEFN_GIT_URL_SCHEMES"] = '["git"]'
    c.env["EDGEFN_GIT_ALLOW_PRIVATE_HOSTS"] = "true"
    c.start_cp()
    yield c
    c.close()


def _push(cluster: Cluster, url: str, commit: str, delivery: str) -> dict[str, object]:
    body = push_payload(url, commit)
    r = httpx.post(cluster.api + "/hooks/git", content=body,
                   headers=hook_headers(SECRET, body, delivery), timeout=60)
    assert r.status_code == 202, r.text
    result: dict[str, object] = r.json()["results"][0]["build"]
    return result


def test_each_push_is_built_deployed_and_served(git_cluster: Cluster, tmp_path: Path) -> None:
    if not driver("wat").probe().ok:
        pytest.fail("wat2wasm is missing")
    cluster = git_cluster
    edge = cluster.add_edge("tokyo-1", "jp-t1", region="tokyo")
    repos = tmp_path / "repos"
    repos.mkdir()
    repo = Repo(repos)
    with git_daemon(repos) as base:
        url = f"{base}/{repo.bare.name}"
        fid = cluster.function("from-git")
        cluster.call("PUT", f"/functions/{fid}/git", json={
            "repository": url, "language": "wat", "secret": SECRET, "auto_deploy": True})
        cluster.route(fid, "/from-git")
        manifest = json.dumps({"name": "from-git", "version": "1.0.0"}).encode()
        for n, body in enumerate((b"hello", b"howdy")):
            commit = repo.commit({"hello.wat": HELLO_WAT.replace(b"hello", body),
                                  "function.json": manifest})
            build = _push(cluster, url, commit, f"delivery-{n}")
            wait_until(
                f"build {n} finished",
                lambda b=build["id"]: cluster.call("GET", f"/builds/{b}")["state"]
                in ("succeeded", "failed"),
                timeout=120,
            )
            done = cluster.call("GET", f"/builds/{build['id']}")
            assert done["state"] == "succeeded", done["log"]
            assert "deployed" in done["log"]
            wait_until(
                f"commit {n} served",
                lambda want=body + b" from wat\n": edge.get("/from-git").content == want,
                timeout=60,
            )
    versions = [v["version"] for v in cluster.call("GET", f"/functions/{fid}/versions")]
    assert versions == ["1.0.0", f"1.0.0+git.{commit[:12]}"]
