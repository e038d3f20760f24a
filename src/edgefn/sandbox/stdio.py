"""What a guest writes to stdout and stderr, bounded, and how a WAGI run ends.

Shared by the engines: the byte limits and the WAGI outcome rules (exit status,
response cap) must be the same whichever engine runs the guest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgefn.sandbox.engine import GuestRequest, Host, Limits
from edgefn.sandbox.errors import GuestError, GuestTrap, ResponseTooLarge


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


class WagiProgram:
    """The engine-independent half of a WAGI instance: one `_start` per instance, its
    stdout is the response, its stderr the log. An engine supplies `_run_start`
    (instantiate with the request's CGI environment and stdin, run `_start`, return
    the exit status) and `close`."""

    limits: Limits
    host: Host | None

    def _init_wagi(self) -> None:
        self._used = False
        self.stdout = wagi_output(self.limits)

    @property
    def memory_bytes(self) -> int:
        return 0

    def capture(self, stream: int, data: bytes) -> None:
        if stream == 1:
            self.stdout.add(data)
        elif self.host is not None:
            self.host.output(2, data)

    def invoke(self, request: GuestRequest, host: Host) -> bytes:
        if self._used:
            raise GuestTrap("a WAGI instance runs one request")
        self._used = True
        self.host = host
        try:
            code = self._run_start(request)
        finally:
            self.host = None
            self.close()
        return wagi_response(code, self.stdout, self.limits)

    def _run_start(self, request: GuestRequest) -> int:
        raise NotImplementedError

    if TYPE_CHECKING:
        # Provided by the engine's instance class, which comes after this one.
        def close(self) -> None: ...
