"""Guest deadlines for wasmtime with no periodic tick: `_epochtick.c`'s thread.

One thread per engine sleeps until the earliest deadline of the calls under way and
advances the engine's epoch only when one has passed; each store's epoch deadline
callback (native too) then ends its call if its own deadline has passed, or lets
it go on. No Python and no GIL on the way, no wake while nothing is due.

Why not a periodic tick: a 1 ms tick wakes a thread a thousand times a second for
as long as any deadline is pending, including every request waiting in
`http_fetch`; on a virtual machine that cost 15 to 20% of such a request's CPU
(docs/performance.md). A Python thread ticking instead takes the GIL a thousand
times a second.

`_epochtick.c` is built with the package (`setup.py`); where it did not build
(no C compiler) `DeadlineThread.create` returns None and the engine ticks from a
Python thread.
"""

from __future__ import annotations

import ctypes
import importlib.util
from ctypes import c_int, c_int64, c_ulong, c_void_p
from typing import Any

from wasmtime import _ffi as ffi


def _load() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec("edgefn.sandbox._epochtick")
    if spec is None or spec.origin is None:
        return None
    try:
        # PyDLL: its calls keep the GIL; each returns at once (arming takes a lock
        # the thread holds only while it looks at the slots).
        lib = ctypes.PyDLL(spec.origin)
    except OSError:
        return None
    signatures: dict[str, tuple[type | None, list[type]]] = {
        "edgefn_ticker_create": (c_void_p, [c_void_p, c_void_p, c_void_p]),
        "edgefn_ticker_delete": (None, [c_void_p]),
        "edgefn_ticker_prefork": (None, [c_void_p]),
        "edgefn_ticker_postfork_parent": (None, [c_void_p]),
        "edgefn_ticker_postfork_child": (c_int, [c_void_p]),
        "edgefn_ticker_counts": (None, [c_void_p, ctypes.POINTER(c_ulong)]),
        "edgefn_slot_new": (c_void_p, [c_void_p]),
        "edgefn_slot_expired": (c_int, [c_void_p]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    # The per-call pair: no argument conversion (the callers pass ctypes objects).
    for name in ("edgefn_slot_arm", "edgefn_slot_end"):
        getattr(lib, name).restype = None
    return lib


_LIB = _load()
# A handle of its own (item access makes a new one): `ffi.dll.<name>` is the object
# wasmtime-py's bindings set their own argument types on.
_SET_CALLBACK = ffi.dll["wasmtime_store_epoch_deadline_callback"]
_SET_CALLBACK.restype = None
_SET_CALLBACK.argtypes = [c_void_p, c_void_p, c_void_p, c_void_p]


def address(fn: ctypes._Pointer | int | Any) -> int:
    """The address a ctypes pointer or foreign function holds (0 for a null one)."""
    return ctypes.cast(fn, c_void_p).value or 0


# `edgefn_slot_arm` and `edgefn_slot_end` as addresses (`Slot.addresses`).
_ARM_END = ((address(_LIB.edgefn_slot_arm), address(_LIB.edgefn_slot_end))
            if _LIB is not None else (0, 0))


def available() -> bool:
    """Whether the deadline thread was built and loads here."""
    return _LIB is not None


def slot_functions() -> tuple[int, int, int, int] | None:
    """For a store made in C (`_edgecall.open_store`): the addresses of `edgefn_slot_new`,
    `edgefn_deadline_callback`, `edgefn_slot_free` and `edgefn_slot_arm`; None where the
    thread was not built."""
    if _LIB is None:
        return None
    return (address(_LIB.edgefn_slot_new), address(_LIB.edgefn_deadline_callback),
            address(_LIB.edgefn_slot_free), _ARM_END[0])


class Slot:
    """One store's deadline: `arm` as a call starts, `end` when it ends. Freed with the
    store (its finalizer), so it must not be used once the store is closed."""

    __slots__ = ("_arm", "_end", "_expired", "_ms", "_ptr")

    def __init__(self, lib: ctypes.CDLL, ptr: int, ms: int) -> None:
        self._ptr = c_void_p(ptr)
        self._ms = c_int64(ms)
        self._arm = lib.edgefn_slot_arm
        self._end = lib.edgefn_slot_end
        self._expired = lib.edgefn_slot_expired

    def arm(self) -> None:
        """The call's deadline is the store's `max_execution_ms` from now."""
        self._arm(self._ptr, self._ms)

    def end(self) -> None:
        self._end(self._ptr)

    @property
    def expired(self) -> bool:
        """Whether the deadline callback ended the last call (its error is not a trap)."""
        return bool(self._expired(self._ptr))

    def addresses(self) -> tuple[int, int, int, int]:
        """For a caller in C (`_edgecall.c`): `edgefn_slot_arm`, `edgefn_slot_end`, the
        slot and its milliseconds."""
        return (*_ARM_END, self._ptr.value or 0, self._ms.value)


class DeadlineThread:
    """The deadline thread of one engine, which must outlive it and its stores' calls:
    `delete` it before the engine is freed. Not thread-safe: its owner serialises
    `delete` and the fork hooks; `attach` may be called from any thread."""

    def __init__(self, lib: ctypes.CDLL, handle: int) -> None:
        self._lib = lib
        self._handle: int | None = handle

    @classmethod
    def create(cls, engine_ptr: int) -> DeadlineThread | None:
        """A thread for the engine at `engine_ptr`; None where there can be none."""
        if _LIB is None:
            return None
        handle = _LIB.edgefn_ticker_create(
            address(ffi.dll.wasmtime_engine_increment_epoch), engine_ptr,
            address(ffi.dll.wasmtime_error_new))
        return cls(_LIB, handle) if handle else None

    def _live(self) -> int:
        if self._handle is None:
            raise RuntimeError("the deadline thread was deleted")
        return self._handle

    @property
    def handle(self) -> int:
        """The thread's handle, for the slots of stores made in C (`slot_functions`)."""
        return self._live()

    def adopt(self, slot_ptr: int, ms: int) -> Slot:
        """The slot at `slot_ptr`, made by `edgefn_slot_new` on this thread and set as a
        store's deadline callback in C, with its store's milliseconds."""
        return Slot(self._lib, slot_ptr, ms)

    def attach(self, store_ptr: int, ms: int) -> Slot:
        """A slot for the store at `store_ptr`, whose epoch deadline callback it becomes."""
        ptr = self._lib.edgefn_slot_new(self._live())
        if not ptr:
            raise MemoryError("no memory for a deadline slot")
        _SET_CALLBACK(store_ptr, address(self._lib.edgefn_deadline_callback), ptr,
                      address(self._lib.edgefn_slot_free))
        return Slot(self._lib, ptr, ms)

    def _counts(self) -> tuple[int, int]:
        out = (c_ulong * 2)()
        self._lib.edgefn_ticker_counts(self._live(), out)
        return out[0], out[1]

    @property
    def wakes(self) -> int:
        """How many times the thread has looked for passed deadlines."""
        return self._counts()[0]

    @property
    def advances(self) -> int:
        """How many times it advanced the epoch (a deadline had passed)."""
        return self._counts()[1]

    def prefork(self) -> None:
        if self._handle is not None:
            self._lib.edgefn_ticker_prefork(self._handle)

    def postfork_parent(self) -> None:
        if self._handle is not None:
            self._lib.edgefn_ticker_postfork_parent(self._handle)

    def postfork_child(self) -> None:
        """The thread did not come with the fork: a new one, for the same stores."""
        if self._handle is not None:
            err = self._lib.edgefn_ticker_postfork_child(self._handle)
            if err:
                raise OSError(err, "cannot start the deadline thread")

    def delete(self) -> None:
        """Stop the thread; once this returns no epoch is advanced. Idempotent."""
        handle, self._handle = self._handle, None
        if handle is not None:
            self._lib.edgefn_ticker_delete(handle)


__all__ = ["DeadlineThread", "Slot", "available"]
