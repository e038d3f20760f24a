"""The control plane's periodic duties, run by the one replica holding the
`maintenance` lease.

Every replica ticks every third of the lease's TTL: in one transaction it takes or
renews the lease and, if it holds it, runs each duty that is due, then commits.
A duty runs in that transaction (in a savepoint of its own: one that fails is
logged and rolled back alone) and must not commit, so what it changes commits
only with the renewal (`service.hold`). A replica that takes the lease over runs
every duty at once. If the holder dies, another takes over within one TTL plus
one tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from edgefn.controlplane import db
from edgefn.controlplane.leases import service

log = logging.getLogger("edgefn.controlplane.leases")
LEASE = "maintenance"


@dataclass(frozen=True)
class Duty:
    name: str
    every_s: float
    # Runs in the lease's transaction; flushes, never commits.
    run: Callable[[Session], object]


class Duties:
    """The duties of one replica and whether it holds their lease (`holding`)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        duties: Sequence[Duty],
        *,
        holder: str,
        ttl_s: float,
        lease: str = LEASE,
    ) -> None:
        self._sessions = sessions
        self._duties = list(duties)
        self.holder = holder
        self.ttl_s = ttl_s
        self.lease = lease
        self.holding = False
        self._last_run: dict[str, float] = {}

    @property
    def tick_s(self) -> float:
        return self.ttl_s / 3

    def tick(self) -> bool:
        """One round (blocking: run it on a worker thread); True when this replica
        holds the lease after it."""
        with db.session_scope(self._sessions) as session:
            held = service.hold(session, self.lease, self.holder, self.ttl_s)
            if held and not self.holding:
                log.info("replica %s took the %s lease", self.holder, self.lease)
                self._last_run.clear()  # a new holder runs every duty at once
            elif self.holding and not held:
                log.warning("replica %s lost the %s lease", self.holder, self.lease)
            if held:
                self._run_due(session)
            session.commit()
        # Only once committed: whoever reads `holding` then finds the lease in the database.
        self.holding = held
        return held

    def _run_due(self, session: Session) -> None:
        now = time.monotonic()
        for duty in self._duties:
            last = self._last_run.get(duty.name)
            if last is not None and now - last < duty.every_s:
                continue
            self._last_run[duty.name] = now
            try:
                with session.begin_nested():
                    duty.run(session)
            except Exception:  # the others and the renewal still commit
                log.exception("duty %s failed", duty.name)

    async def run_forever(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except Exception:  # the database may be back at the next tick
                self.holding = False
                log.exception("renewing the %s lease failed", self.lease)
            await asyncio.sleep(self.tick_s)

    def release(self) -> None:
        """Give the lease up at a clean shutdown, so another replica needs no TTL."""
        if not self.holding:
            return
        with db.session_scope(self._sessions) as session:
            service.release(session, self.lease, self.holder)
            session.commit()
        self.holding = False
