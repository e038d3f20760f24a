"""A POSIX timer that advances a wasmtime engine's epoch with no Python on the way.

Why: a Python thread that ticks every millisecond needs the GIL for every tick. In a
worker whose event loop holds the GIL at saturation that is a thousand GIL hand-offs
a second, and an idle worker still burns about 4% of a core (0.08 s of CPU in 2 s of
sleep). Instead, `timer_create(CLOCK_MONOTONIC, SIGEV_THREAD)` is given wasmtime's
own C function `wasmtime_engine_increment_epoch` as its notify function and the
engine pointer as its `sigev_value`: on x86_64 and aarch64 Linux `union sigval` is
passed as a pointer is, so glibc's timer thread makes that call itself, natively.

glibc starts a thread per expiry: a 1 ms timer left armed costs 3 to 7% of a core
(0.06 to 0.14 s of CPU in 2 s idle), so its owner arms it only while guests may run.
Elsewhere (not Linux, another architecture, no `timer_create`) `EpochTimer.create`
returns None and the engine ticks from a Python thread.
"""

from __future__ import annotations

import ctypes
import platform
import sys
import time
from ctypes import POINTER, byref, c_int, c_long, c_void_p

from wasmtime import _ffi as ffi

# Where a `union sigval` (a pointer-sized union) is passed to the notify function
# exactly as a `void *` argument is.
_ARCHITECTURES = {"x86_64", "aarch64"}
_CLOCK_MONOTONIC = 1
_SIGEV_THREAD = 2


class _SigEvent(ctypes.Structure):
    # glibc's `struct sigevent` on 64-bit Linux: 64 bytes.
    _fields_ = [
        ("value", c_void_p),
        ("signo", c_int),
        ("notify", c_int),
        ("function", c_void_p),
        ("attribute", c_void_p),
        ("pad", c_int * 8),
    ]


class _TimeSpec(ctypes.Structure):
    _fields_ = [("sec", c_long), ("nsec", c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("interval", _TimeSpec), ("value", _TimeSpec)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.machine() not in _ARCHITECTURES:
        return None
    if ctypes.sizeof(c_void_p) != 8:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timer_create, libc.timer_settime
        gettime, delete = libc.timer_gettime, libc.timer_delete
    except (OSError, AttributeError):
        return None
    create.argtypes = [c_int, POINTER(_SigEvent), POINTER(c_void_p)]
    settime.argtypes = [c_void_p, c_int, POINTER(_ITimerSpec), POINTER(_ITimerSpec)]
    gettime.argtypes = [c_void_p, POINTER(_ITimerSpec)]
    delete.argtypes = [c_void_p]
    for fn in (create, settime, gettime, delete):
        fn.restype = c_int
    return libc


_LIBC = _libc()


def available() -> bool:
    """Whether this platform can tick natively (a timer may still fail to be made)."""
    return _LIBC is not None


class EpochTimer:
    """One POSIX timer advancing one engine's epoch every `interval_s` while armed.

    The engine must outlive the timer: `delete` it first. Not thread-safe: its owner
    serialises `arm`, `disarm` and `delete`.
    """

    def __init__(self, libc: ctypes.CDLL, timer: c_void_p, interval_s: float) -> None:
        self._libc = libc
        self._timer: c_void_p | None = timer
        self.interval_s = interval_s
        ns = max(1, round(interval_s * 1e9))
        period = _TimeSpec(ns // 10**9, ns % 10**9)
        self._on = _ITimerSpec(period, period)

    @classmethod
    def create(cls, engine_ptr: int, interval_s: float) -> EpochTimer | None:
        """A disarmed timer for the engine at `engine_ptr`; None where there can be none."""
        libc = _LIBC
        if libc is None:
            return None
        event = _SigEvent()
        event.value = engine_ptr
        event.notify = _SIGEV_THREAD
        event.function = ctypes.cast(ffi.dll.wasmtime_engine_increment_epoch, c_void_p).value
        timer = c_void_p()
        if libc.timer_create(_CLOCK_MONOTONIC, byref(event), byref(timer)) != 0:
            return None
        return cls(libc, timer, interval_s)

    def arm(self) -> None:
        """Tick every interval from one interval from now."""
        self._set(self._on)

    def disarm(self) -> None:
        self._set(_ITimerSpec())

    def _set(self, spec: _ITimerSpec) -> None:
        if self._timer is None:
            raise RuntimeError("the epoch timer was deleted")
        if self._libc.timer_settime(self._timer, 0, byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timer_settime failed")

    @property
    def armed(self) -> bool:
        """What the kernel says: a next expiry is due."""
        if self._timer is None:
            return False
        spec = _ITimerSpec()
        if self._libc.timer_gettime(self._timer, byref(spec)) != 0:
            raise OSError(ctypes.get_errno(), "timer_gettime failed")
        return bool(spec.value.sec or spec.value.nsec)

    def delete(self) -> None:
        """Delete the timer, then wait out a notification already on its way, so that
        the engine may be freed when this returns. Idempotent."""
        timer, self._timer = self._timer, None
        if timer is None:
            return
        self._libc.timer_delete(timer)
        # A notification whose thread glibc has started still calls into the engine.
        time.sleep(max(0.01, 3 * self.interval_s))


__all__ = ["EpochTimer", "available"]
