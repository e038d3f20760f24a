"""Per-project quotas at the edge: concurrent executions, invocations a minute, CPU a day.

The counts live in one shared-memory table per node (`{data_dir}/quotas.bin`,
mapped by every worker process), so a node counts a project once whatever its
number of workers. Each worker writes only its own column of the table and
reads every column, so the request path takes no lock between processes: two
workers admitting at the same instant may both take the last unit, an
overshoot of at most one per worker, in exchange for a cost in microseconds
per request (`python bench/neighbour.py --quota-cost`: 11 µs on a heavily loaded
2-core machine, where a bare Python call took 5 times its usual). A worker's column is its own by a
`lockf` held for its life; when it dies the kernel drops the lock, and the next
process to claim that column zeroes it, so a crashed worker leaks no running
executions.

Across nodes (when Redis is configured) one worker per node publishes the node's
counts to Redis on every maintenance tick and reads the other nodes' sums back
(`QuotaTable.sync`); admission adds those to the local counts without a round
trip on the request path. Remote figures older than `REMOTE_FRESH_S` are
ignored: when Redis is down, each node still enforces the whole quota on its
own (fail open across nodes, closed on each node). Windows are the wall-clock
minute and UTC day, so nodes agree on them as long as their clocks do.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import math
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefn import native
from edgefn.contract import QuotaSpec
from edgefn.edge import metrics

log = logging.getLogger("edgefn.edge")

# The seed's defaults for a tenant (spec 4.4.2); the node operator may change them.
DEFAULT_MAX_CONCURRENCY = 100
DEFAULT_INVOCATIONS_PER_MINUTE = 10_000
DEFAULT_CPU_SECONDS_PER_DAY = 3600.0

MAX_WORKERS = 64
SLOTS = 16_384  # projects a node counts; slots are taken in order, so the file stays sparse
REMOTE_FRESH_S = 5.0

_MAGIC = b"EFQUOTA3"
# Header: magic, then int32 workers (columns ever claimed), int32 slots in use.
_HEADER = 64
_COUNTS = struct.Struct("<2i")
_KEY = 48
# The other nodes' sums, written by this node's syncer:
# minute, invocations that minute, day, CPU µs that day, running executions, at (ms).
_REMOTE = struct.Struct("<6q")
# One worker's column: running executions, minute, invocations that minute, day, CPU µs.
_COLUMN = struct.Struct("<5q")
# Each worker's column on a cache line of its own, the first after the slot's key and
# remote sums: every request writes its worker's column, and with two columns on one
# line the workers' cores pass it back and forth on every write (a node of two
# workers, wrk -c50, A B alternating three times: 32.0 to 35.5k req/s against 30.2 to
# 34.6k with the columns packed).
_LINE = 64
_STRIDE = _LINE
_COLUMNS = 2 * _LINE
_SLOT = _COLUMNS + MAX_WORKERS * _STRIDE
_SIZE = _HEADER + SLOTS * _SLOT
assert _KEY + _REMOTE.size <= _COLUMNS and _COLUMN.size <= _STRIDE and _HEADER % _LINE == 0
# lockf byte offsets (locks may lie past the end of the file).
_LOCK_TABLE = _SIZE
_LOCK_SYNC = _SIZE + 1
_LOCK_WORKER = _SIZE + 16

_REDIS_PREFIX = "edgefn:quota:"
_QUOTA = native.part("edgefn.edge._quota")


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """A project's effective quotas on this node (the admin's, else the node defaults)."""

    max_concurrency: int
    invocations_per_minute: int
    cpu_us_per_day: int

    @classmethod
    def resolve(cls, spec: QuotaSpec | None, defaults: QuotaSpec) -> QuotaLimits:
        def pick(name: str) -> Any:
            value = getattr(spec, name) if spec is not None else None
            return getattr(defaults, name) if value is None else value

        return cls(
            max_concurrency=int(pick("max_concurrency")),
            invocations_per_minute=int(pick("invocations_per_minute")),
            cpu_us_per_day=int(float(pick("cpu_seconds_per_day")) * 1_000_000),
        )


def node_defaults(
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    invocations_per_minute: int = DEFAULT_INVOCATIONS_PER_MINUTE,
    cpu_seconds_per_day: float = DEFAULT_CPU_SECONDS_PER_DAY,
) -> QuotaSpec:
    return QuotaSpec(max_concurrency=max_concurrency,
                     invocations_per_minute=invocations_per_minute,
                     cpu_seconds_per_day=cpu_seconds_per_day)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request was refused: `kind` is concurrency, rate or cpu."""

    kind: str
    retry_after: int
    message: str


# What admission answers (`QuotaTable._admit_py`, `_quota.c`).
_ADMITTED, _CONCURRENCY, _RATE, _CPU = range(4)


def _rejection(kind: int, limits: QuotaLimits, now: float, minute: int, day: int) -> Rejection:
    if kind == _CONCURRENCY:
        return Rejection("concurrency", 1,
                         f"the project already runs {limits.max_concurrency} executions at once")
    if kind == _RATE:
        return Rejection("rate", max(1, math.ceil((minute + 1) * 60 - now)),
                         f"the project's {limits.invocations_per_minute} invocations a minute "
                         "are spent")
    return Rejection("cpu", max(1, math.ceil((day + 1) * 86400 - now)),
                     f"the project's {limits.cpu_us_per_day / 1e6:g} CPU seconds a day "
                     "are spent")


def _key_bytes(project_id: str) -> bytes:
    raw = project_id.encode()
    if len(raw) <= _KEY and raw:
        return raw.ljust(_KEY, b"\0")
    return hashlib.sha256(raw).hexdigest()[:_KEY].encode()


class QuotaTable:
    """One node's quota counts, shared by its worker processes; thread-safe.

    Open it with `open_table`: one object per file and process, because POSIX
    record locks belong to the process, and closing any descriptor of the file
    would drop them all.
    """

    def __init__(self, path: Path, *, node_id: str, redis_url: str = "") -> None:
        self.path = path
        self.node_id = node_id
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._lock = threading.Lock()
        self._slots: dict[str, int] = {}
        self._sums: dict[int, struct.Struct] = {}
        with self._table_lock():
            if os.fstat(self._fd).st_size != _SIZE:
                os.ftruncate(self._fd, 0)
                os.ftruncate(self._fd, _SIZE)
            self._map = mmap.mmap(self._fd, _SIZE)
            if self._map[: len(_MAGIC)] != _MAGIC:
                self._map[:_HEADER] = _MAGIC.ljust(_HEADER, b"\0")
            self.worker = self._claim_worker()
        self._own = _COLUMNS + self.worker * _STRIDE
        # `_quota.c`'s admission and release, where it was built (the tests' twin tables
        # set these to None to run the Python of record).
        self._admit_c = _QUOTA and _QUOTA.admit
        self._release_c = _QUOTA and _QUOTA.release
        self._syncer = False
        self._redis: Any = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(
                redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
        self._sync_error_logged = 0.0

    # -- locking ----------------------------------------------------------------
    def _lockf(self, op: int, offset: int) -> None:
        fcntl.lockf(self._fd, op, 1, offset, os.SEEK_SET)

    def _table_lock(self) -> _TableLock:
        """Held while a worker or a slot is claimed: rare, never per request."""
        return _TableLock(self)

    def _claim_worker(self) -> int:
        """A column nobody alive holds: its previous owner's counts are void."""
        workers, used = _COUNTS.unpack_from(self._map, 8)
        for index in range(MAX_WORKERS):
            try:
                self._lockf(fcntl.LOCK_EX | fcntl.LOCK_NB, _LOCK_WORKER + index)
            except OSError:
                continue
            zero = bytes(_STRIDE)
            for slot in range(used):
                at = _HEADER + slot * _SLOT + _COLUMNS + index * _STRIDE
                self._map[at : at + _STRIDE] = zero
            _COUNTS.pack_into(self._map, 8, max(workers, index + 1), used)
            return index
        raise RuntimeError(f"more than {MAX_WORKERS} worker processes share {self.path}")

    # -- slots ------------------------------------------------------------------
    def _slot(self, project_id: str) -> int:
        """Byte offset of the project's slot, found or claimed; -1 when the table is full."""
        base = self._slots.get(project_id)
        if base is not None:
            return base
        key = _key_bytes(project_id)
        with self._table_lock():
            workers, used = _COUNTS.unpack_from(self._map, 8)
            for slot in range(used):
                off = _HEADER + slot * _SLOT
                if self._map[off : off + _KEY] == key:
                    break
            else:
                if used >= SLOTS:
                    log.error("quota table %s is full: project %s is not counted",
                              self.path, project_id)
                    return -1
                off = _HEADER + used * _SLOT
                self._map[off : off + _KEY] = key
                _COUNTS.pack_into(self._map, 8, workers, used + 1)
        self._slots[project_id] = off
        return off

    def track(self, project_ids: list[str]) -> None:
        """Claim the projects' slots before their first request, so that `sync`
        fetches the other nodes' counts for them from the start."""
        for project_id in project_ids:
            self._slot(project_id)

    def _sum(self, off: int, minute: int, day: int) -> tuple[int, int, int]:
        """Running executions, invocations this minute and CPU µs today, on this node."""
        workers = _COUNTS.unpack_from(self._map, 8)[0]
        layout = self._sums.get(workers)
        if layout is None:
            layout = self._sums[workers] = struct.Struct(
                "<" + f"5q{_STRIDE - _COLUMN.size}x" * workers)
        values = layout.unpack_from(self._map, off + _COLUMNS)
        conc = invocations = cpu = 0
        for i in range(0, len(values), 5):
            conc += values[i]
            if values[i + 1] == minute:
                invocations += values[i + 2]
            if values[i + 3] == day:
                cpu += values[i + 4]
        return conc, invocations, cpu

    # -- admission --------------------------------------------------------------
    def enter(self, project_id: str, limits: QuotaLimits) -> Rejection | None:
        """Count one execution starting, or say why it may not."""
        off = self._slots.get(project_id)
        if off is None:
            off = self._slot(project_id)
        if off < 0:
            return None
        now = time.time()
        minute, day = int(now // 60), int(now // 86400)
        with self._lock:
            kind = -1
            if self._admit_c is not None:
                kind = self._admit_c(self._map, off, off + self._own, now, minute, day,
                                     REMOTE_FRESH_S * 1000, limits.max_concurrency,
                                     limits.invocations_per_minute, limits.cpu_us_per_day)
            if kind < 0:
                kind = self._admit_py(off, now, minute, day, limits)
        if kind == _ADMITTED:
            return None
        rejection = _rejection(kind, limits, now, minute, day)
        metrics.QUOTA_REJECTIONS.labels(project_id, rejection.kind).inc()
        return rejection

    def _admit_py(self, off: int, now: float, minute: int, day: int,
                  limits: QuotaLimits) -> int:
        """The admission rule of record (`_quota.c` is its fast half), under the lock:
        `_ADMITTED` with the execution counted in this worker's column, else why not."""
        r_minute, r_inv, r_day, r_cpu, r_conc, r_at = _REMOTE.unpack_from(self._map, off + _KEY)
        if now * 1000 - r_at > REMOTE_FRESH_S * 1000:
            r_inv = r_cpu = r_conc = 0
        if r_minute != minute:
            r_inv = 0
        if r_day != day:
            r_cpu = 0
        conc, invocations, cpu = self._sum(off, minute, day)
        if conc + r_conc >= limits.max_concurrency:
            return _CONCURRENCY
        if invocations + r_inv >= limits.invocations_per_minute:
            return _RATE
        if cpu + r_cpu >= limits.cpu_us_per_day:
            return _CPU
        own = off + self._own
        c, m, n, d, u = _COLUMN.unpack_from(self._map, own)
        if m != minute:
            m, n = minute, 0
        _COLUMN.pack_into(self._map, own, c + 1, m, n + 1, d, u)
        return _ADMITTED

    def leave(self, project_id: str, cpu_seconds: float) -> None:
        """An execution `enter` admitted has ended, having used `cpu_seconds`."""
        off = self._slots.get(project_id, -1)
        if off < 0:
            return
        day = int(time.time() // 86400)
        own, cpu_us = off + self._own, int(cpu_seconds * 1_000_000)
        with self._lock:
            if self._release_c is None or not self._release_c(self._map, own, day, cpu_us):
                self._release_py(own, day, cpu_us)

    def _release_py(self, own: int, day: int, cpu_us: int) -> None:
        """The release of record (`_quota.c` is its fast half), under the lock."""
        c, m, n, d, u = _COLUMN.unpack_from(self._map, own)
        if d != day:
            d, u = day, 0
        _COLUMN.pack_into(self._map, own, c - 1, m, n, d, u + cpu_us)

    def usage(self, project_id: str) -> dict[str, int]:
        """This node's counts for the project (tests, debugging)."""
        now = time.time()
        conc, invocations, cpu = self._sum(self._slot(project_id), int(now // 60),
                                           int(now // 86400))
        return {"concurrency": conc, "minute": invocations, "cpu_us": cpu}

    # -- across nodes -----------------------------------------------------------
    def sync(self) -> bool:
        """Publish this node's counts to Redis and take the other nodes' sums; one
        worker per node does it (the one holding the sync lock). True when it ran."""
        if self._redis is None:
            return False
        if not self._syncer:
            try:
                self._lockf(fcntl.LOCK_EX | fcntl.LOCK_NB, _LOCK_SYNC)
            except OSError:
                return False
            self._syncer = True
        import redis

        now = time.time()
        minute, day = int(now // 60), int(now // 86400)
        local: list[tuple[int, str, int, int, int]] = []
        for slot in range(_COUNTS.unpack_from(self._map, 8)[1]):
            off = _HEADER + slot * _SLOT
            key = bytes(self._map[off : off + _KEY]).rstrip(b"\0").decode()
            conc, invocations, cpu = self._sum(off, minute, day)
            local.append((off, key, invocations, cpu, conc))
        if not local:
            return True
        node = self.node_id
        pipe = self._redis.pipeline(transaction=False)
        for _, project, invocations, cpu, conc in local:
            base = f"{_REDIS_PREFIX}{{{project}}}"
            for key, value, ttl in ((f"{base}:m:{minute}", invocations, 120),
                                    (f"{base}:d:{day}", cpu, 2 * 86400),
                                    (f"{base}:c", f"{conc}:{int(now * 1000)}", 60)):
                pipe.hset(key, node, value)
                pipe.expire(key, ttl)
                pipe.hgetall(key)
        try:
            replies = pipe.execute()
        except redis.RedisError as exc:
            metrics.QUOTA_SYNC_FAILURES.inc()
            if now - self._sync_error_logged > 60:
                self._sync_error_logged = now
                log.warning("quota sync with redis failed, counting on this node alone: %s", exc)
            return True
        me = node.encode()
        fresh_ms = now * 1000 - REMOTE_FRESH_S * 1000
        for i, (off, *_counts) in enumerate(local):
            minutes, days, running = replies[9 * i + 2 : 9 * i + 9 : 3]
            r_inv = sum(int(v) for k, v in minutes.items() if k != me)
            r_cpu = sum(int(v) for k, v in days.items() if k != me)
            r_conc = 0
            for k, v in running.items():
                count, _, at = v.partition(b":")
                if k != me and int(at) >= fresh_ms:
                    r_conc += int(count)
            _REMOTE.pack_into(self._map, off + _KEY, minute, r_inv, day, r_cpu, r_conc,
                              int(now * 1000))
        return True

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


class _TableLock:
    """The table's lock across processes (`lockf`), and within this one."""

    __slots__ = ("_table",)

    def __init__(self, table: QuotaTable) -> None:
        self._table = table

    def __enter__(self) -> None:
        self._table._lock.acquire()
        self._table._lockf(fcntl.LOCK_EX, _LOCK_TABLE)

    def __exit__(self, *exc: object) -> None:
        self._table._lockf(fcntl.LOCK_UN, _LOCK_TABLE)
        self._table._lock.release()


_tables: dict[Path, QuotaTable] = {}
_tables_lock = threading.Lock()


def open_table(path: Path, *, node_id: str, redis_url: str = "") -> QuotaTable:
    """The process's one `QuotaTable` for `path`."""
    path = path.resolve()
    with _tables_lock:
        table = _tables.get(path)
        if table is None:
            table = _tables[path] = QuotaTable(path, node_id=node_id, redis_url=redis_url)
        return table
