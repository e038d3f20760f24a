"""The guest programs, written once for every engine: edge-v1 and WAGI.

An engine's instance class supplies a few narrow hooks (make the instance, call
`alloc`, copy the request in, call `handle`, copy the response out, call
`dealloc`, run `_start`); the rules of each ABI (docs/edge.md) and the rules of
every instance's life (a failure that may have left the guest broken closes it,
a Python exception raised in a host call is re-raised as itself, a host call past
the deadline is a timeout) live here, so the engines cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgefn.sandbox import wasi_http
from edgefn.sandbox.abi import check_handle_result
from edgefn.sandbox.engine import GuestRequest, Host, Limits
from edgefn.sandbox.errors import GuestTimeout, GuestTrap, InvocationError
from edgefn.sandbox.hostcalls import Adapter, Args, GuestMemory, Steps
from edgefn.sandbox.hostcodes import FAILED
from edgefn.sandbox.stdio import GuestOutput, LineLog, wagi_output, wagi_response


class ProcExit(Exception):
    """The guest called WASI `proc_exit`; an engine raises it from its call hook."""

    def __init__(self, code: int) -> None:
        self.code = code

    def as_trap(self, when: str = "") -> GuestTrap:
        """An edge-v1 guest must not exit: its instance is gone (500)."""
        return GuestTrap(f"guest called proc_exit({self.code}){when}")


class HostCallFailed(Exception):
    """A host call must end the guest's call with a trap; the message says why.

    What the engine reports after the trap comes from the instance: `timed_out`
    (504) or `host_exception` (re-raised as itself) when the helper set them.
    """


class _HostCallTimeout(Exception):
    pass


class InstanceBase:
    """The state every instance of every engine keeps, and how a failed call is told."""

    limits: Limits
    host: Host | None
    timed_out: bool
    host_exception: BaseException | None
    output: GuestOutput
    closed: bool
    # Set when a waiting host call's answer could not be written (`WaitingCall.finish`).
    late_trap: str | None = None

    def _init_state(self, limits: Limits) -> None:
        self.limits = limits
        self.host = None
        self.timed_out = False
        self.host_exception = None
        self.output = GuestOutput(limits.max_output_bytes)
        self.closed = False

    def capture(self, stream: int, data: bytes) -> None:
        """What the guest wrote to stdout or stderr (the WASI output of either ABI)."""
        self.output.add(data)

    def _timeout(self) -> GuestTimeout:
        self.timed_out = True
        ms = self.limits.max_execution_ms
        return GuestTimeout(f"invocation exceeded max_execution_ms={ms}")

    def _raise_host_exception(self) -> None:
        """After a trap: a host call's own exception goes on as itself, not as a trap."""
        exc, self.host_exception = self.host_exception, None
        if exc is not None:
            raise exc

    def _start_instance(self) -> None:
        """Make the instance (the engine's `_create`); on any failure close what was made."""
        try:
            self._create()
            self._end_deadline()
        except ProcExit as exc:
            self.close()
            raise exc.as_trap(" while starting") from None
        except BaseException:
            self.close()
            raise

    def _arm_deadline(self) -> None:
        """Start the clock of `max_execution_ms` for the calls that follow."""
        raise NotImplementedError

    def _end_deadline(self) -> None:
        """Engine hook: the calls `_arm_deadline` started are over (an engine whose
        timer would otherwise wake for them stops it)."""

    def _create(self) -> None:
        """Instantiate, bind the exports, run `_initialize` when there is one; engine
        errors are translated into `InvocationError`s on the way."""
        raise NotImplementedError

    def _export(self, name: str) -> Any:
        """Engine hook: the exported function `name`, or None."""
        raise NotImplementedError

    def _call_export(self, func: Any) -> None:
        """Engine hook: call a function of no arguments and no results, under the deadline."""
        raise NotImplementedError

    if TYPE_CHECKING:
        # Provided by the engine's instance class.
        def close(self) -> None: ...


def guarded_host_call(
    inst: InstanceBase | None, name: str, adapter: Adapter, mem: GuestMemory, args: Args
) -> int | None:
    """One `edge` host call from a guest, under the invocation's deadline.

    Returns the adapter's result, or raises `HostCallFailed` for the engine to turn
    into a trap, having recorded on `inst` a timeout or the exception to re-raise.
    """
    host = inst.host if inst is not None else None
    if inst is None or host is None:
        raise HostCallFailed(f"edge.{name} called outside an invocation")
    try:
        if host.remaining_seconds() <= 0:
            raise _HostCallTimeout
        result = adapter(mem, host, args)
        if host.remaining_seconds() <= 0:
            raise _HostCallTimeout
    except _HostCallTimeout:
        inst.timed_out = True
        raise HostCallFailed("deadline exceeded in a host call") from None
    except IndexError as exc:
        raise HostCallFailed(f"edge.{name}: {exc}") from None
    except BaseException as exc:  # carried through the trap, re-raised as itself
        inst.host_exception = exc
        raise HostCallFailed(f"edge.{name} raised {type(exc).__name__}") from None
    return result


class WaitingCall:
    """A host call that waits, begun while its guest is suspended in it (`Module.suspends`).

    The engine makes it from inside the guest's host call (the inputs are read there,
    the guest's memory being in reach), then, with the guest suspended, the caller of
    the engine's call runs `run` (which may block its thread or, in a green
    task, let the event loop run), then resumes the guest, which takes the answer
    through `finish`. The rules are `guarded_host_call`'s: past the deadline, before
    or after the work, the call is a timeout; an exception of the host's ends the
    call as itself. Both are raised by `run`, and the engine then abandons the
    suspended guest (its instance is closed), so no trap is needed to stop it.
    """

    __slots__ = ("args", "done", "inputs", "inst", "name", "value", "waiting")

    def __init__(self, inst: InstanceBase, name: str, waiting: Steps, mem: GuestMemory,
                 args: Args) -> None:
        if inst.host is None:
            raise HostCallFailed(f"edge.{name} called outside an invocation")
        self.inst = inst
        self.name = name
        self.waiting = waiting
        self.args = args
        self.done = False
        self.value: bytes | int = FAILED
        try:
            self.inputs = waiting.inputs(mem, args)
        except IndexError as exc:
            raise HostCallFailed(f"edge.{name}: {exc}") from None

    def run(self) -> None:
        inst, host = self.inst, self.inst.host
        assert host is not None
        if host.remaining_seconds() > 0:
            self.value = getattr(host, self.waiting.method)(*self.inputs)
        if host.remaining_seconds() <= 0:
            raise inst._timeout()
        self.done = True

    def finish(self, mem: GuestMemory) -> int:
        """The call's result for the guest, its answer written; an answer that does not fit
        the guest's buffer fails the invocation (`late_trap`), as a trap would."""
        try:
            return self.waiting.output(mem, self.args, self.value)
        except IndexError as exc:
            self.inst.late_trap = f"edge.{self.name}: {exc}"
            return FAILED


class EdgeProgram(InstanceBase):
    """An `edge-v1` instance: reused across requests until a call leaves it broken.

    One request: `alloc` one buffer for the four inputs and the response, copy the
    inputs in, `handle`, copy the response out, `dealloc` the buffer. The buffer is
    handed back whenever the instance is kept, including after a negative return or
    an oversized response; a failure that may have broken the guest (a trap, a
    timeout, an unusable pointer from `alloc`, an engine error) closes the instance
    instead, so it is never used again. The hooks are the engine's hot path: keep
    them to the raw calls.
    """

    _alloc: Any
    _handle: Any
    _dealloc: Any

    def _create(self) -> None:
        self._instantiate_guest()
        self._alloc = self._export("alloc")
        self._handle = self._export("handle")
        self._dealloc = self._export("dealloc")
        init = self._export("_initialize")
        if init is not None:  # a WASI reactor's constructors
            self._arm_deadline()
            self._call_export(init)

    def invoke(self, request: GuestRequest, host: Host) -> bytes:
        if self.closed:
            raise GuestTrap("instance is closed")
        cap = self.limits.max_response_bytes
        parts = (request.method, request.path, request.headers, request.body)
        total = len(parts[0]) + len(parts[1]) + len(parts[2]) + len(parts[3]) + cap
        self.host = host
        self.output.reset()
        try:
            return self._exchange(parts, total, cap)
        except ProcExit as exc:
            self.close()
            raise exc.as_trap() from None
        except BaseException as exc:
            # Only an error that says the guest is intact keeps the instance.
            if not isinstance(exc, InvocationError) or exc.discard:
                self.close()
            raise
        finally:
            self.host = None
            self.output.hand_to(host)

    def _exchange(self, parts: tuple[bytes, ...], total: int, cap: int) -> bytes:
        """The call's steps through the hooks below, under the call's deadline (an engine
        may make them at once): the buffer is handed back also after an error that
        keeps the instance."""
        self._arm_deadline()
        try:
            ptr, offset = self._enter(parts, total, cap)
            try:
                written = self._call_handle()
            except InvocationError as exc:
                self._hand_back(exc, ptr, total)
                raise
            return self._answer(ptr, total, offset, written, cap)
        finally:
            self._end_deadline()

    def _answer(self, ptr: int, total: int, offset: int, written: int, cap: int) -> bytes:
        """After `handle` returned `written`: the response copied out, the buffer handed
        back (also after an error that keeps the instance). An engine may make these
        steps at once."""
        try:
            check_handle_result(written, cap)
            response = self._copy_out(offset, written)
        except InvocationError as exc:
            self._hand_back(exc, ptr, total)
            raise
        self._deallocate(ptr, total)
        return response

    def _hand_back(self, exc: InvocationError, ptr: int, total: int) -> None:
        """After `exc` in `handle` or in reading its response: the buffer back to the
        guest when the instance is kept."""
        if not exc.discard:
            self._deallocate(ptr, total)

    # -- engine hooks ------------------------------------------------------------
    def _instantiate_guest(self) -> None:
        """Make the store (or contexts) and instantiate the module in it."""
        raise NotImplementedError

    def _enter(self, parts: tuple[bytes, ...], total: int, cap: int) -> tuple[int, int]:
        """`alloc` the buffer and copy the inputs in; return the buffer and where the
        response goes. An engine may start `handle` here too, `_call_handle` then going
        on from where it stopped."""
        ptr = self._allocate(total)
        return ptr, self._copy_in(ptr, total, parts, cap)

    def _allocate(self, size: int) -> int:
        """Call `alloc(size)`; return the pointer, checked later by `_copy_in`."""
        raise NotImplementedError

    def _copy_in(self, ptr: int, total: int, parts: tuple[bytes, ...], cap: int) -> int:
        """Write the inputs back to back at `ptr` and stage `handle`'s ten arguments.

        Raise `unusable_alloc` when `ptr..ptr+total` is not in memory; return where
        the response buffer starts."""
        raise NotImplementedError

    def _call_handle(self) -> int:
        """Call `handle` with the staged arguments; return what it returned."""
        raise NotImplementedError

    def _copy_out(self, offset: int, written: int) -> bytes:
        """The response bytes; `GuestTrap` when they are not in memory."""
        raise NotImplementedError

    def _deallocate(self, ptr: int, total: int) -> None:
        """Call `dealloc(ptr, total)` when the module exports it."""
        raise NotImplementedError


class WagiProgram(InstanceBase):
    """A WAGI instance: one `_start` per instance, its stdout is the response, its
    stderr the log. The engine supplies `_run_start` (instantiate with the request's
    CGI environment and stdin, run `_start`, return the exit status) and `close`."""

    def _init_wagi(self) -> None:
        self._used = False
        self.stdout = wagi_output(self.limits)
        self.stderr = LineLog(self.limits.max_output_bytes)

    @property
    def memory_bytes(self) -> int:
        return 0

    def capture(self, stream: int, data: bytes) -> None:
        if stream == 1:
            self.stdout.add(data)
        else:
            self.stderr.add(data)

    def invoke(self, request: GuestRequest, host: Host) -> bytes:
        if self._used:
            raise GuestTrap("a WAGI instance runs one request")
        self._used = True
        self.host = self.stderr.host = host
        try:
            with wasi_http.session(host, self.limits.max_http_responses):
                code = self._run_start(request)
        except ProcExit as exc:
            code = exc.code
        finally:
            self.stderr.flush()
            self.host = self.stderr.host = None
            self.close()
        return wagi_response(code, self.stdout, self.limits)

    def _run_start(self, request: GuestRequest) -> int:
        raise NotImplementedError


__all__ = [
    "EdgeProgram",
    "HostCallFailed",
    "InstanceBase",
    "ProcExit",
    "WagiProgram",
    "WaitingCall",
    "guarded_host_call",
]
