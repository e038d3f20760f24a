"""The node's disk cache of artifacts: `{root}/{function_id}/{version}.wasm`, and of
unpacked data archives: `{root}/_data/{sha256}/` (no function id starts with `_`).

Every file is verified against its sha256 when written and again when loaded;
writes are atomic (temp file, fsync, rename) so a crash or a download killed
halfway never leaves a file behind; least recently used files go first when the
count or total size is over its limit. Recency is the file's mtime, so it
survives restarts. A data archive is unpacked once, by the node's agent, under its
digest: versions with the same files share it, and a restart finds it; it counts
toward the limits (one entry, its unpacked bytes) and goes by the same rule, but only
an eviction told which archives are in use removes one. A corrupt file is deleted
where it is found; the node's agent notices the gap and fetches the artifact again
through a fresh URL (`NodeController.repair`), since the URL a deploy came with has
expired by then.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from edgefn.atomicfile import PARTIAL_PREFIX, private_dir, write_atomic
from edgefn.data_archive import ArchiveLimits, ArchiveRefused, host_dirs, unpack
from edgefn.edge.errors import ArtifactError, DigestMismatch

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_CHUNK = 256 * 1024
# After a failed download, the same URL is not tried again for this long: a worker
# asked for a function whose artifact is gone must not hit the network per request.
FETCH_RETRY_S = 5.0


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    rejected: int = 0


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_RESCAN_EVERY = 64
# Unpacked data archives; `_` cannot begin a function id (`_SAFE`), so no function's
# folder is ever this one.
DATA_DIR = "_data"
_DIGEST = re.compile(r"[0-9a-f]{64}")
# Beside each unpacked archive: its unpacked size, for the cache's byte limit.
_SIZE_SUFFIX = ".bytes"

# One TLS context for every download of the process: making one loads the system's
# CA bundle (about 40 ms of CPU), which a client made per download did every time.
# Clients stay per download, so no connection is shared between threads.
@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


class ArtifactCache:
    """Thread-safe; several processes may share one root (each write is a rename)."""

    def __init__(
        self,
        root: Path,
        *,
        max_files: int = 1000,
        max_bytes: int = 10 * 1024**3,
        max_artifact_bytes: int = 64 * 1024 * 1024,
        download_timeout_s: float = 30.0,
        max_data_bytes: int = 32 * 1024 * 1024,
        data_limits: ArchiveLimits | None = None,
    ) -> None:
        self.root = root
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.max_artifact_bytes = max_artifact_bytes
        self.max_data_bytes = max_data_bytes
        self.data_limits = data_limits or ArchiveLimits(max_bytes=128 * 1024 * 1024,
                                                        max_files=5000)
        self.download_timeout_s = download_timeout_s
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._failed: dict[str, tuple[float, str]] = {}
        # Files and bytes this process believes the cache holds, from its last scan
        # plus what it stored since; None: scan at the next store. A scan lists and
        # stats every file, which after every store made a node with N functions pay
        # N stats a download (N² to fill it). Other processes sharing the root store
        # too, so the belief is checked by a scan every `_RESCAN_EVERY` stores.
        self._usage: tuple[int, int] | None = None
        self._stores = 0
        private_dir(root)

    def path_for(self, function_id: str, version: str) -> Path:
        if not _SAFE.fullmatch(function_id) or not _SAFE.fullmatch(version):
            raise ArtifactError(f"unsafe artifact name {function_id!r}/{version!r}")
        return self.root / function_id / f"{version}.wasm"

    def get(self, function_id: str, version: str, sha256: str) -> bytes | None:
        """The verified artifact, or None on a miss. A corrupt file is removed."""
        path = self.path_for(function_id, version)
        try:
            with open(path, "rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                data = f.read()
        except FileNotFoundError:
            self.stats.misses += 1
            return None
        if sha256 and sha256_hex(data) != sha256:
            with contextlib.suppress(OSError):
                # Only the file that failed: another process may have put a good one
                # in its place since it was read.
                if os.stat(path).st_ino == inode:
                    path.unlink()
            self.stats.rejected += 1
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        with contextlib.suppress(OSError):
            os.utime(path)  # recency for LRU; a read-only cache still serves
        return data

    def has(self, function_id: str, version: str) -> bool:
        """Whether a file is there (unverified: a cheap check, run often)."""
        return self.path_for(function_id, version).is_file()

    def put(
        self, function_id: str, version: str, sha256: str, data: bytes,
        *, pinned: Iterable[tuple[str, str]] = (),
    ) -> Path:
        """Verify and store; the expected sha256 is required for anything from outside."""
        actual = sha256_hex(data)
        if sha256 and actual != sha256:
            self.stats.rejected += 1
            raise ArtifactError(
                f"sha256 mismatch for {function_id}@{version}: expected {sha256}, got {actual}"
            )
        path = self.path_for(function_id, version)
        self._store(path, [data], pinned=[*pinned, (function_id, version)])
        return path

    def _store(self, path: Path, chunks: list[bytes], *, pinned: list[tuple[str, str]]) -> None:
        """Write `path` and evict if the cache may now be over a limit."""
        replaced = path.is_file()
        write_atomic(path, chunks)
        with self._lock:
            self._stores += 1
            usage = self._usage
            if usage is not None and not replaced and self._stores % _RESCAN_EVERY:
                usage = self._usage = (usage[0] + 1, usage[1] + sum(map(len, chunks)))
            else:
                usage = None
        if usage is None or usage[0] > self.max_files or usage[1] > self.max_bytes:
            self.evict(pinned=pinned)

    def fetch(
        self, function_id: str, version: str, sha256: str, url: str,
        *, pinned: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        """Download `url` into the cache, hashing as it streams; nothing is kept on failure."""
        if not sha256:
            raise ArtifactError("refusing to download an artifact without its sha256")
        path = self.path_for(function_id, version)
        failed = self._failed.get(url)
        if failed is not None and time.monotonic() < failed[0]:
            raise ArtifactError(f"{failed[1]} (not retried for {FETCH_RETRY_S:g} s)")
        try:
            chunks = self._download(function_id, version, sha256, url)
        except ArtifactError as exc:
            self._failed[url] = (time.monotonic() + FETCH_RETRY_S, str(exc))
            raise
        self._failed.pop(url, None)
        self._store(path, chunks, pinned=[*pinned, (function_id, version)])
        return b"".join(chunks)

    def download(self, url: str, sha256: str, what: str, *, limit: int | None = None) -> bytes:
        """`url`'s bytes, not kept: `DigestMismatch` unless they hash to `sha256`
        (checked as they stream, within `limit`, by default the artifact size limit)."""
        if not sha256:
            raise ArtifactError(f"refusing to download {what} without its sha256")
        return b"".join(self._stream(url, sha256, what, limit))

    def _download(self, function_id: str, version: str, sha256: str, url: str) -> list[bytes]:
        return self._stream(url, sha256, f"{function_id}@{version}")

    def _stream(self, url: str, sha256: str, what: str, limit: int | None = None
                ) -> list[bytes]:
        limit = self.max_artifact_bytes if limit is None else limit
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        size = 0
        try:
            with httpx.stream("GET", url, timeout=self.download_timeout_s,
                              follow_redirects=True, verify=_ssl_context()) as resp:
                if resp.status_code != 200:
                    raise ArtifactError(f"artifact download answered HTTP {resp.status_code}")
                for chunk in resp.iter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise ArtifactError(f"{what} is larger than {limit} bytes")
                    digest.update(chunk)
                    chunks.append(chunk)
        # InvalidURL is not an HTTPError: a URL httpx cannot parse fails here too.
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ArtifactError(f"artifact download failed: {exc}") from exc
        if digest.hexdigest() != sha256:
            self.stats.rejected += 1
            raise DigestMismatch(
                f"sha256 mismatch for {what}: expected {sha256}, got {digest.hexdigest()}"
            )
        return chunks

    def ensure(
        self, function_id: str, version: str, sha256: str, url: str = "",
        *, pinned: Iterable[tuple[str, str]] = (),
    ) -> bytes:
        data = self.get(function_id, version, sha256)
        if data is not None:
            return data
        if not url:
            raise ArtifactError(f"{function_id}@{version} is not cached and has no artifact URL")
        return self.fetch(function_id, version, sha256, url, pinned=pinned)

    # -- data archives ---------------------------------------------------------
    def data_path(self, sha256: str) -> Path:
        """Where the data archive of digest `sha256` is (or would be) unpacked."""
        if not _DIGEST.fullmatch(sha256):
            raise ArtifactError(f"unsafe data archive digest {sha256!r}")
        return self.root / DATA_DIR / sha256

    def data_mounts(self, sha256: str, mounts: Mapping[str, str]) -> dict[str, str] | None:
        """Guest path -> host directory of the unpacked archive `sha256`; None when it is
        not unpacked here. `ArtifactError` for a mount the archive does not hold."""
        path = self.data_path(sha256)
        if not path.is_dir():
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recency, as for artifacts
        try:
            return host_dirs(path, mounts)
        except ArchiveRefused as exc:
            raise ArtifactError(f"data archive {sha256[:12]}: {exc.message}") from exc

    def unpack_data(self, sha256: str, archive: bytes, mounts: Mapping[str, str]) -> dict[str, str]:
        """Unpack `archive` (already verified to hash to `sha256`) under its digest,
        unless it is there, and give its mounts as `data_mounts` does. `ArtifactError`
        when the archive is refused (hostile, malformed, over the limits); nothing
        of it is left behind then."""
        target = self.data_path(sha256)
        found = self.data_mounts(sha256, mounts)
        if found is not None:
            return found
        parent = private_dir(target.parent)
        scratch = parent / f"{PARTIAL_PREFIX}{sha256}-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        try:
            written = unpack(archive, scratch, mounts, self.data_limits)
            size = sum((scratch / name).stat().st_size for name in written)
            write_atomic(parent / f"{sha256}{_SIZE_SUFFIX}", [str(size).encode()])
            try:
                os.rename(scratch, target)
            except OSError:
                if not target.is_dir():  # else another process unpacked it meanwhile
                    raise
        except ArchiveRefused as exc:
            raise ArtifactError(f"data archive {sha256[:12]} refused: {exc.message}") from exc
        except OSError as exc:
            raise ArtifactError(f"cannot unpack data archive {sha256[:12]}: {exc}") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        found = self.data_mounts(sha256, mounts)
        assert found is not None
        return found

    def _data_entries(self) -> list[tuple[float, int, Path]]:
        out = []
        for path in (self.root / DATA_DIR).glob("*"):
            if not _DIGEST.fullmatch(path.name):
                continue
            try:
                mtime = path.stat().st_mtime
                size = int((path.parent / f"{path.name}{_SIZE_SUFFIX}").read_text())
            except (OSError, ValueError):
                size = 0
                mtime = 0.0
            out.append((mtime, size, path))
        return out

    def entries(self, *, data: bool = False) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every cached artifact (with `data`, and every
        unpacked data archive), oldest first."""
        out = []
        for path in self.root.glob("*/*.wasm"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            out.append((st.st_mtime, st.st_size, path))
        if data:
            out.extend(self._data_entries())
        out.sort()
        return out

    def evict(self, *, pinned: Iterable[tuple[str, str]] = (),
              pinned_data: Iterable[str] | None = None) -> list[Path]:
        """Remove least recently used artifacts until both limits hold; pinned ones stay.
        Unpacked data archives count and may go only when `pinned_data` names the
        digests in use (which only the node's agent knows); they stay otherwise."""
        keep = {self.path_for(f, v) for f, v in pinned}
        if pinned_data is not None:
            keep |= {self.data_path(d) for d in pinned_data}
        removed: list[Path] = []
        with self._lock:
            entries = self.entries(data=pinned_data is not None)
            count, total = len(entries), sum(e[1] for e in entries)
            for _, size, path in entries:
                if count <= self.max_files and total <= self.max_bytes:
                    break
                if path in keep:
                    continue
                if path.parent.name == DATA_DIR and path.is_dir():
                    self._remove_data(path)
                else:
                    path.unlink(missing_ok=True)
                count -= 1
                total -= size
                removed.append(path)
                self.stats.evictions += 1
            if pinned_data is None:
                self._usage = (count, total)
        return removed

    @staticmethod
    def _remove_data(path: Path) -> None:
        """Out of sight first (a rename), then removed: a reader never sees half of it."""
        doomed = path.parent / f"{PARTIAL_PREFIX}{path.name}-{os.getpid()}-evicted"
        try:
            os.rename(path, doomed)
        except OSError:
            return
        (path.parent / f"{path.name}{_SIZE_SUFFIX}").unlink(missing_ok=True)
        shutil.rmtree(doomed, ignore_errors=True)

    def clean_partials(self) -> int:
        """Remove temp files (and half-unpacked data archives) a crash left behind;
        called at start."""
        n = 0
        for path in self.root.glob(f"*/{PARTIAL_PREFIX}*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            n += 1
        return n
