"""Wakes the control streams of nodes that have new instructions. Commits happen
on worker threads; the streams wait on the event loop, so signals cross with
`call_soon_threadsafe`. Commits on other replicas arrive through the `bus`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

from sqlalchemy.orm import Session

from edgefn.controlplane.stream.bus import Bus, LocalBus


class Notifier:
    """Per node id, the events of the streams open to it in this process.

    A signal only says "look at the outbox": streams read what to send from the
    database, so a lost or spurious signal costs a delay or a query, never an
    instruction.
    """

    def __init__(self, bus: Bus | None = None) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._closed = False
        self.bus: Bus = bus or LocalBus()
        # Wake-ups from other replicas, for tests and operators to see the path used.
        self.remote_wakeups = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the streams run on; signals before this are dropped (no stream
        can be waiting yet)."""
        self._loop = loop
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def committing(self, session: Session, node_ids: Iterable[str]) -> None:
        """In the transaction that queued instructions for `node_ids`, as it commits
        (`outbox.watch`)."""
        ids = frozenset(node_ids)
        if ids:
            self.bus.committing(session, ids)

    def notify(self, node_ids: Iterable[str]) -> None:
        """After the commit that queued them: this replica's streams, then the others'.
        Safe from any thread, including the loop's own."""
        ids = frozenset(node_ids)
        if ids:
            self._signal(ids)
            self.bus.committed(ids)

    def _signal(self, node_ids: frozenset[str] | None) -> None:
        loop = self._loop
        if loop is None:
            return
        # The loop is gone at shutdown; nobody is left to wake.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake, node_ids)

    def _remote(self, node_ids: frozenset[str] | None) -> None:
        self.remote_wakeups += 1
        self._signal(node_ids)

    async def listen(self) -> None:
        """Wake this replica's streams when another commits (runs until cancelled)."""
        await self.bus.listen(self._remote)

    def _wake(self, node_ids: frozenset[str] | None) -> None:
        """The streams of `node_ids`, or every stream for None."""
        if node_ids is None:
            groups: Iterable[set[asyncio.Event]] = list(self._waiters.values())
        else:
            groups = [self._waiters.get(node_id, set()) for node_id in node_ids]
        for waiters in groups:
            for event in waiters:
                event.set()

    @contextlib.contextmanager
    def subscribe(self, node_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever `node_id` may have new instructions (on the loop)."""
        event = asyncio.Event()
        self._waiters.setdefault(node_id, set()).add(event)
        if self._closed:
            event.set()
        try:
            yield event
        finally:
            waiters = self._waiters.get(node_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[node_id]

    def close(self) -> None:
        """Wake every stream so it sees `closed` and ends (on the loop, at shutdown)."""
        self._closed = True
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()
