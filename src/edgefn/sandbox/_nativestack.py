"""Stacks for native guest code: a guard below the stack as large as the largest
frame the code can take, and an alternate signal stack, so that machine code
compiled from a guest that overflows its stack gets a trap instead of taking the
process down.

A native stack overflow is a SIGSEGV on the guard below the stack. The signal
handler that turns it into a trap must then run somewhere else than that stack:
on the thread's alternate signal stack (`sigaltstack`), which the kernel uses only
for handlers installed with `SA_ONSTACK`. This module prepares the calling thread's
stack when it can (`current_stack`), else runs the call on threads of its own
(`CallThreads`), and sets that flag on the handlers already installed; which
handlers those are is the engine's business (see `wasmedge_engine.py`). Linux
(glibc) only: `supported()`.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable
from ctypes import byref, c_int, c_size_t, c_ulong, c_void_p
from typing import Any, TypeVar

from edgefn.sandbox.errors import InvalidModule
from edgefn.sandbox.wasminfo import _Reader

T = TypeVar("T")

# Made inaccessible at the bottom of a stack, on top of the one page glibc leaves.
# Compiled wasm does not probe its stack: a function whose frame is larger than the
# guard could step over it into other memory. So a module runs natively only on a
# stack whose guard is at least its `frame_bound`.
# - The calling thread (a Python thread has 8 MiB) gets a guard of `GUARD_BYTES`;
#   a thread with less than `MIN_STACK_BYTES` is not used.
GUARD_BYTES = 1 << 20
MIN_STACK_BYTES = 4 << 20
# - Call threads have `STACK_BYTES` to use above a guard of `CALL_GUARD_BYTES`:
#   address space only, no memory is behind it.
STACK_BYTES = 8 << 20
CALL_GUARD_BYTES = 64 << 20
# What `ThreadStack.release` leaves of the stack: the thread's own frames.
_KEEP_BYTES = 2 << 20
# Where the fault handler runs; WasmEdge's handler needs a few hundred bytes.
ALT_STACK_BYTES = 64 << 10
# Stack a host function call must find left above the guard, or it is refused:
# Python code overflowing the stack inside a host call could not be unwound safely.
HOST_CALL_RESERVE = 256 << 10

FAULT_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE)
_SA_ONSTACK = 0x08000000
_SIG_DFL, _SIG_IGN = 0, 1
_PROT_NONE = 0
_PROT_READ_WRITE = 3
_SS_DISABLE = 2
_MADV_DONTNEED = 4
_PAGE = os.sysconf("SC_PAGE_SIZE")


class _StackT(ctypes.Structure):
    """`stack_t`."""

    _fields_ = [("ss_sp", c_void_p), ("ss_flags", c_int), ("ss_size", c_size_t)]


class SigAction(ctypes.Structure):
    """glibc's `struct sigaction` (x86-64 and aarch64 alike)."""

    _fields_ = [
        ("handler", c_void_p),
        ("mask", c_ulong * (128 // ctypes.sizeof(c_ulong))),
        ("flags", c_int),
        ("restorer", c_void_p),
    ]


_libc: Any = None


def supported() -> bool:
    """Whether native guest code can be contained here (Linux with glibc)."""
    global _libc
    if _libc is not None:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for name in ("sigaltstack", "sigaction", "mprotect", "madvise", "mincore", "pthread_self",
                     "pthread_getattr_np", "pthread_attr_getstack", "pthread_attr_destroy"):
            getattr(libc, name)  # resolves the symbol or raises
    except (OSError, AttributeError):
        return False
    libc.pthread_self.restype = c_ulong
    libc.pthread_getattr_np.argtypes = [c_ulong, c_void_p]
    libc.pthread_attr_getstack.argtypes = [c_void_p, ctypes.POINTER(c_void_p),
                                           ctypes.POINTER(c_size_t)]
    libc.pthread_attr_destroy.argtypes = [c_void_p]
    libc.mprotect.argtypes = [c_void_p, c_size_t, c_int]
    libc.madvise.argtypes = [c_void_p, c_size_t, c_int]
    libc.mincore.argtypes = [c_void_p, c_size_t, c_void_p]
    libc.sigaltstack.argtypes = [ctypes.POINTER(_StackT), ctypes.POINTER(_StackT)]
    libc.sigaction.argtypes = [c_int, ctypes.POINTER(SigAction), ctypes.POINTER(SigAction)]
    _libc = libc
    return True


def _fail(what: str) -> OSError:
    errno = ctypes.get_errno()
    return OSError(errno, f"{what}: {os.strerror(errno)}")


def _stack_bounds() -> tuple[int, int]:
    """The calling thread's stack: lowest address and size (glibc's guard excluded)."""
    attr = ctypes.create_string_buffer(128)  # pthread_attr_t is 56 or 64 bytes
    if _libc.pthread_getattr_np(_libc.pthread_self(), attr) != 0:
        raise _fail("pthread_getattr_np")
    try:
        addr, size = c_void_p(), c_size_t()
        if _libc.pthread_attr_getstack(attr, byref(addr), byref(size)) != 0:
            raise _fail("pthread_attr_getstack")
        return int(addr.value or 0), int(size.value)
    finally:
        _libc.pthread_attr_destroy(attr)


Handlers = list[tuple[int, SigAction]]


def fault_handlers_on_alt_stack() -> Handlers:
    """Add `SA_ONSTACK` to the handlers of the fault signals that have one.

    Returns what is installed now, for `reassert` to put back should anything
    replace it later. Handlers installed after this call are not changed.
    """
    assert _libc is not None
    installed = []
    for sig in FAULT_SIGNALS:
        action = SigAction()
        if _libc.sigaction(sig, None, byref(action)) != 0:
            raise _fail("sigaction")
        if (action.handler or 0) in (_SIG_DFL, _SIG_IGN):
            continue
        action.flags |= _SA_ONSTACK
        if _libc.sigaction(sig, byref(action), None) != 0:
            raise _fail("sigaction")
        installed.append((int(sig), action))
    return installed


def reassert(installed: Handlers) -> bool:
    """Put back the handlers `fault_handlers_on_alt_stack` left, if anything replaced
    them since; True when one had been replaced."""
    replaced = False
    current = SigAction()
    for sig, action in installed:
        _libc.sigaction(sig, None, byref(current))
        if current.handler != action.handler or not current.flags & _SA_ONSTACK:
            _libc.sigaction(sig, byref(action), None)
            replaced = True
    return replaced


class ThreadStack:
    """The calling thread's stack, made fit for native guest code: a guard of
    `GUARD_BYTES` at its bottom (the kernel's, on the main thread) and an alternate
    signal stack. Lives in a thread-local; when the thread ends, the guard is lifted
    again, since glibc hands the stacks of ended threads to new ones."""

    def __init__(self, guard_bytes: int = GUARD_BYTES) -> None:
        self.ident = threading.get_ident()
        self._guard = (0, 0)
        self._alt_stack: ctypes.Array[ctypes.c_char] | None = None
        low, size = _stack_bounds()
        if threading.get_native_id() == os.getpid():
            self._main_thread_guard(low, size)
        else:
            self._protect_guard(low, size, guard_bytes)
        current = _StackT()
        _libc.sigaltstack(None, byref(current))
        if current.ss_flags & _SS_DISABLE:  # keep one the thread has (faulthandler's)
            self._alt_stack = ctypes.create_string_buffer(ALT_STACK_BYTES)
            alt = _StackT(ctypes.addressof(self._alt_stack), 0, ALT_STACK_BYTES)
            if _libc.sigaltstack(byref(alt), None) != 0:
                self.close()
                raise _fail("sigaltstack")

    def _protect_guard(self, low: int, size: int, guard_bytes: int) -> None:
        if size < guard_bytes + MIN_STACK_BYTES - GUARD_BYTES:
            raise OSError(f"a stack of {size >> 10} KiB is too small for native guest code")
        guard_start = (low + _PAGE - 1) & ~(_PAGE - 1)
        guard_end = (low + guard_bytes) & ~(_PAGE - 1)
        if _libc.mprotect(guard_start, guard_end - guard_start, _PROT_NONE):
            raise _fail("mprotect")
        self._guard = (guard_start, guard_end - guard_start)
        self.guard_bytes = guard_end - low
        self.low = guard_end  # lowest usable address
        self.top = low + size

    def _main_thread_guard(self, low: int, size: int) -> None:
        """The main thread's stack is the kernel's: it grows on demand up to
        RLIMIT_STACK (which `low` is computed from), growing past it faults, and
        the kernel keeps every other mapping at least its stack guard gap (1 MiB by
        default) below the stack. That gap is the guard; nothing is protected."""
        soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
        if soft == resource.RLIM_INFINITY or size < MIN_STACK_BYTES:
            raise OSError("the main thread's stack has no limit or is too small")
        self.guard_bytes = GUARD_BYTES
        self.low = (low + _PAGE - 1) & ~(_PAGE - 1)
        self.top = low + size

    def exhausted(self) -> bool:
        """Whether a call has reached the bottom of the stack since `release`: the page
        just above the guard is in memory only if something touched it."""
        resident = ctypes.c_ubyte()
        if _libc.mincore(self.low, _PAGE, byref(resident)) != 0:
            return False
        return bool(resident.value & 1)

    def release(self) -> None:
        """Give back the pages a deep call touched, all but the top `_KEEP_BYTES`, far
        more than the thread uses between guest calls."""
        end = (self.top - _KEEP_BYTES) & ~(_PAGE - 1)
        if end > self.low:
            _libc.madvise(self.low, end - self.low, _MADV_DONTNEED)

    def close(self) -> None:
        if self._alt_stack is not None and threading.get_ident() == self.ident:
            _libc.sigaltstack(byref(_StackT(None, _SS_DISABLE, 0)), None)
            self._alt_stack = None
        if self._guard[1]:
            _libc.mprotect(self._guard[0], self._guard[1], _PROT_READ_WRITE)
            self._guard = (0, 0)

    def __del__(self) -> None:
        # Run as the thread ends and its thread-locals are cleared, before glibc
        # can give its stack to another thread.
        self.close()


_local = threading.local()
_stack_size_lock = threading.Lock()


def current_stack() -> ThreadStack | None:
    """The calling thread's stack, made fit for native guest code on first use; None
    when it cannot be (too small, or a main thread's without a stack limit)."""
    stack: ThreadStack | bool | None = getattr(_local, "stack", None)
    if stack is None and supported():
        try:
            stack = ThreadStack()
        except OSError:
            stack = False  # not fit: remembered, so that it is not tried again
        _local.stack = stack
    return stack if isinstance(stack, ThreadStack) else None


class _Worker:
    """One call thread, parked between jobs; jobs are handed over with two locks."""

    def __init__(self, name: str) -> None:
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._job: tuple[Callable[..., Any], tuple[Any, ...]] | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._setup_error: BaseException | None = None
        with _stack_size_lock:
            previous = threading.stack_size(CALL_GUARD_BYTES + STACK_BYTES)
            try:
                self._thread = threading.Thread(target=self._main, name=name, daemon=True)
                self._thread.start()
            finally:
                threading.stack_size(previous)
        self._done.acquire()  # set-up finished
        if self._setup_error is not None:
            raise self._setup_error

    def _main(self) -> None:
        try:
            _local.stack = ThreadStack(CALL_GUARD_BYTES)
        except BaseException as exc:
            self._setup_error = exc
            self._done.release()
            return
        self._done.release()
        while True:
            self._go.acquire()
            job, self._job = self._job, None
            if job is None:
                _local.stack.close()
                return
            try:
                self._result = job[0](*job[1])
            except BaseException as exc:
                self._error = exc
            self._done.release()

    def run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._job = (fn, args)
        self._go.release()
        self._done.acquire()
        error, self._error = self._error, None
        result, self._result = self._result, None
        if error is not None:
            try:
                raise error
            finally:
                error = None
        return result

    def stop(self) -> None:
        self._job = None
        self._go.release()
        self._thread.join(timeout=5)


_TYPE_SECTION, _IMPORT_SECTION, _CODE_SECTION = 1, 2, 10
_FUNC_TYPE = 0x60
_REF_TYPES = (0x63, 0x64)  # (ref null ht), (ref ht): a heap type follows
# Bytes of native frame a wasm value may need (a v128 spill slot, with room to spare).
_BYTES_PER_VALUE = 32
_FRAME_OVERHEAD = 64 << 10


def _skip_valtype(r: _Reader) -> None:
    if r.byte() in _REF_TYPES:
        r.u32()  # heap type (s33; abstract ones are one byte)


def frame_bound(wasm: bytes) -> int:
    """An upper bound of the native stack one frame of `wasm`'s functions can take once
    compiled: every local and every value its body could push live at once. A value is
    pushed by one instruction of at least one byte, or by a call, with as many as a
    function type returns; `_BYTES_PER_VALUE` each. Raises `InvalidModule` for what it
    cannot read (type forms of the GC proposal, which the engines refuse anyway)."""
    r = _Reader(wasm, 8)
    most_results, most_params = 1, 0
    largest = 0
    while r.pos < r.end:
        section_id = r.byte()
        size = r.u32()
        end = r.pos + size
        if section_id == _TYPE_SECTION:
            body = _Reader(wasm, r.pos, end)
            for _ in range(body.u32()):
                if body.byte() != _FUNC_TYPE:
                    raise InvalidModule("type section has a form other than func")
                params = body.u32()
                for _ in range(params):
                    _skip_valtype(body)
                most_params = max(most_params, params)
                results = body.u32()
                for _ in range(results):
                    _skip_valtype(body)
                most_results = max(most_results, results)
        elif section_id == _CODE_SECTION:
            body = _Reader(wasm, r.pos, end)
            for _ in range(body.u32()):
                func_size = body.u32()
                func_end = body.pos + func_size
                func = _Reader(wasm, body.pos, func_end)
                locals_count = 0
                for _ in range(func.u32()):
                    locals_count += func.u32()
                    _skip_valtype(func)
                pushed = (func_end - func.pos) * most_results
                largest = max(largest, most_params + locals_count + pushed)
                body.pos = func_end
        r.pos = end
    return largest * _BYTES_PER_VALUE + _FRAME_OVERHEAD


class CallThreads:
    """Where guest calls run: on the calling thread when its stack is fit for native
    code (`current_stack`), else handed to a thread of this pool, made on demand (one
    per concurrent call) with a stack of `STACK_BYTES` and kept.

    `run(fn, *args)` runs `fn` there and returns its result or raises its exception.
    Python threads (8 MiB) and the main thread are used as they are; threads with
    small stacks hand over, which costs some tens of microseconds.
    """

    def __init__(self, name: str) -> None:
        if not supported():
            raise OSError("native call threads need Linux with glibc")
        self._name = name
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, frame_bound: int, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a stack whose guard is at least `frame_bound`."""
        if fits(frame_bound):
            return fn(*args)
        if frame_bound > CALL_GUARD_BYTES:
            raise ValueError(f"no call thread has a guard of {frame_bound} bytes")
        with self._lock:
            if self._closed:
                raise RuntimeError("call threads are closed")
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker(f"{self._name}-{len(self._all)}")
            with self._lock:
                self._all.append(worker)
        try:
            return worker.run(fn, args)
        finally:
            with self._lock:
                self._idle.append(worker)

    @property
    def size(self) -> int:
        return len(self._all)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._all, self._idle = self._all, [], []
        for worker in workers:
            worker.stop()


def fits(frame_bound: int) -> bool:
    """Whether the calling thread may run code whose frames take up to `frame_bound`."""
    stack = current_stack()
    return stack is not None and stack.guard_bytes >= frame_bound


def stack_left(address: int) -> int | None:
    """Bytes of stack between `address` (on the calling thread's stack) and its guard;
    None on a thread that runs no native guest code."""
    stack = getattr(_local, "stack", None)
    if not stack:
        return None
    return address - stack.low


__all__ = [
    "CALL_GUARD_BYTES",
    "GUARD_BYTES",
    "HOST_CALL_RESERVE",
    "STACK_BYTES",
    "CallThreads",
    "Handlers",
    "ThreadStack",
    "current_stack",
    "fault_handlers_on_alt_stack",
    "fits",
    "frame_bound",
    "reassert",
    "stack_left",
    "supported",
]
