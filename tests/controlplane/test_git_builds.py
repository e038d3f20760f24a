"""Builds from git: linking a function to a repository, and the signed push webhook
against real repositories (a bare origin read through file:// and through a `git
daemon` process on loopback): the build, the version, the deploy, and every way a
delivery is refused or ignored."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.builder.gitrepo import Repo, git_daemon, hook_headers, push_payload, signature
from tests.builder.sources import HELLO_WAT
from tests.controlplane.conftest import ADMIN, CP
from tests.controlplane.test_builds import _need, wait

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SECRET = "a-webhook-secret-of-some-length"


def manifest(version: str | None) -> bytes:
    body: dict[str, Any] = {"name": "hello", "entrypoint": "handle"}
    if version is not None:
        body["version"] = version
    return json.dumps(body).encode()


def link(cp: CP, headers: dict[str, str], function_id: str, url: str, **fields: Any) -> Any:
    body = {"repository": url, "language": "wat", "secret": SECRET, **fields}
    return cp.call("PUT", f"/functions/{function_id}/git", headers, json=body)


def deliver(
    cp: CP, url: str, commit: str, delivery: str, *, branch: str = "main",
    secret: str = SECRET, event: str = "push",
) -> Any:
    body = push_payload(url, commit, branch)
    return cp.call("POST", "/hooks/git", hook_headers(secret, body, delivery, event),
                   content=body)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    root = tmp_path / "repos"
    root.mkdir()
    return Repo(root)


@sqlite_only
def test_a_push_over_git_daemon_builds_versions_and_deploys(cp: CP, repo: Repo) -> None:
    _need("wat")
    with git_daemon(repo.root) as base:
        url = f"{base}/{repo.bare.name}"
        fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
        r = link(cp, ADMIN, fn["id"], url, subdirectory="fn", auto_deploy=True)
        assert r.status_code == 201, r.text
        commit = repo.commit({"fn/hello.wat": HELLO_WAT, "fn/function.json": manifest("1.2.0"),
                              "README": b"not part of the build\n"})
        r = deliver(cp, url, commit, "d-1")
        assert r.status_code == 202, r.text
        [result] = r.json()["results"]
        assert result["status"] == "building" and result["function_id"] == fn["id"]
        assert result["build"]["git_commit"] == commit
        assert result["build"]["version"] == "1.2.0" and result["build"]["auto_deploy"] is True
        build = wait(cp, ADMIN, result["build"]["id"])
        assert build["state"] == "succeeded", build["log"]
        assert "deployed 1.2.0" in build["log"]
        versions = cp.ok("GET", f"/functions/{fn['id']}/versions", ADMIN)
        assert [v["version"] for v in versions] == ["1.2.0"]
        deployments = cp.ok("GET", f"/functions/{fn['id']}/deployments", ADMIN)
        assert [d["version"] for d in deployments] == ["1.2.0"]

        # The same delivery again, and the same body under a new delivery id: no build.
        again = deliver(cp, url, commit, "d-1")
        assert again.status_code == 200 and again.json()["results"][0]["status"] == "duplicate"
        assert again.json()["results"][0]["build"]["id"] == build["id"]
        replay = deliver(cp, url, commit, "d-2")
        assert replay.status_code == 200
        assert replay.json()["results"][0]["status"] == "duplicate"
        assert "built already" in replay.json()["results"][0]["reason"]
        assert len(cp.ok("GET", f"/functions/{fn['id']}/builds", ADMIN)) == 1

        # A push that does not bump function.json's version: the commit names it.
        second = repo.commit({"fn/hello.wat": HELLO_WAT.replace(b"hello", b"howdy")})
        r = deliver(cp, url, second, "d-3")
        assert r.status_code == 202, r.text
        build = wait(cp, ADMIN, r.json()["results"][0]["build"]["id"])
        assert build["state"] == "succeeded", build["log"]
        assert build["version"] == f"1.2.0+git.{second[:12]}"
        assert "deployed" in build["log"]


def test_signatures_branches_events_and_unknown_repositories(cp: CP, repo: Repo) -> None:
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    assert link(cp, ADMIN, fn["id"], repo.file_url).status_code == 201
    commit = repo.commit({"hello.wat": HELLO_WAT})

    forged = deliver(cp, repo.file_url, commit, "x", secret="not-the-secret-at-all")
    assert forged.status_code == 401
    body = push_payload(repo.file_url, commit)
    unsigned = cp.call("POST", "/hooks/git", {"X-GitHub-Delivery": "y"}, content=body)
    assert unsigned.status_code == 401
    assert unsigned.json()["error"]["code"] == "unauthorized"
    # A signature of another body does not sign this one.
    other = cp.call("POST", "/hooks/git", {"X-Hub-Signature-256": signature(SECRET, b"{}")},
                    content=body)
    assert other.status_code == 401

    r = deliver(cp, f"file://{repo.root}/elsewhere.git", commit, "z")
    assert r.status_code == 404 and "no function is linked" in r.text
    # `.git` and a trailing slash aside, the URL is the same repository.
    r = deliver(cp, repo.file_url.removesuffix(".git") + "/", commit, "z", branch="dev")
    assert r.status_code == 200, r.text
    [result] = r.json()["results"]
    assert result["status"] == "ignored"
    assert "refs/heads/dev" in result["reason"] and "refs/heads/main" in result["reason"]

    r = deliver(cp, repo.file_url, commit, "p", event="ping")
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "ignored"
    assert cp.call("POST", "/hooks/git", {}, content=b"not json").status_code == 400
    assert cp.ok("GET", f"/functions/{fn['id']}/builds", ADMIN) == []


def test_the_link_api_keeps_the_secret_and_checks_roles(cp: CP, team: SimpleNamespace,
                                                         repo: Repo) -> None:
    fn = cp.function(team.a_dev, owner_project_id=team.a)
    path = f"/functions/{fn['id']}/git"
    assert link(cp, team.b_dev, fn["id"], repo.file_url).status_code == 404
    assert link(cp, team.a_viewer, fn["id"], repo.file_url).status_code == 403
    no_secret = cp.call("PUT", path, team.a_dev, json={"repository": repo.file_url,
                                                        "language": "wat"})
    assert no_secret.status_code == 400 and "secret" in no_secret.text
    r = link(cp, team.a_dev, fn["id"], repo.file_url)
    assert r.status_code == 201, r.text
    assert SECRET not in r.text and "secret" not in r.json()
    assert r.json()["hook_url"].endswith("/api/v1/hooks/git")
    shown = cp.ok("GET", path, team.a_viewer)
    assert shown["repository"] == repo.file_url and shown["branch"] == "main"
    assert SECRET not in json.dumps(shown)
    assert cp.call("GET", path, team.b_dev).status_code == 404
    # Changing the branch without resending the secret keeps it.
    r = cp.call("PUT", path, team.a_dev, json={"repository": repo.file_url, "language": "wat",
                                                "branch": "release"})
    assert r.status_code == 200 and r.json()["branch"] == "release"
    commit = repo.commit({"hello.wat": HELLO_WAT}, branch="release")
    assert deliver(cp, repo.file_url, commit, "k", branch="release").status_code == 202

    for bad in ({"subdirectory": "../up"}, {"branch": "a..b"}, {"language": "cobol"},
                {"repository": "ssh://git@example.com/acme/hello.git"},
                {"repository": "https://user:pw@example.com/acme/hello.git"},
                {"repository": "ext::sh -c touch% /tmp/pwned"}):
        r = link(cp, team.a_dev, fn["id"], repo.file_url, **bad)
        assert r.status_code == 400, (bad, r.text)
    audit = cp.ok("GET", "/audit", ADMIN, params={"action": "git_link.update"})
    assert SECRET not in json.dumps(audit)
    assert cp.call("DELETE", path, team.a_viewer).status_code == 403
    assert cp.call("DELETE", path, team.a_dev).status_code == 204
    assert cp.call("GET", path, team.a_dev).status_code == 404
    assert deliver(cp, repo.file_url, commit, "k2", branch="release").status_code == 404


@sqlite_only
def test_the_operator_decides_what_may_be_fetched(cp_factory: Any, repo: Repo) -> None:
    """By default only https, and no host that resolves to a private address: a
    tenant cannot make the control plane fetch from its own network."""
    cp = cp_factory(git_url_schemes=["https"], git_allow_private_hosts=False)
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    for url in (repo.file_url, "git://127.0.0.1/hello.git", "http://example.com/a.git"):
        r = link(cp, ADMIN, fn["id"], url)
        assert r.status_code == 400 and "not allowed here" in r.text, r.text
    for url in ("https://127.0.0.1/acme/hello.git", "https://localhost/acme/hello.git",
                "https://169.254.169.254/latest/meta-data.git", "https://[::1]/a.git"):
        assert link(cp, ADMIN, fn["id"], url).status_code in (200, 201)
        r = deliver(cp, url, "a" * 40, f"d-{url}")
        assert r.status_code == 200, r.text
        [result] = r.json()["results"]
        assert result["status"] == "failed"
        assert "non-public address" in result["reason"], result
    assert cp.ok("GET", f"/functions/{fn['id']}/builds", ADMIN) == []

    # file:// allowed, but never into the control plane's own data.
    cp = cp_factory(git_url_schemes=["file"])
    fn = cp.function(ADMIN, owner_project_id=cp.project("q"))
    r = link(cp, ADMIN, fn["id"], f"file://{cp.settings.data_dir.resolve()}/x.git")
    assert r.status_code == 400 and "private" in r.text


@sqlite_only
def test_a_commit_that_does_not_build_or_fetch_is_reported(cp: CP, repo: Repo) -> None:
    _need("wat")
    fn = cp.function(ADMIN, owner_project_id=cp.project("p"))
    assert link(cp, ADMIN, fn["id"], repo.file_url, auto_deploy=True).status_code == 201
    broken = repo.commit({"hello.wat": b"(module (func (export \"f\") i32.add))"})
    r = deliver(cp, repo.file_url, broken, "b-1")
    assert r.status_code == 202
    build = wait(cp, ADMIN, r.json()["results"][0]["build"]["id"])
    assert build["state"] == "failed" and "wat2wasm" in build["error"]
    assert build["version"] == f"0.0.0+git.{broken[:12]}"
    assert cp.ok("GET", f"/functions/{fn['id']}/deployments", ADMIN) == []
    # A commit the repository does not have: nothing is built, the delivery may be retried.
    missing = "b" * 40
    r = deliver(cp, repo.file_url, missing, "b-2")
    assert r.status_code == 200
    assert r.json()["results"][0]["status"] == "failed"
    assert "git fetch failed" in r.json()["results"][0]["reason"]
    assert deliver(cp, repo.file_url, missing, "b-2").json()["results"][0]["status"] == "failed"
    # A symlink in the tree is refused like one in an uploaded archive.
    linked = repo.commit({"hello.wat": HELLO_WAT})
    (repo.work / "leak").symlink_to("/etc/passwd")
    linked = repo.commit({})
    r = deliver(cp, repo.file_url, linked, "b-3")
    build = wait(cp, ADMIN, r.json()["results"][0]["build"]["id"])
    assert build["state"] == "failed" and "link" in build["error"]
