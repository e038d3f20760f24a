"""The disk cache: verified writes and loads, atomic downloads, LRU by count and size."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edgefn.edge.cache import ArtifactCache, sha256_hex
from edgefn.edge.errors import ArtifactError
from tests.edge.conftest import ArtifactServer, Truncated

BLOB = b"\x00asm\x01\x00\x00\x00" + os.urandom(4096)


@pytest.fixture
def server(artifact_server: ArtifactServer) -> str:
    artifact_server.blobs.update({"/a.wasm": BLOB, "/big.wasm": BLOB * 100,
                                  "/killed": Truncated(BLOB)})
    return artifact_server.url


def files(cache: ArtifactCache) -> list[str]:
    return sorted(str(p.relative_to(cache.root)) for p in cache.root.rglob("*") if p.is_file())


def test_put_and_get_verify_sha256(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    sha = sha256_hex(BLOB)
    path = cache.put("fn", "1.0.0", sha, BLOB)
    assert path == tmp_path / "fn" / "1.0.0.wasm"
    assert cache.get("fn", "1.0.0", sha) == BLOB
    assert cache.stats.hits == 1


def test_put_with_wrong_sha256_is_refused_and_stores_nothing(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        cache.put("fn", "1.0.0", "0" * 64, BLOB)
    assert files(cache) == []


def test_a_file_corrupted_on_disk_is_a_miss_and_removed(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    sha = sha256_hex(BLOB)
    path = cache.put("fn", "1.0.0", sha, BLOB)
    path.write_bytes(BLOB[:-1] + b"X")
    assert cache.get("fn", "1.0.0", sha) is None
    assert not path.exists()
    assert cache.stats.rejected == 1


def test_fetch_downloads_verifies_and_caches(tmp_path: Path, server: str) -> None:
    cache = ArtifactCache(tmp_path)
    sha = sha256_hex(BLOB)
    assert cache.ensure("fn", "2.0.0", sha, f"{server}/a.wasm") == BLOB
    assert cache.stats.misses == 1
    assert cache.ensure("fn", "2.0.0", sha, f"{server}/a.wasm") == BLOB
    assert cache.stats.hits == 1


def test_fetch_with_mismatching_sha256_keeps_nothing(tmp_path: Path, server: str) -> None:
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        cache.fetch("fn", "1.0.0", "f" * 64, f"{server}/a.wasm")
    assert files(cache) == []


def test_download_killed_halfway_leaves_no_file(tmp_path: Path, server: str) -> None:
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ArtifactError):
        cache.fetch("fn", "1.0.0", sha256_hex(BLOB), f"{server}/killed")
    assert files(cache) == []


def test_download_over_the_size_limit_is_refused(tmp_path: Path, server: str) -> None:
    cache = ArtifactCache(tmp_path, max_artifact_bytes=len(BLOB) * 10)
    with pytest.raises(ArtifactError, match="larger than"):
        cache.fetch("fn", "1.0.0", sha256_hex(BLOB * 100), f"{server}/big.wasm")
    assert files(cache) == []


def test_http_error_and_missing_sha_are_refused(tmp_path: Path, server: str) -> None:
    cache = ArtifactCache(tmp_path)
    with pytest.raises(ArtifactError, match="HTTP 404"):
        cache.fetch("fn", "1.0.0", sha256_hex(BLOB), f"{server}/missing.wasm")
    with pytest.raises(ArtifactError, match="without its sha256"):
        cache.fetch("fn", "1.0.0", "", f"{server}/a.wasm")


def test_a_failed_url_is_not_tried_again_at_once(
    tmp_path: Path, server: str, artifact_server: ArtifactServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker asked for a function whose artifact is gone, with an expired URL,
    must not send a download per request."""
    cache = ArtifactCache(tmp_path)
    sha = sha256_hex(BLOB)
    url = f"{server}/late.wasm"
    with pytest.raises(ArtifactError, match="HTTP 404"):
        cache.ensure("fn", "1.0.0", sha, url)
    artifact_server.blobs["/late.wasm"] = BLOB
    with pytest.raises(ArtifactError, match="not retried"):
        cache.ensure("fn", "1.0.0", sha, url)
    assert cache.ensure("fn", "1.0.0", sha, f"{server}/a.wasm") == BLOB  # another URL: tried
    cache.path_for("fn", "1.0.0").unlink()
    monkeypatch.setattr("edgefn.edge.cache.FETCH_RETRY_S", 0.0)
    with pytest.raises(ArtifactError, match="not retried"):  # the deadline set then holds
        cache.ensure("fn", "1.0.0", sha, url)


def test_a_worker_never_deletes_a_good_file_put_in_place_of_the_bad_one_it_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = ArtifactCache(tmp_path)
    sha = sha256_hex(BLOB)
    path = cache.put("fn", "1.0.0", sha, BLOB)
    path.write_bytes(BLOB[:-1] + b"X")
    real_read = Path.read_bytes
    opened = open

    def replaced_meanwhile(file: str, mode: str = "r", *args: object, **kw: object) -> object:
        f = opened(file, mode, *args, **kw)  # type: ignore[call-overload]
        if str(file) == str(path):
            cache.put("fn", "1.0.0", sha, BLOB)  # the agent repairs it right after the read
        return f

    # The agent's repair landing between a worker's read and its delete.
    monkeypatch.setattr("builtins.open", replaced_meanwhile)
    assert cache.get("fn", "1.0.0", sha) is None
    monkeypatch.undo()
    assert real_read(path) == BLOB


def _age(path: Path, seconds_ago: float) -> None:
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def test_lru_by_count_keeps_recently_used(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, max_files=2)
    blobs = {v: BLOB + v.encode() for v in ("1", "2")}
    for age, v in ((30, "1"), (20, "2")):
        _age(cache.put("fn", v, sha256_hex(blobs[v]), blobs[v]), age)
    # Reading version 1 makes it the most recent; adding 3 must evict 2.
    assert cache.get("fn", "1", sha256_hex(blobs["1"])) is not None
    cache.put("fn", "3", sha256_hex(BLOB + b"3"), BLOB + b"3")
    assert files(cache) == ["fn/1.wasm", "fn/3.wasm"]
    assert cache.stats.evictions == 1


def test_lru_by_total_bytes(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, max_bytes=len(BLOB) * 2 + 10)
    for i, v in enumerate(("a", "b", "c")):
        data = BLOB + v.encode()
        _age(cache.put("fn", v, sha256_hex(data), data), 100 - i)
    assert files(cache) == ["fn/b.wasm", "fn/c.wasm"]


def test_pinned_artifacts_are_never_evicted(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path, max_files=1)
    _age(cache.put("keep", "1", sha256_hex(BLOB), BLOB), 100)
    cache.put("fn", "2", sha256_hex(BLOB + b"2"), BLOB + b"2", pinned=[("keep", "1")])
    assert "keep/1.wasm" in files(cache)


def test_cache_survives_restart_and_cleans_partials(tmp_path: Path) -> None:
    ArtifactCache(tmp_path).put("fn", "1.0.0", sha256_hex(BLOB), BLOB)
    (tmp_path / "fn" / ".part-crashed").write_bytes(b"half")
    again = ArtifactCache(tmp_path)
    assert again.clean_partials() == 1
    assert again.get("fn", "1.0.0", sha256_hex(BLOB)) == BLOB


@pytest.mark.parametrize(("fid", "version"), [("../etc", "1"), ("fn", "../../x"), ("fn", "")])
def test_unsafe_names_are_refused(tmp_path: Path, fid: str, version: str) -> None:
    with pytest.raises(ArtifactError, match="unsafe"):
        ArtifactCache(tmp_path).path_for(fid, version)
