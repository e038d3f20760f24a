"""Per-project quotas at the edge: concurrent executions, invocations a minute, CPU a day.

The counts live in one shared-memory table per node (`{data_dir}/quotas.bin`,
mapped by every worker process), so a node counts a project once whatever its
number of workers. A byte-range `lockf` on that file makes check-and-count
atomic across processes: a lock whose holder dies is released by the kernel, and
each worker's running executions sit in a column of its own, which the next
process to claim that column zeroes, so a crashed worker leaks nothing.
One admission costs about 4 µs (two lock round trips and a few struct reads;
`bench/neighbour.py --quota-cost`).

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
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefn.edge import metrics
from edgefn.edge.spec import QuotaSpec

log = logging.getLogger("edgefn.edge")

# The seed's defaults for a tenant (spec 4.4.2); the node operator may change them.
DEFAULT_MAX_CONCURRENCY = 100
DEFAULT_INVOCATIONS_PER_MINUTE = 10_000
DEFAULT_CPU_SECONDS_PER_DAY = 3600.0

MAX_WORKERS = 64
SLOTS = 4096
REMOTE_FRESH_S = 5.0

_MAGIC = b"EFQUOTA1"
_HEADER = 64
_KEY = 48
# minute, minute_count, day, cpu_us, r_minute, r_minute_count, r_day, r_cpu_us, r_conc, r_at_ms
_FIELDS = struct.Struct("<10q")
_CONC = struct.Struct(f"<{MAX_WORKERS}i")
_SLOT = 384
assert _KEY + _FIELDS.size + _CONC.size <= _SLOT
_SIZE = _HEADER + SLOTS * _SLOT
# lockf byte offsets (locks may lie past the end of the file).
_LOCK_TABLE = _SIZE
_LOCK_SYNC = _SIZE + 1
_LOCK_WORKER = _SIZE + 16

_REDIS_PREFIX = "edgefn:quota:"


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
        self._lockf(fcntl.LOCK_EX, _LOCK_TABLE)
        try:
            if os.fstat(self._fd).st_size != _SIZE:
                os.ftruncate(self._fd, 0)
                os.ftruncate(self._fd, _SIZE)
            self._map = mmap.mmap(self._fd, _SIZE)
            if self._map[: len(_MAGIC)] != _MAGIC:
                self._map[: len(_MAGIC)] = _MAGIC
            self.worker = self._claim_worker()
        finally:
            self._lockf(fcntl.LOCK_UN, _LOCK_TABLE)
        self._slots: dict[str, int] = {}
        self._col = _KEY + _FIELDS.size + 4 * self.worker
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

    def _claim_worker(self) -> int:
        """A column nobody alive holds: its previous owner's counts are void."""
        for index in range(MAX_WORKERS):
            try:
                self._lockf(fcntl.LOCK_EX | fcntl.LOCK_NB, _LOCK_WORKER + index)
            except OSError:
                continue
            column = _HEADER + _KEY + _FIELDS.size + 4 * index
            for slot in range(SLOTS):
                at = column + slot * _SLOT
                self._map[at : at + 4] = b"\0\0\0\0"
            return index
        raise RuntimeError(f"more than {MAX_WORKERS} worker processes share {self.path}")

    # -- slots ------------------------------------------------------------------
    def _slot(self, project_id: str) -> int:
        """Byte offset of the project's slot, claimed on first use; -1 when full."""
        base = self._slots.get(project_id)
        if base is not None:
            return base
        key = _key_bytes(project_id)
        start = zlib.crc32(key) % SLOTS
        for i in range(SLOTS):
            off = _HEADER + ((start + i) % SLOTS) * _SLOT
            have = self._map[off : off + _KEY]
            if have == key:
                break
            if have == b"\0" * _KEY:
                self._map[off : off + _KEY] = key
                break
        else:
            log.error("quota table %s is full: project %s is not counted", self.path, project_id)
            return -1
        self._slots[project_id] = off
        return off

    def track(self, project_ids: list[str]) -> None:
        """Claim the projects' slots before their first request, so that `sync`
        fetches the other nodes' counts for them from the start."""
        with self._lock:
            self._lockf(fcntl.LOCK_EX, _LOCK_TABLE)
            try:
                for project_id in project_ids:
                    self._slot(project_id)
            finally:
                self._lockf(fcntl.LOCK_UN, _LOCK_TABLE)

    # -- admission --------------------------------------------------------------
    def enter(self, project_id: str, limits: QuotaLimits) -> Rejection | None:
        """Count one execution starting, or say why it may not."""
        now = time.time()
        minute, day = int(now // 60), int(now // 86400)
        with self._lock:
            self._lockf(fcntl.LOCK_EX, _LOCK_TABLE)
            try:
                off = self._slot(project_id)
                if off < 0:
                    return None
                f = _FIELDS.unpack_from(self._map, off + _KEY)
                m, mc, d, cpu, r_m, r_mc, r_d, r_cpu, r_conc, r_at = f
                if m != minute:
                    m, mc = minute, 0
                if d != day:
                    d, cpu = day, 0
                if now * 1000 - r_at > REMOTE_FRESH_S * 1000:
                    r_mc = r_cpu = r_conc = 0
                conc = sum(_CONC.unpack_from(self._map, off + _KEY + _FIELDS.size))
                rejection = None
                if conc + r_conc >= limits.max_concurrency:
                    rejection = Rejection(
                        "concurrency", 1,
                        f"the project already runs {limits.max_concurrency} executions at once",
                    )
                elif mc + (r_mc if r_m == minute else 0) >= limits.invocations_per_minute:
                    rejection = Rejection(
                        "rate", max(1, math.ceil((minute + 1) * 60 - now)),
                        f"the project's {limits.invocations_per_minute} invocations a minute "
                        "are spent",
                    )
                elif cpu + (r_cpu if r_d == day else 0) >= limits.cpu_us_per_day:
                    rejection = Rejection(
                        "cpu", max(1, math.ceil((day + 1) * 86400 - now)),
                        f"the project's {limits.cpu_us_per_day / 1e6:g} CPU seconds a day "
                        "are spent",
                    )
                else:
                    mc += 1
                    col = off + self._col
                    struct.pack_into("<i", self._map, col,
                                     struct.unpack_from("<i", self._map, col)[0] + 1)
                _FIELDS.pack_into(self._map, off + _KEY, m, mc, d, cpu, r_m, r_mc, r_d, r_cpu,
                                  r_conc, r_at)
            finally:
                self._lockf(fcntl.LOCK_UN, _LOCK_TABLE)
        if rejection is not None:
            metrics.QUOTA_REJECTIONS.labels(project_id, rejection.kind).inc()
        return rejection

    def leave(self, project_id: str, cpu_seconds: float) -> None:
        """An execution `enter` admitted has ended, having used `cpu_seconds`."""
        day = int(time.time() // 86400)
        off = self._slots.get(project_id, -1)
        if off < 0:
            return
        with self._lock:
            self._lockf(fcntl.LOCK_EX, _LOCK_TABLE)
            try:
                col = off + self._col
                struct.pack_into("<i", self._map, col,
                                 struct.unpack_from("<i", self._map, col)[0] - 1)
                at = off + _KEY + 16  # day, cpu_us
                d, cpu = struct.unpack_from("<2q", self._map, at)
                if d != day:
                    d, cpu = day, 0
                struct.pack_into("<2q", self._map, at, d, cpu + int(cpu_seconds * 1_000_000))
            finally:
                self._lockf(fcntl.LOCK_UN, _LOCK_TABLE)

    def usage(self, project_id: str) -> dict[str, int]:
        """This node's counts for the project (tests, debugging)."""
        now = time.time()
        off = self._slot(project_id)
        m, mc, d, cpu, *_ = _FIELDS.unpack_from(self._map, off + _KEY)
        return {
            "concurrency": sum(_CONC.unpack_from(self._map, off + _KEY + _FIELDS.size)),
            "minute": mc if m == int(now // 60) else 0,
            "cpu_us": cpu if d == int(now // 86400) else 0,
        }

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
        for slot in range(SLOTS):
            off = _HEADER + slot * _SLOT
            key = bytes(self._map[off : off + _KEY]).rstrip(b"\0")
            if not key:
                continue
            m, mc, d, cpu, *_ = _FIELDS.unpack_from(self._map, off + _KEY)
            conc = sum(_CONC.unpack_from(self._map, off + _KEY + _FIELDS.size))
            local.append((off, key.decode(), mc if m == minute else 0, cpu if d == day else 0,
                          conc))
        if not local:
            return True
        node = self.node_id
        pipe = self._redis.pipeline(transaction=False)
        for _, project, mc, cpu, conc in local:
            base = f"{_REDIS_PREFIX}{{{project}}}"
            pipe.hset(f"{base}:m:{minute}", node, mc)
            pipe.expire(f"{base}:m:{minute}", 120)
            pipe.hgetall(f"{base}:m:{minute}")
            pipe.hset(f"{base}:d:{day}", node, cpu)
            pipe.expire(f"{base}:d:{day}", 2 * 86400)
            pipe.hgetall(f"{base}:d:{day}")
            pipe.hset(f"{base}:c", node, f"{conc}:{int(now * 1000)}")
            pipe.expire(f"{base}:c", 60)
            pipe.hgetall(f"{base}:c")
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
        with self._lock:
            self._lockf(fcntl.LOCK_EX, _LOCK_TABLE)
            try:
                for i, (off, *_rest) in enumerate(local):
                    minutes, days, concs = replies[9 * i + 2 : 9 * i + 9 : 3]
                    r_mc = sum(int(v) for k, v in minutes.items() if k != me)
                    r_cpu = sum(int(v) for k, v in days.items() if k != me)
                    r_conc = 0
                    for k, v in concs.items():
                        count, _, at = v.partition(b":")
                        if k != me and int(at) >= fresh_ms:
                            r_conc += int(count)
                    at = off + _KEY + 32  # r_minute .. r_at_ms
                    struct.pack_into("<6q", self._map, at, minute, r_mc, day, r_cpu, r_conc,
                                     int(now * 1000))
            finally:
                self._lockf(fcntl.LOCK_UN, _LOCK_TABLE)
        return True

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


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
