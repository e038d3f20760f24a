"""A real git repository for the git trigger's tests: a bare origin in a temporary
folder, commits pushed to it with the `git` CLI, served by a `git daemon` process
on loopback, and GitHub-style push payloads signed like GitHub signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ENV = {
    "GIT_AUTHOR_NAME": "edgefn tests",
    "GIT_AUTHOR_EMAIL": "tests@edgefn.invalid",
    "GIT_COMMITTER_NAME": "edgefn tests",
    "GIT_COMMITTER_EMAIL": "tests@edgefn.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=_ENV, capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Repo:
    """`root/NAME.git` (the origin) and a work tree that pushes to it."""

    def __init__(self, root: Path, name: str = "hello") -> None:
        self.root = root
        self.bare = root / f"{name}.git"
        self.work = root / f"{name}-work"
        _git("init", "-q", "--bare", "--initial-branch=main", str(self.bare))
        _git("init", "-q", "--initial-branch=main", str(self.work))
        _git("remote", "add", "origin", str(self.bare), cwd=self.work)

    @property
    def file_url(self) -> str:
        return f"file://{self.bare}"

    def commit(self, files: dict[str, bytes], branch: str = "main", message: str = "change") -> str:
        """Write `files` into the work tree, commit them on `branch`, push; the commit id."""
        current = _git("branch", "--show-current", cwd=self.work)
        if current != branch:
            has = _git("branch", "--list", branch, cwd=self.work)
            _git("checkout", "-q", *([] if has else ["-b"]), branch, cwd=self.work)
        for rel, data in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        _git("add", "-A", cwd=self.work)
        _git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        _git("push", "-q", "origin", branch, cwd=self.work)
        return _git("rev-parse", "HEAD", cwd=self.work)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def git_daemon(root: Path) -> Iterator[str]:
    """`git daemon` serving every repository under `root` on loopback; its base URL
    (`git://127.0.0.1:PORT`)."""
    port = _free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", "--informative-errors",
         f"--base-path={root}", "--listen=127.0.0.1", f"--port={port}", str(root)],
        env=_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert proc.poll() is None, "git daemon exited"
                assert time.monotonic() < deadline, "git daemon did not listen"
                time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def push_payload(url: str, commit: str, branch: str = "main", **extra: object) -> bytes:
    """A GitHub push event's body, with the fields the hook reads."""
    return json.dumps({
        "ref": f"refs/heads/{branch}",
        "before": "0" * 40,
        "after": commit,
        "deleted": False,
        "repository": {"full_name": "acme/hello", "clone_url": url, "html_url": url},
        "pusher": {"name": "tests"},
        **extra,
    }).encode()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def hook_headers(secret: str, body: bytes, delivery: str, event: str = "push") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature(secret, body),
    }
