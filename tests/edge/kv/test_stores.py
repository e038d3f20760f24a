"""One behavioural suite for every `KvStore`, run against SQLite and a real Redis."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefn.edge.kv import KvQuotaExceeded, KvStore, KvUnavailable, create_kv_store
from edgefn.edge.kv.redis import RedisKvStore
from edgefn.edge.kv.sqlite import SqliteKvStore
from tests.edge.conftest import Namespaces


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll instead of sleeping a guessed time: expiry is checked, not its exact moment."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_get_put_overwrite(kv_store: KvStore, new_namespace: Namespaces) -> None:
    ns = new_namespace()
    assert kv_store.get(ns, b"k") is None
    kv_store.put(ns, b"k", b"one", None)
    assert kv_store.get(ns, b"k") == b"one"
    kv_store.put(ns, b"k", b"two", None)
    assert kv_store.get(ns, b"k") == b"two"
    assert kv_store.count(ns) == 1


def test_keys_and_values_are_binary_safe(kv_store: KvStore, new_namespace: Namespaces) -> None:
    ns = new_namespace()
    key = bytes(range(256))
    value = b"\x00\xff" * 1000
    kv_store.put(ns, key, value, None)
    kv_store.put(ns, b"", b"", None)
    assert kv_store.get(ns, key) == value
    assert kv_store.get(ns, b"") == b""
    assert kv_store.get(ns, key[:-1]) is None


def test_ttl_expires_on_read_and_in_count(kv_store: KvStore, new_namespace: Namespaces) -> None:
    ns = new_namespace()
    kv_store.put(ns, b"short", b"v", 1)
    kv_store.put(ns, b"long", b"v", 3600)
    kv_store.put(ns, b"forever", b"v", None)
    wait_until(lambda: kv_store.get(ns, b"short") is None)
    assert kv_store.count(ns) == 2
    assert kv_store.get(ns, b"long") == b"v"
    assert kv_store.get(ns, b"forever") == b"v"


def test_overwrite_replaces_the_ttl(kv_store: KvStore, new_namespace: Namespaces) -> None:
    ns = new_namespace()
    kv_store.put(ns, b"k", b"old", 1)
    kv_store.put(ns, b"k", b"new", None)
    kv_store.put(ns, b"probe", b"v", 1)
    wait_until(lambda: kv_store.get(ns, b"probe") is None)
    assert kv_store.get(ns, b"k") == b"new"


def test_namespaces_are_separate(kv_store: KvStore, new_namespace: Namespaces) -> None:
    a, b = new_namespace(), new_namespace()
    kv_store.put(a, b"k", b"from a", None)
    assert kv_store.get(b, b"k") is None
    kv_store.put(b, b"k", b"from b", None)
    assert kv_store.get(a, b"k") == b"from a"
    assert (kv_store.count(a), kv_store.count(b)) == (1, 1)


@pytest.mark.parametrize("bad", ["", "a:b", "{x}", "with space", "a" * 200])
def test_namespaces_that_could_collide_are_refused(kv_store: KvStore, bad: str) -> None:
    with pytest.raises(ValueError):
        kv_store.put(bad, b"k", b"v", None)
    with pytest.raises(ValueError):
        kv_store.get(bad, b"k")


def test_max_keys_counts_live_keys_and_allows_overwrites(
    kv_store: KvStore, new_namespace: Namespaces
) -> None:
    ns = new_namespace()
    kv_store.put(ns, b"a", b"v", None, max_keys=2)
    kv_store.put(ns, b"b", b"v", 1, max_keys=2)
    with pytest.raises(KvQuotaExceeded):
        kv_store.put(ns, b"c", b"v", None, max_keys=2)
    kv_store.put(ns, b"a", b"overwritten", None, max_keys=2)
    # An expired key frees its place.
    wait_until(lambda: kv_store.count(ns) == 1)
    kv_store.put(ns, b"c", b"v", None, max_keys=2)
    assert kv_store.count(ns) == 2


def test_concurrent_puts_never_pass_the_quota(kv_store: KvStore, new_namespace: Namespaces) -> None:
    ns = new_namespace()
    limit, threads, per_thread = 60, 6, 20
    accepted: list[int] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        ok = 0
        for i in range(per_thread):
            try:
                kv_store.put(ns, f"{t}-{i}".encode(), b"v" * 100, None, max_keys=limit)
                ok += 1
            except KvQuotaExceeded:
                pass
        with lock:
            accepted.append(ok)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sum(accepted) == limit
    assert kv_store.count(ns) == limit


def test_a_non_positive_ttl_is_a_caller_bug(kv_store: KvStore, new_namespace: Namespaces) -> None:
    with pytest.raises(ValueError):
        kv_store.put(new_namespace(), b"k", b"v", 0)


def test_redis_down_raises_kv_unavailable(closed_port: int) -> None:
    store = RedisKvStore(f"redis://127.0.0.1:{closed_port}/0", timeout_s=0.5)
    with pytest.raises(KvUnavailable):
        store.get("fn", b"k")
    with pytest.raises(KvUnavailable):
        store.put("fn", b"k", b"v", None)
    with pytest.raises(KvUnavailable):
        store.count("fn")
    store.close()


def test_sqlite_closed_store_raises_kv_unavailable(tmp_path: Path) -> None:
    store = SqliteKvStore(tmp_path / "kv.sqlite3")
    store.close()
    with pytest.raises(KvUnavailable):
        store.get("fn", b"k")


def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(KvUnavailable):
        SqliteKvStore(path)


def test_sqlite_sweep_deletes_expired_rows(tmp_path: Path) -> None:
    store = SqliteKvStore(tmp_path / "kv.sqlite3", sweep_interval_s=3600)
    store.put("fn", b"gone", b"v", 1)
    store.put("fn", b"kept", b"v", None)
    wait_until(lambda: store.get("fn", b"gone") is None)
    assert store.sweep() == 1
    assert store.sweep() == 0
    assert store.count("fn") == 1
    store.close()


def test_sqlite_put_sweeps_on_its_interval(tmp_path: Path) -> None:
    path = tmp_path / "kv.sqlite3"
    store = SqliteKvStore(path, sweep_interval_s=0)
    store.put("fn", b"gone", b"v", 1)
    wait_until(lambda: store.count("fn") == 0)
    store.put("other", b"k", b"v", None)  # a write in any namespace triggers the sweep
    assert store.sweep() == 0
    store.close()


_WORKER = textwrap.dedent(
    """
    import sys
    from edgefn.edge.kv.errors import KvQuotaExceeded
    from edgefn.edge.kv.sqlite import SqliteKvStore

    path, name, n, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = SqliteKvStore(path)
    ok = 0
    for i in range(n):
        try:
            store.put("shared", f"{name}-{i}".encode(), name.encode(), None, max_keys=limit)
            ok += 1
        except KvQuotaExceeded:
            pass
    print(ok)
    """
)


def test_sqlite_file_shared_by_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "node" / "kv.sqlite3"
    parent = SqliteKvStore(path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(path), name, "120", "150"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("p1", "p2")
    ]
    accepted = 0
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        accepted += int(out)
    assert accepted == 150
    assert parent.count("shared") == 150
    # Each process sees what the other wrote.
    values = {parent.get("shared", f"{n}-0".encode()) for n in ("p1", "p2")}
    assert values == {b"p1", b"p2"}
    parent.close()


def _forked_worker(store: SqliteKvStore) -> None:
    assert store.get("fn", b"from parent") == b"1"
    store.put("fn", b"from child", b"2", None)
    store.close()


def test_sqlite_store_made_before_a_fork(tmp_path: Path) -> None:
    store = SqliteKvStore(tmp_path / "kv.sqlite3")
    store.put("fn", b"from parent", b"1", None)
    child = multiprocessing.get_context("fork").Process(target=_forked_worker, args=(store,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert store.get("fn", b"from child") == b"2"
    store.put("fn", b"parent again", b"3", None)  # the parent's connection is unharmed
    store.close()


def test_factory(tmp_path: Path, redis_url: str) -> None:
    sqlite = create_kv_store(f"sqlite:///{tmp_path / 'kv.sqlite3'}")
    assert isinstance(sqlite, SqliteKvStore)
    assert sqlite.path == str(tmp_path / "kv.sqlite3")
    sqlite.close()
    store = create_kv_store(redis_url)
    assert isinstance(store, RedisKvStore)
    store.close()
    for bad in ("sqlite:///", "postgres://x/y", "kv.sqlite3"):
        with pytest.raises(ValueError):
            create_kv_store(bad)
