"""Signed checkpoints of the audit chain, kept outside the database.

The keyed chain stops a database writer from forging rows, but not from deleting
the newest ones: what is left is still a valid chain. So the control plane appends
the head it committed, `{seq, hash, time, signature}` (HMAC under the audit key),
to a JSON-lines file after every N audit rows; `edgefn audit verify` then finds a
checkpoint the rows no longer reach. The first line a control plane writes also
names `legacy_upto`: the last row chained before the key existed, so that rows
after it can never be passed off as unkeyed ones.

The file is opened for appending only and each line goes out in one write(2), so
several processes may share it; a line is fsynced before the next request runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("edgefn.controlplane.audit")
_DOMAIN = b"edgefn-audit-checkpoint\n"
# Where a session finds the chain key, and the newest row it added.
SESSION_KEY = "edgefn.audit.key"
HEAD_KEY = "edgefn.audit.head"


def canonical(data: Any) -> str:
    """The one JSON spelling that hashes and signatures cover."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class CheckpointError(Exception):
    """A checkpoint file that cannot be trusted: a bad line or a bad signature."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    time: str
    legacy_upto: int | None = None
    signature: str = ""

    def _payload(self) -> bytes:
        fields = asdict(self)
        del fields["signature"]
        if self.legacy_upto is None:
            del fields["legacy_upto"]
        # The prefix keeps a checkpoint's MAC from ever equalling a chain link's.
        return _DOMAIN + canonical(fields).encode()

    def signed(self, key: bytes) -> Checkpoint:
        sig = hmac.new(key, self._payload(), hashlib.sha256).hexdigest()
        return Checkpoint(self.seq, self.hash, self.time, self.legacy_upto, sig)

    def valid(self, key: bytes) -> bool:
        return hmac.compare_digest(self.signed(key).signature, self.signature)

    def line(self) -> str:
        fields = asdict(self)
        if self.legacy_upto is None:
            del fields["legacy_upto"]
        return canonical(fields) + "\n"


def read(path: Path, key: bytes) -> list[Checkpoint]:
    """Every checkpoint in the file, each signature checked; CheckpointError at the
    first line that does not parse or verify."""
    found = []
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                data = json.loads(text)
                legacy = data.get("legacy_upto")
                point = Checkpoint(
                    seq=int(data["seq"]),
                    hash=str(data["hash"]),
                    time=str(data["time"]),
                    legacy_upto=None if legacy is None else int(legacy),
                    signature=str(data["signature"]),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{path} line {number} is not a checkpoint: {exc}") from exc
            if not point.valid(key):
                raise CheckpointError(f"{path} line {number}: the signature does not verify")
            found.append(point)
    return found


class Anchor:
    """The chain key and the checkpoint file of one control-plane process."""

    def __init__(self, key: bytes, path: Path, *, every: int) -> None:
        self.key = key
        self.path = path
        self.every = every
        self._lock = threading.Lock()
        self._last_seq = -1

    def append(self, seq: int, hash_: str, *, legacy_upto: int | None = None) -> None:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
        line = Checkpoint(seq, hash_, now, legacy_upto).signed(self.key).line().encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._last_seq = max(self._last_seq, seq)

    def start(self, head: tuple[int, str], legacy_upto: Callable[[], int]) -> None:
        """At start-up: begin the file (naming where unkeyed rows end), or catch it
        up with rows committed since the last checkpoint."""
        seq, hash_ = head
        if not self.path.exists():
            if seq:
                log.warning("no audit checkpoint file %s: starting it at row %d", self.path, seq)
            self.append(seq, hash_, legacy_upto=legacy_upto())
            return
        try:
            last = max((c.seq for c in read(self.path, self.key)), default=-1)
        except CheckpointError as exc:
            # Refusing to start would hand whoever can spoil the file a way to stop
            # the CP; `edgefn audit verify` reports it instead.
            log.error("the audit checkpoint file does not verify: %s", exc)
            last = -1
        self._last_seq = last
        if seq > last:
            self.append(seq, hash_)

    def committed(self, seq: int, hash_: str) -> None:
        if seq - self._last_seq < self.every:
            return
        try:
            self.append(seq, hash_)
        except OSError:
            # The rows are committed; failing the request now would not undo them.
            log.exception("writing the audit checkpoint for row %d to %s failed", seq, self.path)


def attach(factory: sessionmaker[Session], anchor: Anchor) -> None:
    """Give every session of `factory` the chain key, and checkpoint after each
    commit that added audit rows (never before they are visible)."""
    info = dict(factory.kw.get("info") or {})
    info[SESSION_KEY] = anchor.key
    factory.configure(info=info)

    @event.listens_for(factory, "after_commit")
    def _committed(session: Session) -> None:
        head = session.info.pop(HEAD_KEY, None)
        if head is not None:
            anchor.committed(*head)

    @event.listens_for(factory, "after_rollback")
    def _rolled_back(session: Session) -> None:
        session.info.pop(HEAD_KEY, None)
