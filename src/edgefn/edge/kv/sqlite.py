"""`SqliteKvStore`: the node's key-value store in one SQLite file (the embedded default).

Several worker processes of one node open the same file: WAL lets readers run
beside the single writer, every write is a `BEGIN IMMEDIATE` transaction so the
quota check and the write see the same data, and `busy_timeout` queues writers
instead of failing them. Each thread has its own connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgefn.atomicfile import private_file
from edgefn.edge.kv.base import check_namespace, check_ttl
from edgefn.edge.kv.errors import KvQuotaExceeded, KvUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    namespace  TEXT NOT NULL,
    key        BLOB NOT NULL,
    value      BLOB NOT NULL,
    expires_at REAL,                      -- unix time; NULL: never
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
"""
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_SWEEP_BATCH = 1000


class SqliteKvStore:
    """Thread-safe, and safe for several processes sharing `path`.

    Expired rows are invisible at once; they are deleted lazily (a namespace's
    expired rows go when a new key must be counted against its quota) and by a
    sweep of at most `_SWEEP_BATCH` rows that a write triggers every
    `sweep_interval_s`, so reads never write and the file does not grow
    without end. Counting a namespace scans its slice of the primary key: a
    local B-tree range of at most `max_keys` entries, done only when a new key
    is written under a quota.
    """

    cooperative = False  # sqlite3 blocks its thread

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 2.0,
        sweep_interval_s: float = 60.0,
    ) -> None:
        self.path = str(path)
        self._busy_timeout_s = busy_timeout_s
        self._sweep_interval_s = sweep_interval_s
        self._next_sweep = time.time() + sweep_interval_s
        self._sweep_lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        # 0600 before SQLite creates it: its WAL and journal files copy the mode.
        if self.path != ":memory:":
            private_file(Path(self.path))
        with self._translate():
            self._conn().executescript(_SCHEMA)

    def get(self, namespace: str, key: bytes) -> bytes | None:
        check_namespace(namespace)
        with self._translate():
            row = (
                self._conn()
                .execute(
                    f"SELECT value FROM kv WHERE namespace = ? AND key = ? AND {_LIVE}",
                    (namespace, bytes(key), time.time()),
                )
                .fetchone()
            )
        return None if row is None else bytes(row[0])

    def put(
        self,
        namespace: str,
        key: bytes,
        value: bytes,
        ttl_seconds: int | None,
        *,
        max_keys: int | None = None,
    ) -> None:
        check_namespace(namespace)
        check_ttl(ttl_seconds)
        now = time.time()
        expires_at = None if ttl_seconds is None else now + ttl_seconds
        with self._translate(), self._write() as conn:
            if max_keys is not None and not self._is_live(conn, namespace, key, now):
                conn.execute(
                    "DELETE FROM kv WHERE namespace = ? AND expires_at <= ?", (namespace, now)
                )
                (n,) = conn.execute(
                    "SELECT COUNT(*) FROM kv WHERE namespace = ?", (namespace,)
                ).fetchone()
                if n >= max_keys:
                    raise KvQuotaExceeded(f"namespace {namespace!r} holds {n} keys")
            conn.execute(
                "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (namespace, key)"
                " DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                (namespace, bytes(key), bytes(value), expires_at),
            )
        if now >= self._next_sweep:
            self._sweep(now)

    def count(self, namespace: str) -> int:
        check_namespace(namespace)
        with self._translate():
            (n,) = (
                self._conn()
                .execute(
                    f"SELECT COUNT(*) FROM kv WHERE namespace = ? AND {_LIVE}",
                    (namespace, time.time()),
                )
                .fetchone()
            )
        return int(n)

    def sweep(self) -> int:
        """Delete up to `_SWEEP_BATCH` expired rows of any namespace; how many went."""
        with self._translate(), self._write() as conn:
            cur = conn.execute(
                "DELETE FROM kv WHERE (namespace, key) IN (SELECT namespace, key FROM kv"
                " WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
                (time.time(), _SWEEP_BATCH),
            )
            return cur.rowcount

    def close(self) -> None:
        with self._conns_lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    # -- internals -------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self._after_fork()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        with self._conns_lock:
            if self._closed:
                raise KvUnavailable("the store is closed")
            # isolation_level=None: transactions are ours (BEGIN IMMEDIATE), not the module's.
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            self._conns.append(conn)
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a power loss may drop the last commits but never corrupts.
        conn.execute("PRAGMA synchronous = NORMAL")
        self._local.conn = conn
        return conn

    def _after_fork(self) -> None:
        # A connection must not cross a fork: the child abandons (never closes) the
        # parent's and opens its own, so a store made before workers fork still works.
        self._pid = os.getpid()
        self._local = threading.local()
        self._conns = []
        self._conns_lock = threading.Lock()
        self._sweep_lock = threading.Lock()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads
        # and then writes can fail with SQLITE_BUSY instead of waiting its turn.
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _is_live(conn: sqlite3.Connection, namespace: str, key: bytes, now: float) -> bool:
        row = conn.execute(
            f"SELECT 1 FROM kv WHERE namespace = ? AND key = ? AND {_LIVE}",
            (namespace, bytes(key), now),
        ).fetchone()
        return row is not None

    def _sweep(self, now: float) -> None:
        # One thread sweeps at a time; the others carry on with their own writes.
        if not self._sweep_lock.acquire(blocking=False):
            return
        try:
            self._next_sweep = now + self._sweep_interval_s
            self.sweep()
        except KvUnavailable:
            pass  # the next sweep retries; a put that succeeded must not fail for it
        finally:
            self._sweep_lock.release()

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise KvUnavailable(f"sqlite kv {self.path}: {exc}") from exc
