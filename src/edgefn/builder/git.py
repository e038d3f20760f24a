"""Fetching one commit of a linked repository with `git`, in a build jail, as a
source archive the builder takes like an upload.

A tenant names the URL, so the fetch is a server-side request on their behalf.
What keeps it to the repository's host:
- only the schemes the operator allows (`https` by default; `http`, `git` and
  `file` only when named), no user names or passwords in the URL;
- the host is resolved here, every address must be public (the node's egress
  rule, `is_public`) unless the operator allows private ones, and git is pinned
  to the address checked (`http.curloptResolve`; a `git://` URL is rewritten to
  it), so a second lookup cannot send it elsewhere;
- git may speak that one protocol only (`protocol.allow=never`,
  `GIT_ALLOW_PROTOCOL`), follows no redirect, reads no system or user config,
  runs no hook and fetches no submodule;
- `file://` paths inside the control plane's private directories are refused
  (and, with namespaces, covered anyway), and a `file://` fetch has no network.

The commit is fetched alone (`--depth 1`) and turned into a tar by `git archive`,
never checked out: the archive then goes through the same unpacker as an upload,
which refuses links.
"""

from __future__ import annotations

import io
import json
import re
import socket
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address, ip_address
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from edgefn.builder.errors import FetchFailed, RepositoryRefused
from edgefn.builder.jail import Jail
from edgefn.contract.egress_allowlist import InvalidHost, parse_host

# The node's rule for what is a public address, shared rather than restated.
from edgefn.edge.capabilities.egress_rules import is_public

SCHEMES = ("https", "http", "git", "file")
_PORTS = {"https": 443, "http": 80, "git": 9418}
COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_SUBDIR_PART = re.compile(r"^[A-Za-z0-9._-]+$")
MANIFEST = "function.json"


@dataclass(frozen=True)
class GitPolicy:
    """What the operator lets tenants fetch from."""

    schemes: frozenset[str] = frozenset({"https"})
    allow_private: bool = False
    # Directories a file:// URL must not point into (the control plane's data).
    private: Sequence[Path] = field(default_factory=tuple)


@dataclass(frozen=True)
class RepoUrl:
    url: str
    scheme: str
    host: str  # "" for file://
    port: int
    path: str


def parse_repo_url(url: str, policy: GitPolicy) -> RepoUrl:
    """The URL checked against the policy's schemes and forms; RepositoryRefused
    otherwise. Addresses are checked at fetch time (`pin`), when they are used."""
    if url != url.strip() or any(ord(c) < 0x21 for c in url):
        raise RepositoryRefused("the repository URL has spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RepositoryRefused(f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise RepositoryRefused(f"scheme {scheme or '(none)'!r}: one of {', '.join(SCHEMES)}")
    if scheme not in policy.schemes:
        allowed = ", ".join(sorted(policy.schemes)) or "none"
        raise RepositoryRefused(
            f"{scheme}:// repositories are not allowed here (allowed: {allowed})"
        )
    if parts.username is not None or parts.password is not None:
        raise RepositoryRefused("credentials in the repository URL are not accepted")
    if parts.query or parts.fragment:
        raise RepositoryRefused("the repository URL takes no query or fragment")
    if not parts.path or not parts.path.startswith("/") or ".." in PurePosixPath(parts.path).parts:
        raise RepositoryRefused("the repository URL needs an absolute path without '..'")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise RepositoryRefused("a file:// URL names no host")
        target = Path(parts.path).resolve()
        if any(target == p or p in target.parents for p in policy.private):
            raise RepositoryRefused("that path is inside the control plane's private data")
        return RepoUrl(f"file://{parts.path}", scheme, "", 0, parts.path)
    try:
        host = parse_host(parts.hostname or "")
    except InvalidHost as exc:
        raise RepositoryRefused(str(exc)) from None
    return RepoUrl(url, scheme, str(host), port or _PORTS[scheme], parts.path)


def repository_key(url: str) -> str:
    """What two URLs of one repository have in common: `.git` and a trailing `/`
    aside, the scheme and host in any case."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url
    path = parts.path.rstrip("/")
    path = path[:-4] if path.endswith(".git") else path
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{path}"


def check_subdirectory(subdirectory: str) -> str:
    """A relative folder of the repository ('' for its root), normalised."""
    parts = [p for p in subdirectory.strip("/").split("/") if p not in ("", ".")]
    for part in parts:
        if part == ".." or not _SUBDIR_PART.fullmatch(part):
            raise RepositoryRefused(
                f"subdirectory {subdirectory!r}: letters, digits, '.', '_', '-' and '/'"
            )
    return "/".join(parts)


def pin(repo: RepoUrl, policy: GitPolicy) -> str | None:
    """The address git is to connect to (None for file://); RepositoryRefused when
    any address of the host is not public and the policy does not allow that."""
    if repo.scheme == "file":
        return None
    try:
        infos = socket.getaddrinfo(repo.host, repo.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchFailed(f"{repo.host} does not resolve: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    if not addresses:
        raise FetchFailed(f"{repo.host} does not resolve")
    if not policy.allow_private:
        private = [a for a in addresses if not is_public(ip_address(a))]
        if private:
            raise RepositoryRefused(
                f"{repo.host} resolves to a non-public address ({private[0]}); "
                "this control plane fetches only from public hosts"
            )
    return addresses[0]


def _git_config(repo: RepoUrl, address: str | None) -> tuple[dict[str, str], str]:
    """git's environment for this fetch (its settings passed as GIT_CONFIG_*, so no
    file is read), and the URL to give it."""
    config = {
        "protocol.allow": "never",
        f"protocol.{repo.scheme}.allow": "always",
        "http.followRedirects": "false",
        "core.hooksPath": "/dev/null",
        "fetch.recurseSubmodules": "false",
        "transfer.fsckObjects": "true",
        "core.symlinks": "false",
        "init.defaultBranch": "main",
    }
    url = repo.url
    if address is not None:
        literal = f"[{address}]" if isinstance(ip_address(address), IPv6Address) else address
        if repo.scheme == "git":
            url = f"git://{literal}:{repo.port}{repo.path}"
        else:
            config["http.curloptResolve"] = f"{repo.host}:{repo.port}:{literal}"
    env = {
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": repo.scheme,
        "GIT_PROTOCOL_FROM_USER": "0",
        "GIT_CONFIG_COUNT": str(len(config)),
    }
    for n, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{n}"] = key
        env[f"GIT_CONFIG_VALUE_{n}"] = value
    return env, url


@dataclass(frozen=True)
class Fetched:
    archive: bytes  # a tar.gz of the subdirectory at the commit
    manifest: dict[str, Any] | None  # its function.json, when it has one


def fetch(
    jail: Jail, repo: RepoUrl, commit: str, subdirectory: str, policy: GitPolicy
) -> Fetched:
    """Fetch `commit` of `repo` into the jail's scratch and archive `subdirectory`."""
    if not COMMIT.fullmatch(commit):
        raise FetchFailed(f"{commit!r} is not a full commit id")
    address = pin(repo, policy)
    env, url = _git_config(repo, address)
    git = ["git"]
    network = repo.scheme != "file"
    work = jail.scratch / "repo"
    out = jail.scratch / "source.tar.gz"
    treeish = f"{commit}:{subdirectory}" if subdirectory else commit
    steps = [
        ("init", [*git, "init", "-q", "--bare", str(work)], False),
        ("fetch", [*git, "-C", str(work), "fetch", "-q", "--depth", "1", "--no-tags", "--",
                   url, commit], network),
        ("archive", [*git, "-C", str(work), "archive", "--format=tar.gz", "-o", str(out),
                     treeish], False),
    ]
    for name, argv, online in steps:
        rc, output = jail.run(argv, network=online, env=env)
        if rc != 0:
            raise FetchFailed(f"git {name} failed (status {rc}):\n{output.strip()[-2000:]}")
    data = out.read_bytes()
    return Fetched(data, _manifest(data))


def _manifest(archive: bytes) -> dict[str, Any] | None:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        try:
            member = tar.getmember(MANIFEST)
        except KeyError:
            return None
        if not member.isreg() or member.size > 256 * 1024:
            raise FetchFailed(f"{MANIFEST} is not a regular file of at most 256 KiB")
        reader = tar.extractfile(member)
        assert reader is not None
        try:
            body = json.loads(reader.read())
        except ValueError as exc:
            raise FetchFailed(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise FetchFailed(f"{MANIFEST} is not a JSON object")
    return body
