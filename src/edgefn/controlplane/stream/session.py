"""A node's control session, whichever transport carries it: the node is
authenticated (token, and its client certificate under node mTLS), its pending
outbox instructions are pushed as commits wake it (and on every re-check), and what
it sends (hello, heartbeats, acks, metrics) is applied. The gRPC service (`server`)
and the WebSocket endpoint (`websocket`) only convert frames and errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from edgefn.contract import Instruction
from edgefn.controlplane import db
from edgefn.controlplane.artifacts.base import ArtifactStore
from edgefn.controlplane.auth.principal import Principal
from edgefn.controlplane.auth.service import authenticate
from edgefn.controlplane.deployments import service as deployments
from edgefn.controlplane.deployments.schemas import AckIn
from edgefn.controlplane.deps import CPContext
from edgefn.controlplane.errors import BadRequest, Forbidden, Unauthorized
from edgefn.controlplane.logs.hub import LogLine
from edgefn.controlplane.nodes import service as nodes
from edgefn.controlplane.nodes.models import Node
from edgefn.controlplane.pki import service as pki
from edgefn.controlplane.stream.events import (
    Ack,
    Beat,
    HeartbeatAnswer,
    Hello,
    Logs,
    NodeEvent,
    Outgoing,
)

log = logging.getLogger("edgefn.controlplane.stream")
T = TypeVar("T")
# How often a stream may read again which functions its node was sent, when a log
# line names one it does not know (a deploy since, or a node naming another's).
LOG_OWNERS_REFRESH_S = 1.0
PeerCheck = Callable[[Session], None]


# ---- database work and authentication ----------------------------------------------


async def run_db(ctx: CPContext, work: Callable[[Session], T]) -> T:
    """Run `work` with its own session on a worker thread (the services are sync)."""

    def run() -> T:
        with db.session_scope(ctx.sessions) as session:
            return work(session)

    return await asyncio.to_thread(run)


async def authorize(
    ctx: CPContext, authorization: str, node_id: str | None, peer_cert: str | bytes | None
) -> tuple[Principal, PeerCheck]:
    """The node an `Authorization: Bearer` value names, when it is `node_id`'s token
    and, under node mTLS, `peer_cert` is the node's certificate; with the check
    a session repeats on every pass (revoked, expired or deleted since)."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token in the authorization header")
    if not node_id:
        raise BadRequest("missing node id")
    who = await run_db(ctx, lambda s: authenticate(s, ctx.creds, token.strip(), request_id=None))
    if who.kind != "node":
        raise Forbidden("the control stream takes node tokens only")
    if who.id != node_id:
        raise Forbidden(f"the token is not node {node_id}'s")
    check: PeerCheck
    if ctx.settings.node_mtls:
        serial = pki.peer_serial(node_id, peer_cert)
        check = lambda s: pki.check_serial(s, node_id, serial)  # noqa: E731
    else:
        check = lambda s: _node_exists(s, node_id)  # noqa: E731
    await run_db(ctx, check)
    return who, check


class PendingReads:
    """Reads the pending instructions of every stream that asks in one turn of the event
    loop with one session on one worker thread. A commit for N nodes wakes their N
    streams at once: a thread hop and a session each would queue them behind the
    loop's few worker threads (and take N connections), one read each."""

    def __init__(self, sessions: sessionmaker[Session], store: ArtifactStore,
                 url_ttl_s: int) -> None:
        self._sessions, self._store, self._url_ttl_s = sessions, store, url_ttl_s
        self._asked: list[tuple[str, PeerCheck, asyncio.Future[list[Instruction]]]] = []

    async def read(self, node_id: str, check: PeerCheck) -> list[Instruction]:
        """The node's pending instructions, after `check` (raising what it raises)."""
        future: asyncio.Future[list[Instruction]] = asyncio.get_running_loop().create_future()
        self._asked.append((node_id, check, future))
        if len(self._asked) == 1:
            # After the streams woken with this one have asked too.
            asyncio.get_running_loop().call_soon(
                lambda: _keep(asyncio.ensure_future(self._flush())))
        return await future

    async def _flush(self) -> None:
        asked, self._asked = self._asked, []

        def work() -> list[list[Instruction] | Exception]:
            out: list[list[Instruction] | Exception] = []
            with db.session_scope(self._sessions) as session:
                for node_id, check, _ in asked:
                    try:
                        # On every pass, so a stream ends once its node is deleted or
                        # its certificate revoked.
                        check(session)
                        out.append(deployments.pending_instructions(
                            session, node_id, store=self._store, url_ttl_s=self._url_ttl_s))
                    except Exception as exc:  # this node's, delivered to its stream alone
                        session.rollback()
                        out.append(exc)
            return out

        try:
            results = await asyncio.to_thread(work)
        except Exception as exc:
            results = [exc] * len(asked)
        for (_, _, future), result in zip(asked, results, strict=True):
            if future.done():
                continue  # its stream went away meanwhile
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


# One per running control plane (its notifier), made by the first stream.
_reads: weakref.WeakKeyDictionary[object, PendingReads] = weakref.WeakKeyDictionary()
_flushing: set[asyncio.Future[None]] = set()


def _keep(task: asyncio.Future[None]) -> None:
    """Hold a reference to a running flush until it ends (the loop keeps weak ones)."""
    _flushing.add(task)
    task.add_done_callback(_flushing.discard)


def pending_reads(ctx: CPContext) -> PendingReads:
    reads = _reads.get(ctx.notifier)
    if reads is None:
        reads = _reads[ctx.notifier] = PendingReads(
            ctx.sessions, ctx.store, ctx.settings.download_url_ttl_s)
    return reads


def _node_exists(session: Session, node_id: str) -> None:
    if session.get(Node, node_id) is None:
        raise Unauthorized(f"node {node_id} was deleted")


# ---- the session --------------------------------------------------------------------


class NodeSession:
    """One open stream of an authenticated node."""

    def __init__(self, ctx: CPContext, who: Principal, peer_check: PeerCheck) -> None:
        self._ctx = ctx
        self._who = who
        self._peer_check = peer_check
        # The functions this node was sent (function id -> project id), read again when
        # a log line names another, at most every LOG_OWNERS_REFRESH_S.
        self._log_owners: dict[str, str] = {}
        self._log_owners_read = -math.inf

    async def serve(self, events: AsyncIterator[NodeEvent]) -> AsyncIterator[Outgoing]:
        """What to send the node while `events` (what it sends) lasts and the CP runs.
        Raises a CPError to end the stream with (bad message, node deleted or revoked)."""
        notifier, who = self._ctx.notifier, self._who
        first = await anext(events, None)
        if first is None:
            return
        if not isinstance(first, Hello):
            raise BadRequest("the first message of a stream must be a Hello")
        await self._handle(first)
        log.info("node %s connected its control stream", who.id)
        with notifier.subscribe(who.id) as wake:
            replies: asyncio.Queue[HeartbeatAnswer] = asyncio.Queue()
            reader = asyncio.create_task(self._read(events, replies, wake))
            try:
                sent: set[int] = set()
                while not notifier.closed:
                    # Cleared before looking, so a commit during the look wakes us again.
                    wake.clear()
                    while not replies.empty():
                        yield replies.get_nowait()
                    if reader.done():
                        reader.result()  # re-raises what ended the reader
                        break
                    pending = await pending_reads(self._ctx).read(who.id, self._peer_check)
                    for instruction in pending:
                        if instruction.id not in sent:
                            yield instruction
                    # Sent once per stream; a reconnect sends every pending one again.
                    sent = {i.id for i in pending}
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), self._ctx.settings.stream_recheck_s)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader
        log.info("node %s control stream ended", who.id)

    async def _read(
        self,
        events: AsyncIterator[NodeEvent],
        replies: asyncio.Queue[HeartbeatAnswer],
        wake: asyncio.Event,
    ) -> None:
        try:
            async for event in events:
                reply = await self._handle(event)
                if reply is not None:
                    replies.put_nowait(reply)
                    wake.set()
        finally:
            wake.set()  # the writer notices the reader ended

    async def _handle(self, event: NodeEvent) -> HeartbeatAnswer | None:
        """Apply one message from the node; return what to answer, if anything."""
        who, ctx = self._who, self._ctx
        if event.node_id and event.node_id != who.id:
            raise BadRequest(f"message for node {event.node_id!r} on {who.id!r}'s stream")
        if isinstance(event, Hello | Beat):
            beat = event.beat
            await run_db(ctx, lambda s: nodes.record_heartbeat(s, who, who.id, beat))
            if isinstance(event, Beat):
                return HeartbeatAnswer(ctx.settings.heartbeat_interval_s)
        elif isinstance(event, Ack):
            await run_db(ctx, _acker(who.id, event.ack))
        elif isinstance(event, Logs):
            ctx.logs.publish(await self._own_lines(event.lines), dropped=event.dropped)
            if event.dropped:
                log.warning("node %s dropped %d log lines (its queue was full)", who.id,
                            event.dropped)
        else:
            report = event.beat
            await run_db(ctx, lambda s: nodes.record_metrics(
                s, who, who.id, cpu=report.cpu, mem_bytes=report.mem_bytes,
                functions=report.functions))
        return None


    async def _own_lines(self, lines: list[LogLine]) -> list[LogLine]:
        """The lines of functions this node was sent, under their own project: a node
        cannot write into the log of a function it does not run."""
        owners = self._log_owners
        if any(t.function_id not in owners for t in lines) and (
            time.monotonic() - self._log_owners_read >= LOG_OWNERS_REFRESH_S
        ):
            node_id = self._who.id
            self._log_owners_read = time.monotonic()
            owners = self._log_owners = await run_db(
                self._ctx, lambda s: deployments.functions_sent_to(s, node_id))
        own = [LogLine(t.function_id, owners[t.function_id], t.line)
               for t in lines if t.function_id in owners]
        if len(own) < len(lines):
            log.warning("node %s forwarded %d log lines of functions it was never sent; "
                        "dropped", self._who.id, len(lines) - len(own))
        return own


def _acker(node_id: str, ack: AckIn) -> Callable[[Session], None]:
    def work(session: Session) -> None:
        try:
            deployments.ack_instruction(session, node_id, ack)
            session.commit()
        except StaleDataError:
            # The instruction went while its ack was applied: its node or deployment
            # was deleted. Nothing is left to record; the stream goes on (and ends as
            # a deleted node's does).
            session.rollback()
            log.info("node %s acked instruction %d, deleted meanwhile", node_id, ack.id)

    return work
