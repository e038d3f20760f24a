"""What a guest writes to stdout and stderr, bounded, and how a WAGI run ends.

Shared by the engines (through `program.py`): the byte limits and the WAGI
outcome rules (exit status, response cap) must be the same whichever engine runs
the guest.
"""

from __future__ import annotations

from edgefn.sandbox.engine import Host, Limits
from edgefn.sandbox.errors import GuestError, ResponseTooLarge


class GuestOutput:
    """Keeps the first `limit` bytes written; counts the rest."""

    __slots__ = ("data", "dropped", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(0, len(chunk) - max(room, 0))

    def reset(self) -> None:
        self.data.clear()
        self.dropped = 0

    def hand_to(self, host: Host, stream: int = 1) -> None:
        """Give what an edge-v1 guest wrote to the host's log."""
        if self.data or self.dropped:
            host.output(stream, bytes(self.data))


class LineLog:
    """A guest's stderr as log lines: one per text line, however the guest split its
    writes; a line longer than `limit` bytes is logged in pieces of `limit`, and what
    is left unterminated is logged by `flush`."""

    __slots__ = ("_pending", "host", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._pending = bytearray()
        self.host: Host | None = None

    def add(self, data: bytes) -> None:
        pending = self._pending
        pending += data
        start = 0
        while True:
            end = pending.find(b"\n", start)
            if end == -1:
                break
            self._emit(bytes(pending[start:end]).removesuffix(b"\r"))
            start = end + 1
        del pending[:start]
        while len(pending) >= self.limit:
            self._emit(bytes(pending[: self.limit]))
            del pending[: self.limit]

    def flush(self) -> None:
        if self._pending:
            self._emit(bytes(self._pending))
            self._pending.clear()

    def _emit(self, line: bytes) -> None:
        if self.host is not None:
            self.host.output(2, line)


def wagi_output(limits: Limits) -> GuestOutput:
    """A WAGI program's stdout: one byte past the cap, so an overflow is seen."""
    return GuestOutput(limits.max_response_bytes + 1)


def wagi_response(exit_code: int, stdout: GuestOutput, limits: Limits) -> bytes:
    """A WAGI run's result: its stdout, or the contract's error for it."""
    if exit_code != 0:
        raise GuestError(f"WAGI program exited with status {exit_code}")
    if len(stdout.data) > limits.max_response_bytes:
        raise ResponseTooLarge(
            f"WAGI response exceeds the cap of {limits.max_response_bytes} bytes"
        )
    return bytes(stdout.data)
