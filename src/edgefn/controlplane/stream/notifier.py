"""Wakes the control streams of nodes that have new instructions. Commits happen
on worker threads; the streams wait on the event loop, so signals cross with
`call_soon_threadsafe`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator


class Notifier:
    """Per node id, the events of the streams open to it in this process.

    A signal only says "look at the outbox": streams read what to send from the
    database, so a lost or spurious signal costs a delay or a query, never an
    instruction.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the streams run on; signals before this are dropped (no stream
        can be waiting yet)."""
        self._loop = loop
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def notify(self, node_ids: Iterable[str]) -> None:
        """Safe from any thread, including the loop's own."""
        loop, ids = self._loop, frozenset(node_ids)
        if loop is None or not ids:
            return
        # The loop is gone at shutdown; nobody is left to wake.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake, ids)

    def _wake(self, node_ids: frozenset[str]) -> None:
        for node_id in node_ids:
            for event in self._waiters.get(node_id, ()):
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
