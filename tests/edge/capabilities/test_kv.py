"""`KvCapability` over SQLite and a real Redis: namespacing, every quota, failures as codes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from edgefn.contract import KvPolicy
from edgefn.edge.capabilities.kv import KvCapability
from edgefn.edge.kv.base import KvStore
from edgefn.edge.kv.redis import RedisKvStore
from edgefn.edge.kv.sqlite import SqliteKvStore
from edgefn.edge.spec import FunctionSpec
from edgefn.sandbox.hostcodes import FAILED, NOT_FOUND, QUOTA_EXCEEDED
from tests.edge.conftest import Namespaces


def spec(function_id: str, **policy: object) -> FunctionSpec:
    return FunctionSpec(id=function_id, kv=KvPolicy(enabled=True, **policy))  # type: ignore[arg-type]


def configure(store: KvStore, function_id: str, **policy: object) -> KvCapability:
    kv = KvCapability.configure(spec(function_id, **policy), store)
    assert kv is not None
    return kv


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_get_put_overwrite_and_not_found(kv_store: KvStore, new_namespace: Namespaces) -> None:
    kv = configure(kv_store, new_namespace())
    assert kv.get(b"missing") == NOT_FOUND
    assert kv.put(b"k", b"v1", 0) == 0
    assert kv.get(b"k") == b"v1"
    assert kv.put(b"k", b"v2", 60) == 0
    assert kv.get(b"k") == b"v2"


def test_functions_cannot_see_each_others_keys(
    kv_store: KvStore, new_namespace: Namespaces
) -> None:
    a = configure(kv_store, new_namespace())
    b = configure(kv_store, new_namespace())
    assert a.put(b"secret", b"a's", 0) == 0
    assert b.get(b"secret") == NOT_FOUND
    assert b.put(b"secret", b"b's", 0) == 0
    assert a.get(b"secret") == b"a's"


def test_disabled_or_storeless_functions_get_no_capability(kv_store: KvStore) -> None:
    assert KvCapability.configure(FunctionSpec(id="fn"), kv_store) is None
    assert KvCapability.configure(spec("fn"), None) is None


def test_key_and_value_size_quotas(kv_store: KvStore, new_namespace: Namespaces) -> None:
    kv = configure(kv_store, new_namespace(), max_key_bytes=8, max_value_bytes=16)
    assert kv.put(b"k" * 8, b"v" * 16, 0) == 0
    assert kv.put(b"k" * 9, b"v", 0) == QUOTA_EXCEEDED
    assert kv.put(b"k", b"v" * 17, 0) == QUOTA_EXCEEDED
    assert kv.get(b"k" * 9) == QUOTA_EXCEEDED
    assert kv.get(b"k" * 8) == b"v" * 16


def test_key_count_quota(kv_store: KvStore, new_namespace: Namespaces) -> None:
    kv = configure(kv_store, new_namespace(), max_keys=3)
    for key in (b"a", b"b", b"c"):
        assert kv.put(key, b"v", 0) == 0
    assert kv.put(b"d", b"v", 0) == QUOTA_EXCEEDED
    assert kv.put(b"a", b"overwrite is fine", 0) == 0
    assert kv.get(b"d") == NOT_FOUND


def test_ttl_over_the_cap_is_refused(kv_store: KvStore, new_namespace: Namespaces) -> None:
    kv = configure(kv_store, new_namespace(), max_ttl_seconds=60)
    assert kv.put(b"k", b"v", 61) == QUOTA_EXCEEDED
    assert kv.put(b"k", b"v", 60) == 0


def test_no_ttl_means_the_longest_the_policy_allows(
    kv_store: KvStore, new_namespace: Namespaces
) -> None:
    kv = configure(kv_store, new_namespace(), max_ttl_seconds=1)
    assert kv.put(b"zero", b"v", 0) == 0
    assert kv.put(b"negative", b"v", -5) == 0
    wait_until(lambda: kv.get(b"zero") == NOT_FOUND and kv.get(b"negative") == NOT_FOUND)


def test_expired_keys_free_their_quota(kv_store: KvStore, new_namespace: Namespaces) -> None:
    kv = configure(kv_store, new_namespace(), max_keys=1)
    assert kv.put(b"a", b"v", 1) == 0
    assert kv.put(b"b", b"v", 0) in (QUOTA_EXCEEDED, 0)  # 0 only if `a` expired already
    wait_until(lambda: kv.put(b"b", b"v", 0) == 0)
    assert kv.get(b"a") == NOT_FOUND


def test_concurrent_puts_from_threads(kv_store: KvStore, new_namespace: Namespaces) -> None:
    kv = configure(kv_store, new_namespace(), max_keys=50)
    codes: list[int] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        mine = [kv.put(f"{t}/{i}".encode(), b"x" * 64, 0) for i in range(20)]
        with lock:
            codes.extend(mine)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(5)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(set(codes)) == [QUOTA_EXCEEDED, 0]
    assert codes.count(0) == 50


def test_redis_down_is_failed_not_an_exception(closed_port: int) -> None:
    store = RedisKvStore(f"redis://127.0.0.1:{closed_port}/0", timeout_s=0.5)
    kv = configure(store, "fn")
    assert kv.get(b"k") == FAILED
    assert kv.put(b"k", b"v", 0) == FAILED
    store.close()


def test_sqlite_failure_is_failed_not_an_exception(tmp_path: Path) -> None:
    store = SqliteKvStore(tmp_path / "kv.sqlite3")
    kv = configure(store, "fn")
    assert kv.put(b"k", b"v", 0) == 0
    store.close()
    assert kv.get(b"k") == FAILED
    assert kv.put(b"k", b"v", 0) == FAILED
