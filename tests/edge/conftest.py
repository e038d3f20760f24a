"""Key-value stores for the edge tests: a fresh SQLite file, or the Redis at
EDGEFN_TEST_REDIS_URL with every test in namespaces of its own, removed after it."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from edgefn.edge.kv.base import KvStore
from edgefn.edge.kv.redis import RedisKvStore
from edgefn.edge.kv.sqlite import SqliteKvStore

REDIS_URL = os.environ.get("EDGEFN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"no Redis at {REDIS_URL}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    finally:
        client.close()
    return REDIS_URL


class Namespaces:
    """Namespaces (valid function ids) unique to one test, all sharing one prefix."""

    def __init__(self) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:12]}"
        self._made = 0

    def __call__(self) -> str:
        self._made += 1
        return f"{self.prefix}-{self._made}"


@pytest.fixture
def new_namespace() -> Namespaces:
    return Namespaces()


@pytest.fixture(params=["sqlite", "redis"])
def kv_store(
    request: pytest.FixtureRequest, tmp_path: Path, new_namespace: Namespaces
) -> Iterator[KvStore]:
    if request.param == "sqlite":
        store: KvStore = SqliteKvStore(tmp_path / "kv.sqlite3")
        yield store
        store.close()
        return
    url = request.getfixturevalue("redis_url")
    store = RedisKvStore(url)
    yield store
    store.close()
    drop_redis_namespaces(url, new_namespace.prefix)


def drop_redis_namespaces(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for pattern in (f"edgefn:kv:{{{prefix}-*", f"edgefn:kvindex:{{{prefix}-*"):
            for key in client.scan_iter(match=pattern, count=1000):
                client.delete(key)
    finally:
        client.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
