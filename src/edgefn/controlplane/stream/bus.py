"""Wake-ups between control-plane replicas: a commit on one wakes the node streams
held by the others at once, instead of at their next recheck
(`CPSettings.stream_recheck_s`).

A `Bus` has two hooks on the committing side, one of which an implementation uses,
and a listener:
- `committing(session, node_ids)`, in the transaction that added instructions,
  once, just before it commits: PostgreSQL's `pg_notify` goes out here, and
  PostgreSQL delivers it at commit and drops it at rollback, so a signal never
  runs ahead of what it announces and costs no extra connection;
- `committed(node_ids)`, after the commit: Redis pub/sub publishes here;
- `listen(wake)` runs for the life of the replica and calls `wake(node_ids)` for
  each wake-up from another replica (`None`: every stream here, after connecting
  or reconnecting, when some may have been missed).

A message is `<replica id> <node id>,<node id>,...` (`*` for every node when the
list would not fit PostgreSQL's 8000-byte payload); a replica skips its own, since
its streams were woken in-process. As with the in-process signal (`Notifier`), a
lost or spurious wake-up costs a delay or a query, never an instruction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

log = logging.getLogger("edgefn.controlplane.stream")

Wake = Callable[[frozenset[str] | None], None]
EVERY_NODE = "*"
# PostgreSQL refuses payloads of 8000 bytes and more.
MAX_PAYLOAD = 7900
RETRY_S = 1.0
# One channel per schema: clusters sharing a database (tests do) wake only their own.
_PG_CHANNEL = "left('edgefn_outbox_' || current_schema(), 63)"


def encode(replica: str, node_ids: Iterable[str]) -> str:
    message = f"{replica} {','.join(sorted(node_ids))}"
    return message if len(message.encode()) <= MAX_PAYLOAD else f"{replica} {EVERY_NODE}"


def decode(payload: str, me: str) -> tuple[bool, frozenset[str] | None]:
    """(whether the message is another replica's, the node ids it names or None for all)."""
    sender, _, ids = payload.partition(" ")
    if sender == me:
        return False, None
    if ids == EVERY_NODE:
        return True, None
    return True, frozenset(i for i in ids.split(",") if i)


class Bus(Protocol):
    def committing(self, session: Session, node_ids: frozenset[str]) -> None: ...

    def committed(self, node_ids: frozenset[str]) -> None: ...

    async def listen(self, wake: Wake) -> None: ...


class LocalBus:
    """One replica (SQLite): nobody else to wake."""

    def committing(self, session: Session, node_ids: frozenset[str]) -> None:
        pass

    def committed(self, node_ids: frozenset[str]) -> None:
        pass

    async def listen(self, wake: Wake) -> None:
        await asyncio.Event().wait()


async def _forever(name: str, attempt: Callable[[], Awaitable[None]]) -> None:
    """Run `attempt()` (a coroutine that listens until its connection fails) again
    and again, a second apart."""
    while True:
        try:
            await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s listener down (%s); retrying", name, exc)
        await asyncio.sleep(RETRY_S)


class PostgresBus:
    """LISTEN/NOTIFY on the control plane's own database."""

    def __init__(self, url: URL, replica: str) -> None:
        # libpq takes the URL without SQLAlchemy's driver suffix.
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.replica = replica

    def committing(self, session: Session, node_ids: frozenset[str]) -> None:
        session.connection().execute(
            text(f"SELECT pg_notify({_PG_CHANNEL}, :payload)"),
            {"payload": encode(self.replica, node_ids)},
        )

    def committed(self, node_ids: frozenset[str]) -> None:
        pass

    async def listen(self, wake: Wake) -> None:
        await _forever("PostgreSQL LISTEN", lambda: self._listen_once(wake))

    async def _listen_once(self, wake: Wake) -> None:
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True
        ) as conn:
            cur = await conn.execute(f"SELECT {_PG_CHANNEL}")
            row = await cur.fetchone()
            assert row is not None
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(row[0])))
            log.info("replica %s listening on %s", self.replica, row[0])
            wake(None)  # whatever was committed while nobody listened
            async for note in conn.notifies():
                theirs, ids = decode(note.payload, self.replica)
                if theirs:
                    wake(ids)


class RedisBus:
    """Redis pub/sub, for deployments that prefer not to hold a listening
    connection to the database per replica."""

    CHANNEL = "edgefn.outbox"

    def __init__(self, url: str, replica: str) -> None:
        import redis

        self._url = url
        self.replica = replica
        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        # Published off the committing thread, in order: a slow or absent Redis
        # delays other replicas' wake-ups, never a commit.
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="edgefn-wake")

    def committing(self, session: Session, node_ids: frozenset[str]) -> None:
        pass

    def committed(self, node_ids: frozenset[str]) -> None:
        self._publisher.submit(self._publish, encode(self.replica, node_ids))

    def _publish(self, message: str) -> None:
        import redis

        try:
            self._client.publish(self.CHANNEL, message)
        except redis.RedisError as exc:  # the other replicas' recheck covers it
            log.warning("wake-up not published to Redis: %s", exc)

    async def listen(self, wake: Wake) -> None:
        def handle(data: bytes) -> None:
            theirs, ids = decode(data.decode(), self.replica)
            if theirs:
                wake(ids)

        await subscribe_redis(self._url, self.CHANNEL, handle, subscribed=lambda: wake(None))


async def subscribe_redis(url: str, channel: str, handle: Callable[[bytes], None], *,
                          subscribed: Callable[[], None] = lambda: None) -> None:
    """`handle(data)` for each message on a Redis channel, until cancelled; after each
    (re)subscription, `subscribed()` (what came meanwhile was missed)."""
    await _forever(f"Redis subscribe {channel}",
                   lambda: _subscribe_once(url, channel, handle, subscribed))


async def _subscribe_once(url: str, channel: str, handle: Callable[[bytes], None],
                          subscribed: Callable[[], None]) -> None:
    from redis import asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        async with client.pubsub() as pubsub:
            await pubsub.subscribe(channel)
            subscribed()
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    handle(message["data"])
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


def open_bus(url: URL, replica: str, *, redis_url: str | None) -> Bus:
    if redis_url:
        return RedisBus(redis_url, replica)
    if url.get_backend_name() == "postgresql":
        return PostgresBus(url, replica)
    return LocalBus()
