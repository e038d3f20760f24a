"""`RedisKvStore`: key-value data in Redis, shared by every node that points at it.

A value lives at `edgefn:kv:{<namespace>}:<key>` (binary-safe, `SET ... EX` for
a TTL). Counting keys for the `max_keys` quota must not SCAN (O(keys in the
whole database) on every new key), and a plain counter drifts as keys expire
unseen; so each namespace keeps an index, a sorted set of its keys scored by
expiry time in ms (`+inf`: never). Expired members are trimmed from the front
(O(log n + expired)), after which ZCARD is O(1); the check, the write and the
index update run as one Lua script, so concurrent writers on any node cannot
overshoot the quota. The braces make the namespace a hash tag: a value and its
index sit in the same cluster slot, as a script's keys must.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import NoBackoff
from redis.connection import Connection
from redis.retry import Retry

from edgefn.edge import green
from edgefn.edge.kv.base import check_namespace, check_ttl
from edgefn.edge.kv.errors import KvQuotaExceeded, KvUnavailable

# KEYS: value key, index. ARGV: member (the raw key), value, ttl s (0: none), max keys (-1: none).
# Returns 1 when written, 0 when refused by the quota. Server time keeps all nodes on one clock.
_PUT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local max = tonumber(ARGV[4])
if max >= 0 and not redis.call('ZSCORE', KEYS[2], ARGV[1])
   and redis.call('ZCARD', KEYS[2]) >= max then
  return 0
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ttl)
  redis.call('ZADD', KEYS[2], now + ttl * 1000, ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], '+inf', ARGV[1])
end
-- The index outlives no member: it expires with its last key, or never.
if redis.call('ZCOUNT', KEYS[2], '+inf', '+inf') > 0 then
  redis.call('PERSIST', KEYS[2])
else
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[2], last[2])
end
return 1
"""

# KEYS: index. Read-only: members already expired are not counted, only trimmed by writes.
_COUNT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""


def value_key(namespace: str, key: bytes) -> bytes:
    return b"edgefn:kv:{" + namespace.encode() + b"}:" + key


def index_key(namespace: str) -> bytes:
    return b"edgefn:kvindex:{" + namespace.encode() + b"}"


class CooperativeConnection(Connection):
    """redis-py's TCP connection on a `green.CooperativeSocket`: a call made in a green
    task lets the worker's event loop run while Redis answers; on a thread it blocks
    as before."""

    def _connect(self) -> green.CooperativeSocket:
        err: OSError = OSError(f"{self.host} has no address")
        for family, kind, proto, _, address in socket.getaddrinfo(
                self.host, self.port, self.socket_type, socket.SOCK_STREAM):
            sock = green.CooperativeSocket(socket.socket(family, kind, proto))
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(self.socket_connect_timeout)
                sock.connect(address)
                sock.settimeout(self.socket_timeout)
                return sock
            except OSError as exc:
                err = exc
                sock.close()
        raise err


class RedisKvStore:
    """Thread-safe and fork-safe (redis-py pools connections per process).

    Each socket operation is bounded by `timeout_s` (and retried once at most);
    the default matches the default `max_execution_ms`, as the engine cannot
    interrupt a guest while it waits in a host call. Over plain TCP its sockets
    cooperate with green tasks (`cooperative`); over TLS (`rediss://`) they block,
    and a green task runs its calls on the worker's blocking pool.
    """

    def __init__(self, url: str, *, timeout_s: float = 0.5) -> None:
        self.url = url
        self.cooperative = url.startswith("redis://")
        extra = {"connection_class": CooperativeConnection} if self.cooperative else {}
        try:
            # One immediate retry covers a pooled connection the server closed while
            # idle; backoff would only hold a guest's invocation while Redis is down.
            self._client = redis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                retry=Retry(NoBackoff(), 1),
                **extra,
            )
            self._put = self._client.register_script(_PUT)
            self._count = self._client.register_script(_COUNT)
        except (redis.RedisError, ValueError) as exc:
            raise KvUnavailable(f"redis kv: {exc}") from exc

    def get(self, namespace: str, key: bytes) -> bytes | None:
        check_namespace(namespace)
        with self._translate():
            value = self._client.get(value_key(namespace, key))
        # decode_responses is off: redis-py hands back bytes, whatever its stubs say.
        return value if value is None or isinstance(value, bytes) else value.encode()

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
        with self._translate():
            written = self._put(
                keys=[value_key(namespace, key), index_key(namespace)],
                args=[key, value, ttl_seconds or 0, -1 if max_keys is None else max_keys],
            )
        if not written:
            raise KvQuotaExceeded(f"namespace {namespace!r} holds {max_keys} keys")

    def count(self, namespace: str) -> int:
        check_namespace(namespace)
        with self._translate():
            return int(self._count(keys=[index_key(namespace)]))

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except redis.RedisError as exc:
            raise KvUnavailable(f"redis kv: {exc}") from exc
