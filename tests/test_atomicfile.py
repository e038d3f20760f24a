"""Files the node and the control plane keep are 0600 and their directories 0700,
whichever part writes them and whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefn.atomicfile import open_private, private_dir, private_file, write_atomic
from edgefn.cli.credentials import save_login
from edgefn.controlplane.db import make_engine
from edgefn.edge.cache import ArtifactCache, sha256_hex
from edgefn.edge.kv.sqlite import SqliteKvStore
from edgefn.edge.spec import NodeState, write_state


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    # The most permissive umask: whatever ends up private is private by our doing.
    old = os.umask(0)
    yield
    os.umask(old)


def test_private_dir_makes_every_missing_level_0700_and_leaves_existing_ones(
    tmp_path: Path,
) -> None:
    (tmp_path / "operator").mkdir(mode=0o750)
    os.chmod(tmp_path / "operator", 0o750)
    private_dir(tmp_path / "operator" / "a" / "b")
    assert mode(tmp_path / "operator") == 0o750
    assert mode(tmp_path / "operator" / "a") == 0o700
    assert mode(tmp_path / "operator" / "a" / "b") == 0o700


def test_write_atomic_and_open_private_create_0600(tmp_path: Path) -> None:
    target = tmp_path / "d" / "state.json"
    write_atomic(target, [b"{}"])
    assert mode(target) == 0o600 and mode(target.parent) == 0o700
    log = tmp_path / "logs" / "cp.log"
    log.parent.mkdir()
    log.write_bytes(b"old\n")
    os.chmod(log, 0o644)
    with open_private(log) as f:
        f.write(b"new\n")
    assert mode(log) == 0o600 and log.read_bytes() == b"old\nnew\n"


def test_private_file_tightens_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"")
    os.chmod(path, 0o666)
    private_file(path)
    assert mode(path) == 0o600


def test_node_state_cache_and_kv_are_private(tmp_path: Path) -> None:
    write_state(tmp_path / "node" / "state.json", NodeState())
    assert mode(tmp_path / "node" / "state.json") == 0o600
    cache = ArtifactCache(tmp_path / "node" / "cache")
    cache.put("fn", "1.0.0", sha256_hex(b"wasm"), b"wasm")
    path = cache.path_for("fn", "1.0.0")
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(cache.root) == 0o700
    store = SqliteKvStore(tmp_path / "node" / "kv.sqlite3")
    try:
        store.put("ns", b"k", b"v", None)
    finally:
        store.close()
    sqlite_files = list((tmp_path / "node").glob("kv.sqlite3*"))
    assert sqlite_files and all(mode(p) == 0o600 for p in sqlite_files), [
        (p.name, oct(mode(p))) for p in sqlite_files]


def test_control_plane_sqlite_is_private(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'cp' / 'controlplane.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x)")
    engine.dispose()
    assert mode(tmp_path / "cp" / "controlplane.db") == 0o600
    assert mode(tmp_path / "cp") == 0o700


def test_saved_login_is_0600_even_over_a_looser_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path = save_login("http://cp", "efn_secret")
    os.chmod(path, 0o644)
    save_login("http://cp", "efn_other")
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert "efn_other" in path.read_text()
