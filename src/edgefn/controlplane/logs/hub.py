"""Functions' log lines as nodes send them on their control streams: the newest of
each function kept in memory, and handed to whoever follows it
(`GET /functions/{id}/logs?follow=true`).

Everything is bounded and nothing waits: a ring of `ring_lines` per function, at
most `max_functions` rings (the least recently written goes), and a queue per
follower that drops, with a count the follower is told, when it reads slower than
lines arrive. Lines are redacted as the control plane's own logs are
(`edgefn.redact`) before they are kept.

With several replicas, lines reach the replica holding the node's stream; with
Redis (`wake_redis_url`), each replica publishes what its nodes send and every
other replica takes it into its rings and followers, so a follower on any replica
sees every node. Without Redis (one replica, or replicas on PostgreSQL alone), a
replica has only its own nodes' lines (docs/api.md, Function logs).

All methods run on the control plane's event loop (streams, API, the listener).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from edgefn.controlplane.stream.bus import subscribe_redis
from edgefn.redact import redact

log = logging.getLogger("edgefn.controlplane.logs")

RING_LINES = 1000
MAX_FUNCTIONS = 10000
FOLLOWER_QUEUE = 2000
# Redis publications waiting for the publisher thread; more are dropped.
PUBLISH_BACKLOG = 100


class LogLine(NamedTuple):
    function_id: str
    project_id: str
    line: str


@dataclass(eq=False)
class Follower:
    """One reader of a function's lines; `missed` counts lines its queue dropped."""

    queue: asyncio.Queue[str] = field(
        default_factory=lambda: asyncio.Queue(maxsize=FOLLOWER_QUEUE))
    missed: int = 0

    def offer(self, line: str) -> None:
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            self.missed += 1


class LogHub:
    def __init__(self, *, ring_lines: int = RING_LINES, max_functions: int = MAX_FUNCTIONS,
                 fanout: RedisLogFanout | None = None) -> None:
        self.ring_lines = ring_lines
        self.max_functions = max_functions
        self.fanout = fanout
        self._rings: collections.OrderedDict[str, collections.deque[str]] = (
            collections.OrderedDict())
        self._followers: dict[str, set[Follower]] = {}
        # What nodes said they dropped before sending (their queues were full).
        self.dropped_by_nodes = 0

    def publish(self, lines: Iterable[LogLine], *, dropped: int = 0) -> None:
        """Lines from a node of this replica: kept, followed, and sent to the others."""
        self.dropped_by_nodes += dropped
        clean = [LogLine(t.function_id, t.project_id, redact(t.line)) for t in lines]
        self.deliver(clean)
        if self.fanout is not None and clean:
            self.fanout.publish(clean)

    def deliver(self, lines: Iterable[LogLine]) -> None:
        for t in lines:
            ring = self._rings.get(t.function_id)
            if ring is None:
                ring = self._rings[t.function_id] = collections.deque(maxlen=self.ring_lines)
                while len(self._rings) > self.max_functions:
                    self._rings.popitem(last=False)
            else:
                self._rings.move_to_end(t.function_id)
            ring.append(t.line)
            for follower in self._followers.get(t.function_id, ()):
                follower.offer(t.line)

    def recent(self, function_id: str, n: int) -> list[str]:
        ring = self._rings.get(function_id)
        if ring is None or n <= 0:
            return []
        return list(ring)[-n:]

    @contextlib.contextmanager
    def follow(self, function_id: str) -> Iterator[Follower]:
        follower = Follower()
        self._followers.setdefault(function_id, set()).add(follower)
        try:
            yield follower
        finally:
            group = self._followers.get(function_id)
            if group is not None:
                group.discard(follower)
                if not group:
                    del self._followers[function_id]

    async def listen(self) -> None:
        """Other replicas' lines, until cancelled (nothing to do without Redis)."""
        if self.fanout is None:
            await asyncio.Event().wait()
            return
        await self.fanout.listen(self.deliver)


class RedisLogFanout:
    """Lines between replicas over Redis pub/sub, published off the loop in order; a
    slow or absent Redis drops them (counted), never delays a node's stream."""

    CHANNEL = "edgefn.logs"

    def __init__(self, url: str, replica: str) -> None:
        import redis

        self._url = url
        self.replica = replica
        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="edgefn-logs")
        self._backlog = 0
        self.dropped = 0

    def publish(self, lines: list[LogLine]) -> None:
        if self._backlog >= PUBLISH_BACKLOG:
            self.dropped += len(lines)
            return
        self._backlog += 1
        message = json.dumps({"replica": self.replica, "lines": [list(t) for t in lines]})
        future = self._publisher.submit(self._publish, message)
        future.add_done_callback(lambda _: self._done())

    def _done(self) -> None:
        self._backlog -= 1  # an int's += from two threads may lose one; a count, not a lock

    def _publish(self, message: str) -> None:
        import redis

        try:
            self._client.publish(self.CHANNEL, message)
        except redis.RedisError as exc:
            log.warning("log lines not published to Redis: %s", exc)

    async def listen(self, deliver: Callable[[list[LogLine]], None]) -> None:
        def handle(data: bytes) -> None:
            lines = _decode(data, self.replica)
            if lines:
                deliver(lines)

        await subscribe_redis(self._url, self.CHANNEL, handle)


def _decode(data: bytes, me: str) -> list[LogLine]:
    """Another replica's lines; [] for this replica's own or a message not understood."""
    try:
        message = json.loads(data)
        if message["replica"] == me:
            return []
        return [LogLine(str(f), str(p), str(line)) for f, p, line in message["lines"]]
    except (ValueError, KeyError, TypeError):
        return []
