"""The wasmtime engine: wasmtime-py for setup, its raw C bindings on the hot path.

The high-level call API costs tens of microseconds per call; the unchecked raw
call with a reused argument array and `memmove` into linear memory costs a few.
Timeouts are epoch interruption, the epoch advanced by a native thread when a call's
deadline has passed (`epoch_timer`; a Python thread where there is none); memory is
capped by the store limiter; `edge` host functions are linked once per engine and find
their instance through the address of their caller's store.

An edge-v1 module that imports a host call that waits (`http_fetch`, KV, `secret_get`)
is linked a second way, those calls defined as wasmtime async host functions: its
guest runs on a stack of its own (`wasmtime_func_call_async`), and a waiting call
suspends it, the call's work being run by whoever drives the call (`_drive`), a
thread or a green task on the worker's event loop (`Module.suspends`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import math
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable
from ctypes import POINTER, byref, c_void_p
from typing import Any

import wasmtime
from wasmtime import _bindings as _raw
from wasmtime import _ffi as ffi

from edgefn import native
from edgefn.sandbox import epoch_timer, wasi_http
from edgefn.sandbox.abi import check_handle_result, unusable_alloc
from edgefn.sandbox.compilecache import CompileCache
from edgefn.sandbox.engine import GuestRequest, Instance, Limits, ModuleFacts, WasiOptions
from edgefn.sandbox.enginetag import engine_tag
from edgefn.sandbox.errors import (
    EngineUnavailable,
    GuestTimeout,
    GuestTrap,
    InvalidModule,
    InvocationError,
    PrecompiledRefused,
)
from edgefn.sandbox.hostcalls import EDGE_FUNCTIONS, F64, I32, WAITING_FUNCTIONS, Adapter, Steps
from edgefn.sandbox.options import WasmtimeOptions
from edgefn.sandbox.program import (
    EdgeProgram,
    HostCallFailed,
    InstanceBase,
    ProcExit,
    WagiProgram,
    WaitingCall,
    guarded_host_call,
)
from edgefn.sandbox.wasminfo import (
    ABI_EDGE_V1,
    PAGE_SIZE,
    ModuleInfo,
    uses_wasi_http,
    validate_module,
)

_RawArgs = ffi.wasmtime_val_raw_t
_EXTERN_FUNC = ffi.WASMTIME_EXTERN_FUNC.value
_EXTERN_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value
_WASMTIME_VERSION = importlib.metadata.version("wasmtime")


# The same library, its functions called without releasing the GIL (ctypes' PyDLL).
_HOLDING_GIL = ctypes.PyDLL(_raw.dll._name, handle=_raw.dll._handle)


def _fast(name: str, restype: type | None, *, quick: bool = False) -> Any:
    """A private handle on a C function with no argument conversion: the hot path
    passes only ctypes objects, so ctypes need not check or convert each one.

    `quick`: a call that returns at once is made holding the GIL. Releasing it
    around a call of nanoseconds gains nothing and lets another thread (the epoch
    ticker, a request thread) take it, the call then waiting to get it back. The
    guest calls release it: a guest may run until its deadline, other threads run
    meanwhile, and the Python ticker (where there is no native timer) needs the
    GIL to interrupt it.
    """
    fn = (_HOLDING_GIL if quick else _raw.dll)[name]
    fn.restype = restype
    fn.argtypes = None  # type: ignore[assignment]
    return fn


_call_unchecked = _fast("wasmtime_func_call_unchecked", c_void_p)
_memory_data = _fast("wasmtime_memory_data", c_void_p, quick=True)
_memory_data_size = _fast("wasmtime_memory_data_size", ctypes.c_size_t, quick=True)
_set_epoch_deadline = _fast("wasmtime_context_set_epoch_deadline", None, quick=True)
_caller_context = _fast("wasmtime_caller_context", c_void_p, quick=True)
# ctypes.memmove releases the GIL; this one, for copies in and out of guest memory
# on the hot path (a request's size at most), does not.
_memmove = ctypes.PYFUNCTYPE(c_void_p, c_void_p, c_void_p, ctypes.c_size_t)(
    ctypes.cast(ctypes.memmove, c_void_p).value or 0)
_SIZES = [ctypes.c_size_t(n) for n in range(11)]
# Async calls: made on the guest's own stack, polled until done. Polling runs the guest,
# so it releases the GIL like any guest call; starting and deleting a future do not run it.
_call_async = _fast("wasmtime_func_call_async", c_void_p, quick=True)
_instantiate_async = _fast("wasmtime_instance_pre_instantiate_async", c_void_p, quick=True)
_poll = _fast("wasmtime_call_future_poll", ctypes.c_bool)
_future_delete = _fast("wasmtime_call_future_delete", None)
_I32_KIND = ffi.WASMTIME_I32.value
# An export by name: returns at once. Its arguments go through no conversion, so the
# name's length is passed as the size_t the C side reads (`_name_arg`).
_export_get = _fast("wasmtime_instance_export_get", ctypes.c_bool, quick=True)

# Raw call arguments are 16-byte `wasmtime_val_raw_t`s whose i32 is the first four
# bytes: written and read with struct, no ctypes object is made per value.
_I32 = struct.Struct("<i")
_DEALLOC_ARGS = struct.Struct("<i12xi")
_HANDLE_ARGS = struct.Struct("<" + "i12x" * 9 + "i")
_INTERRUPT = ffi.wasmtime_trap_code_enum.WASMTIME_TRAP_CODE_INTERRUPT.value


@functools.lru_cache(maxsize=256)
def _name_arg(name: str) -> tuple[bytes, ctypes.c_size_t]:
    """An export's name as `_export_get` takes it: the bytes and their length."""
    raw = name.encode()
    return raw, ctypes.c_size_t(len(raw))


def _typed_i32s(n: int) -> tuple[struct.Struct, struct.Struct]:
    """For `n` i32 arguments: the struct that reads them from raw values, and the one
    that writes them as typed `wasmtime_val_t`s (the kind byte, then the i32 where
    the union starts), each in one call instead of ctypes objects per value."""
    size, at = ctypes.sizeof(ffi.wasmtime_val_t), ffi.wasmtime_val_t.of.offset
    kind: Any = ffi.wasmtime_val_t.kind  # the field's descriptor: offset and size
    if kind.offset != 0 or kind.size != 1 or at < 1 or at + 4 > size:
        raise EngineUnavailable("wasmtime_val_t is not laid out as this module reads it")
    raw = struct.Struct("<" + "i12x" * n)
    typed = struct.Struct("<" + f"B{at - 1}xi{size - at - 4}x" * n)
    return raw, typed


# By argument count (0 to 10): what an async call's arguments go through.
_TYPED_I32S = [_typed_i32s(n) for n in range(11)]


def _load_exchange() -> Any:
    """`_edgecall.exchange` given wasmtime's functions, where it was built (`setup.py`)."""
    edgecall = native.part("edgefn.sandbox._edgecall")
    if edgecall is None:
        return None, None
    edgecall.configure(*(epoch_timer.address(_raw.dll[name]) for name in (
        "wasmtime_func_call_unchecked", "wasmtime_memory_data", "wasmtime_memory_data_size")))
    return edgecall, edgecall.exchange


_edgecall, _EXCHANGE = _load_exchange()
_PLAN = struct.Struct("8Pq")  # _edgecall.c's plan_t


# Instances, tables and table elements one store may create; generous for any
# real module, small enough that a hostile one cannot use them to eat memory.
_MAX_TABLE_ELEMENTS = 100_000


def _trap_result(message: str) -> int:
    data = message.encode()
    trap = ffi.wasmtime_trap_new(ctypes.create_string_buffer(data), len(data))
    return ctypes.cast(trap, c_void_p).value or 0


_VALTYPES = {I32: wasmtime.ValType.i32(), F64: wasmtime.ValType.f64()}


def _make_callback(
    name: str, params: tuple[str, ...], adapter: Adapter, has_result: bool
) -> Callable:
    fields = [("f64" if t == F64 else "i32") for t in params]

    def callback(env: int, caller: ctypes._Pointer, args: ctypes.Array, nargs: int) -> int:
        # The instance is its own GuestMemory: it reads through its memory view.
        inst = _INSTANCES.get(_caller_context(caller) or 0)
        values = [getattr(args[i], f) for i, f in enumerate(fields)]
        try:
            result = guarded_host_call(inst, name, adapter, inst, values)  # type: ignore[arg-type]
        except HostCallFailed as exc:
            return _trap_result(str(exc))
        if has_result:
            args[0].i32 = result
        return 0

    return callback


def _make_async_callback(name: str, waiting: Steps) -> Callable:
    """A waiting host call of a suspending module: begin it (its inputs read now), and
    hand wasmtime a continuation that is done once the driver has run it (`_drive`)."""

    def callback(env: int, caller: ctypes._Pointer, args: ctypes._Pointer, nargs: int,
                 results: ctypes._Pointer, nresults: int, trap_ret: ctypes._Pointer,
                 cont_ret: ctypes._Pointer) -> None:
        ctx = _caller_context(caller) or 0
        inst = _INSTANCES.get(ctx)
        cont = cont_ret[0]
        cont.finalizer = _NO_FINALIZER
        try:
            if not isinstance(inst, _SuspendingEdgeInstance):
                raise HostCallFailed(f"edge.{name} called outside an invocation")
            pending = WaitingCall(inst, name, waiting, inst,
                                  [args[i].of.i32 for i in range(nargs)])
        except HostCallFailed as exc:
            trap_ret[0] = ctypes.cast(_trap_result(str(exc)), POINTER(ffi.wasm_trap_t))
            cont.callback = _ALREADY_DONE
            cont.env = None
            return
        inst._pending = pending
        inst._pending_results = results
        cont.callback = _CONTINUE
        cont.env = ctx

    return callback


def _continue(ctx: int | None) -> bool:
    """wasmtime asks whether the waiting call is over; when it is, its result goes to the guest."""
    inst = _INSTANCES.get(ctx or 0)
    pending = inst._pending if isinstance(inst, _SuspendingEdgeInstance) else None
    if pending is None:
        return True
    if not pending.done:
        return False
    result = inst._pending_results[0]  # type: ignore[union-attr]
    result.kind = _I32_KIND
    result.of.i32 = pending.finish(inst)  # type: ignore[arg-type]
    inst._pending = None  # type: ignore[union-attr]
    return True


_CONTINUE = _raw.wasmtime_func_async_continuation_callback_t(_continue)
_ALREADY_DONE = _raw.wasmtime_func_async_continuation_callback_t(lambda _env: True)


# Every instance by the address of its store's context, which is what a host call
# is given (through its caller) and what its WASI output callbacks are given as
# their data pointer (wasmtime may call those on a thread of its own).
_INSTANCES: dict[int, _BaseInstance] = {}


def _make_output_callback(stream: int) -> Callable[[int | None, ctypes.c_void_p, int], int]:
    def callback(data: int | None, buf: ctypes.c_void_p, length: int) -> int:
        inst = _INSTANCES.get(data or 0)
        if inst is not None:
            inst.capture(stream, ctypes.string_at(buf, length))
        return length

    return callback


_OUTPUT_CB_TYPE = ctypes.CFUNCTYPE(
    ctypes.c_ssize_t, c_void_p, POINTER(ctypes.c_ubyte), ctypes.c_size_t
)
_FINALIZER_TYPE = ctypes.CFUNCTYPE(None, c_void_p)
_NO_FINALIZER = ctypes.cast(0, _FINALIZER_TYPE)
_STDOUT_CB = _OUTPUT_CB_TYPE(_make_output_callback(1))
_STDERR_CB = _OUTPUT_CB_TYPE(_make_output_callback(2))


# `_edgecall.c`'s setup half: wasmtime's functions and the deadline thread's, in the
# order of its `api` table.
_SETUP_FUNCTIONS = (
    "wasmtime_store_new", "wasmtime_store_context", "wasmtime_store_limiter",
    "wasi_config_new", "wasi_config_set_stdout_custom", "wasi_config_set_stderr_custom",
    "wasmtime_context_set_wasi", "wasmtime_store_epoch_deadline_callback",
    "wasmtime_store_delete", "wasmtime_instance_pre_instantiate",
    "wasmtime_instance_pre_instantiate_async", "wasmtime_call_future_poll",
    "wasmtime_call_future_delete", "wasmtime_instance_export_get", "wasmtime_func_call_async")


def _load_setup() -> bool:
    """Whether `_edgecall.open_store` and `instantiate` may be used here: built, and
    the deadline thread with them (they arm its slots)."""
    slots = epoch_timer.slot_functions()
    names = _SETUP_FUNCTIONS
    # A build of `_edgecall.c` older than its setup half goes on without it.
    if (_edgecall is None or slots is None
            or len(names) + len(slots) != getattr(_edgecall, "SETUP_FUNCTIONS", 0)):
        return False
    _edgecall.configure_setup(*(epoch_timer.address(_raw.dll[name]) for name in names), *slots)
    return True


_NATIVE_SETUP = _load_setup()
_STORE_SPEC = struct.Struct("4P3q")  # _edgecall.c's store_spec_t
_EXTERN_SIZE = ctypes.sizeof(ffi.wasmtime_extern_t)
_EXTERN_OF = ffi.wasmtime_extern_t.of.offset
_ASYNC_PLAN = struct.Struct("9P3q")  # _edgecall.c's async_plan_t
_VAL_SIZE, _VAL_OF = ctypes.sizeof(ffi.wasmtime_val_t), ffi.wasmtime_val_t.of.offset
# The exports `_edgecall.instantiate` looks up, by their index in what it returns.
_NATIVE_EXPORTS = ({name: i for i, name in enumerate(_edgecall.EXPORT_NAMES)}
                   if _NATIVE_SETUP else {})
# Where `_edgecall.start` stopped with `handle` started: `_call_handle` goes on.
_STARTED = ((_edgecall.SUSPENDED, _edgecall.HANDLED, _edgecall.HANDLE)
            if _NATIVE_SETUP else ())
_store_delete = _fast("wasmtime_store_delete", None)


class _NativeStore:
    """A store made by `_edgecall.open_store`: deleted by `close` (or when dropped),
    its deadline slot with it."""

    __slots__ = ("_ptr",)
    # Held by the class, which outlives the module's globals at interpreter exit.
    _delete = staticmethod(_store_delete)

    def __init__(self, ptr: int) -> None:
        self._ptr = ptr

    def close(self) -> None:
        ptr, self._ptr = self._ptr, 0
        if ptr:
            self._delete(c_void_p(ptr))

    def __del__(self) -> None:
        self.close()


class _ThreadTicker:
    """Advances the engine's epoch every `tick_ms` from a Python thread; deadlines are
    counted in ticks. Where there is no deadline thread (see `epoch_timer`), or when
    `WasmtimeOptions.native_epoch_timer` is off.

    The thread starts with the first deadline asked for: a process that only
    compiles (a node's main process) never wakes a thousand times a second for
    nothing. A forked child has no thread: it starts its own."""

    def __init__(self, engine: wasmtime.Engine, tick_ms: float) -> None:
        self.tick_ms = tick_ms
        self._interval = tick_ms / 1000
        self._engine = engine
        self._stop = threading.Event()
        self._started = False
        self._forget()
        _after_fork(self)

    def _forget(self) -> None:
        """No thread (a new ticker, or a forked child); a child of a parent that ran
        guests starts its own at once, since instances it inherited arm deadlines
        without asking `ticks_for` again."""
        was_started = self._started
        self._start = 0.0
        self._done = 0
        self._thread = threading.Thread(target=self._run, name="edgefn-epoch", daemon=True)
        self._started = False
        self._starting = threading.Lock()
        if was_started and not self._stop.is_set():
            self._ensure_started()

    def _ensure_started(self) -> None:
        if self._started:
            return
        with self._starting:
            if not self._started:
                self._start = time.monotonic()
                self._thread.start()
                self._started = True

    def _run(self) -> None:
        # Ticks follow the clock, not the sleeps: a sleep always runs a little long,
        # and those overruns would otherwise add up to a deadline that lands late.
        interval, start = self._interval, self._start
        increment = ffi.wasmtime_engine_increment_epoch
        ptr = self._engine.ptr()
        while not self._stop.wait(
            max(0.0, start + (self._done + 1) * interval - time.monotonic())
        ):
            due = int((time.monotonic() - start) / interval)
            while self._done < due:
                increment(ptr)
                self._done += 1

    def lag(self) -> int:
        """Ticks due but not yet counted (the ticker thread was kept waiting).

        They will be counted in a burst, so a deadline armed now must include them,
        or it would land early by that much. Asked only after `ticks_for`, which
        started the thread (it is on every call's path: no check here).
        """
        return max(0, int((time.monotonic() - self._start) / self._interval) - self._done)

    def ticks_for(self, ms: int) -> int:
        # One extra tick: the deadline is never early, at most one tick late.
        self._ensure_started()
        return math.ceil(ms / self.tick_ms) + 1

    def arm(self, ctx: ctypes._Pointer | None, ticks: int) -> None:
        """Set the store's deadline `ticks` from now (from `ticks_for`)."""
        _set_epoch_deadline(ctx, ctypes.c_uint64(ticks + self.lag()))

    def attach(self, store: wasmtime.Store, ms: int) -> _Ticks:
        return _Ticks(self, store._context(), self.ticks_for(ms))

    def stop(self) -> None:
        self._stop.set()
        with self._starting:
            if self._started:
                self._thread.join(timeout=1)


class _Ticks:
    """One store's deadline counted in a `_ThreadTicker`'s ticks: the epoch deadline
    trap ends the call (a trap of code INTERRUPT)."""

    __slots__ = ("_ctx", "_ticker", "_ticks")
    expired = False

    def __init__(self, ticker: _ThreadTicker, ctx: ctypes._Pointer, ticks: int) -> None:
        self._ticker, self._ctx, self._ticks = ticker, ctx, ticks

    def arm(self) -> None:
        self._ticker.arm(self._ctx, self._ticks)

    def end(self) -> None:
        pass


class _NativeDeadlines:
    """Deadlines from the engine's native deadline thread (`epoch_timer`): no tick, no
    GIL, no wake while nothing is due; a store's own callback decides its timeout."""

    def __init__(self, engine: wasmtime.Engine, thread: epoch_timer.DeadlineThread) -> None:
        self._thread = thread
        # Before the engine is freed, and at interpreter exit before anything is torn
        # down: the thread must never advance a freed engine's epoch. The engine is
        # an argument so that it outlives the thread.
        self._finalizer = weakref.finalize(self, _NativeDeadlines._shut, thread, engine)
        _after_fork(self)

    @staticmethod
    def _shut(thread: epoch_timer.DeadlineThread, engine: wasmtime.Engine) -> None:
        thread.delete()

    def attach(self, store: wasmtime.Store, ms: int) -> epoch_timer.Slot:
        return self._thread.attach(ctypes.cast(store.ptr(), c_void_p).value or 0, ms)

    @property
    def handle(self) -> int:
        """The deadline thread's handle, for a store made in C (`_edgecall.open_store`)."""
        return self._thread.handle

    def adopt(self, slot_ptr: int, ms: int) -> epoch_timer.Slot:
        return self._thread.adopt(slot_ptr, ms)

    def stop(self) -> None:
        self._finalizer()


_Ticker = _ThreadTicker | _NativeDeadlines
_Deadline = _Ticks | epoch_timer.Slot


def _after_fork(ticker: _Ticker) -> None:
    """A forked child has none of the parent's threads: a Python ticker starts its own
    with its first deadline; the deadline thread starts a new one at once for the
    stores the child inherited, its slot list held still across the fork."""
    ref = weakref.ref(ticker)

    def before() -> None:
        t = ref()
        if isinstance(t, _NativeDeadlines):
            t._thread.prefork()

    def in_parent() -> None:
        t = ref()
        if isinstance(t, _NativeDeadlines):
            t._thread.postfork_parent()

    def in_child() -> None:
        t = ref()
        if isinstance(t, _NativeDeadlines):
            t._thread.postfork_child()
        elif t is not None:
            t._forget()

    os.register_at_fork(before=before, after_in_parent=in_parent, after_in_child=in_child)


def _make_ticker(engine: wasmtime.Engine, options: WasmtimeOptions) -> _Ticker:
    if options.native_epoch_timer:
        thread = epoch_timer.DeadlineThread.create(ctypes.cast(engine.ptr(), c_void_p).value or 0)
        if thread is not None:
            return _NativeDeadlines(engine, thread)
    return _ThreadTicker(engine, options.epoch_tick_ms)


class WasmtimeEngine:
    """`Engine` on wasmtime. Thread-safe; one per process."""

    name = "wasmtime"

    def __init__(
        self, options: WasmtimeOptions | None = None, *, compile_cache: CompileCache | None = None
    ) -> None:
        options = options or WasmtimeOptions()
        opt_level = options.opt_level
        # Compiled machine code is cached on disk, sealed, by the module's sha256, so
        # a version is compiled once per node, not once per worker or restart.
        self._compile_cache = compile_cache
        # Serialized code only loads into an engine of the same version and settings,
        # on a CPU with the features Cranelift compiled for (it detects the host's).
        # Every setting below that changes the code is in the tag; memory settings are
        # wasmtime's defaults, which its version pins.
        self._tag = engine_tag("wasmtime", _WASMTIME_VERSION, opt_level, "epoch")
        try:
            config = wasmtime.Config()
            config.epoch_interruption = True
            config.cranelift_opt_level = opt_level
            self._engine = wasmtime.Engine(config)
        except (wasmtime.WasmtimeError, OSError) as exc:
            raise EngineUnavailable(f"wasmtime could not start: {exc}") from exc
        self._ticker = _make_ticker(self._engine, options)
        self._callbacks: list[object] = []
        self._linker = self._make_linker(suspending=False)
        # Modules that import a waiting call, when their guests may be suspended in it.
        self._suspending_linker = (self._make_linker(suspending=True)
                                   if options.suspend_waiting else None)

    def _make_linker(self, *, suspending: bool) -> wasmtime.Linker:
        linker = wasmtime.Linker(self._engine)
        linker.define_wasi()
        for fname, (params, results, adapter) in EDGE_FUNCTIONS.items():
            if suspending and fname in WAITING_FUNCTIONS:
                self._define_async_function(linker, fname, params, results,
                                            WAITING_FUNCTIONS[fname])
            else:
                self._define_host_function(linker, fname, params, results, adapter)
        for fname, (params, results, adapter) in wasi_http.FUNCTIONS.items():
            self._define_host_function(linker, fname, params, results, adapter, wasi_http.MODULE)
        return linker

    def _define_host_function(
        self, linker: wasmtime.Linker, fname: str, params: tuple[str, ...],
        results: tuple[str, ...], adapter: Adapter, module_name: str = "edge",
    ) -> None:
        cb = ffi.wasmtime_func_unchecked_callback_t(
            _make_callback(fname, params, adapter, bool(results))
        )
        self._define(linker, module_name, fname, params, results, cb,
                     ffi.wasmtime_linker_define_func_unchecked)

    def _define_async_function(
        self, linker: wasmtime.Linker, fname: str, params: tuple[str, ...],
        results: tuple[str, ...], waiting: Steps,
    ) -> None:
        cb = _raw.wasmtime_func_async_callback_t(_make_async_callback(fname, waiting))
        self._define(linker, "edge", fname, params, results, cb,
                     _raw.wasmtime_linker_define_async_func)

    def _define(self, linker: wasmtime.Linker, module_name: str, fname: str,
                params: tuple[str, ...], results: tuple[str, ...], cb: object,
                define: Callable[..., Any]) -> None:
        functype = wasmtime.FuncType([_VALTYPES[t] for t in params],
                                     [_VALTYPES[t] for t in results])
        self._callbacks.append(cb)  # the C side keeps only a pointer
        module, name = module_name.encode(), fname.encode()
        err = define(
            linker.ptr(),
            ctypes.create_string_buffer(module),
            len(module),
            ctypes.create_string_buffer(name),
            len(name),
            functype.ptr(),
            cb,
            None,
            _NO_FINALIZER,
        )
        if err:
            raise EngineUnavailable(str(wasmtime.WasmtimeError._from_ptr(err)))

    def _suspends(self, info: ModuleInfo) -> bool:
        """Whether this module's guests are suspended in their waiting calls: an edge-v1
        module that imports one (a WASI-HTTP guest's calls block, and are not among them)."""
        return (self._suspending_linker is not None and info.abi == ABI_EDGE_V1
                and not uses_wasi_http(info)
                and any(imp.module == "edge" and imp.name in WAITING_FUNCTIONS
                        for imp in info.imports))

    @property
    def tag(self) -> str:
        return self._tag

    def compile(
        self, wasm: bytes, limits: Limits, wasi: WasiOptions, *, precompiled: bytes | None = None
    ) -> WasmtimeModule:
        info = validate_module(wasm, memory_pages=limits.memory_pages)
        try:
            if precompiled is not None:
                module = self._adopt(wasm, precompiled)
            else:
                module = self._load_or_compile(wasm)
            suspends = self._suspends(info)
            linker = self._suspending_linker if suspends else self._linker
            assert linker is not None
            pre = linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise InvalidModule(f"module does not compile: {exc}") from exc
        return WasmtimeModule(self, module, pre, info, limits, wasi, len(wasm),
                              suspends=suspends)

    def precompile(self, wasm: bytes) -> bytes:
        # The module was validated against the platform's rules when it was uploaded.
        try:
            return bytes(wasmtime.Module(self._engine, wasm).serialize())
        except wasmtime.WasmtimeError as exc:
            raise InvalidModule(f"module does not compile: {exc}") from exc

    def _adopt(self, wasm: bytes, code: bytes) -> wasmtime.Module:
        """Precompiled code, loaded and kept (sealed) in the compile cache, so that the
        workers load it as if this node had compiled it."""
        try:
            # Safe only because the caller verified its digest from the control plane.
            module = wasmtime.Module.deserialize(self._engine, code)
        except wasmtime.WasmtimeError as exc:
            raise PrecompiledRefused(f"wasmtime refused the precompiled code: {exc}") from exc
        if self._compile_cache is not None:
            self._compile_cache.store(hashlib.sha256(wasm).hexdigest(), self._tag, code)
        return module

    def _load_or_compile(self, wasm: bytes) -> wasmtime.Module:
        cache = self._compile_cache
        if cache is None:
            return wasmtime.Module(self._engine, wasm)
        source = hashlib.sha256(wasm).hexdigest()
        code = cache.load(source, self._tag)
        if code is not None:
            try:
                # Safe only because the seal proves this node compiled these bytes.
                return wasmtime.Module.deserialize(self._engine, code)
            except wasmtime.WasmtimeError as exc:
                cache.reject(source, self._tag, f"wasmtime refused it: {exc}")
        module = wasmtime.Module(self._engine, wasm)
        cache.store(source, self._tag, bytes(module.serialize()))
        return module

    def describe(self) -> dict[str, str]:
        return {
            "engine": "wasmtime",
            "version": _WASMTIME_VERSION,
            "compiler": "cranelift (compiled at load, cached on disk, sealed)"
            if self._compile_cache
            else "cranelift (compiled at load)",
            "epoch_ticker": "deadline thread" if isinstance(self._ticker, _NativeDeadlines)
            else f"python thread, {self._ticker.tick_ms} ms ticks",
            "tag": self._tag,
        }

    def close(self) -> None:
        self._ticker.stop()


class WasmtimeModule(ModuleFacts):
    """A compiled, pre-linked module of one function version."""

    def __init__(
        self,
        engine: WasmtimeEngine,
        module: wasmtime.Module,
        pre: wasmtime.InstancePre,
        info: ModuleInfo,
        limits: Limits,
        wasi: WasiOptions,
        wasm_size: int,
        *,
        suspends: bool = False,
    ) -> None:
        super().__init__(info, limits, wasi, wasm_size)
        self._engine = engine
        self._module = module
        self._pre = pre
        self._preopens = wasi.preopens()
        self._suspends = suspends
        # An edge-v1 instance's store and instance made in C, where the WASI is the
        # default one (output captured, no environment, no directories) and the
        # deadlines are the native thread's: `_EdgeInstance._open_native`.
        self.store_spec: bytes | None = None
        ticker = engine._ticker
        if (_NATIVE_SETUP and info.abi == ABI_EDGE_V1 and not self._preopens
                and not wasi.environ([]) and isinstance(ticker, _NativeDeadlines)):
            self.store_spec = _STORE_SPEC.pack(
                epoch_timer.address(engine._engine.ptr()), ticker.handle,
                epoch_timer.address(_STDOUT_CB), epoch_timer.address(_STDERR_CB),
                limits.memory_pages * PAGE_SIZE, _MAX_TABLE_ELEMENTS, limits.max_execution_ms)
            self.pre_address = epoch_timer.address(pre.ptr())

    @property
    def suspends(self) -> bool:
        return self._suspends

    def instantiate(self) -> Instance:
        if self.abi == ABI_EDGE_V1:
            return _SuspendingEdgeInstance(self) if self._suspends else _EdgeInstance(self)
        return _WagiInstance(self)

    def new_store(
        self, owner: _BaseInstance, stdin: bytes | None, extra_env: list[tuple[str, str]],
        argv: list[str] | None = None,
    ) -> tuple[wasmtime.Store, int, _Deadline]:
        """A store with this module's limits and WASI, registered for `owner`; returns
        it with its key in `_INSTANCES`, which `owner` removes when it closes, and its
        deadline, armed: instantiating may run guest code."""
        store = wasmtime.Store(self._engine._engine)
        key = ctypes.cast(store._context(), c_void_p).value or 0
        _INSTANCES[key] = owner
        deadline = self._engine._ticker.attach(store, self.limits.max_execution_ms)
        deadline.arm()
        memory_bytes = self.limits.memory_pages * PAGE_SIZE
        ffi.wasmtime_store_limiter(store.ptr(), memory_bytes, _MAX_TABLE_ELEMENTS, 1, 1, 1)
        config = wasmtime.WasiConfig()
        env = self.wasi.environ(extra_env)
        if env:  # a new config's environment is empty: most functions set none
            config.env = env
        if argv:
            config.argv = argv
        if stdin is not None:
            # The config takes ownership of the vector (and its copy of the bytes).
            vec = ffi.wasm_byte_vec_t()
            buf = (ctypes.c_uint8 * len(stdin)).from_buffer_copy(stdin) if stdin else None
            ffi.wasm_byte_vec_new(byref(vec), len(stdin), buf)
            ffi.wasi_config_set_stdin_bytes(config.ptr(), byref(vec))
        ffi.wasi_config_set_stdout_custom(config.ptr(), _STDOUT_CB, key, _NO_FINALIZER)
        ffi.wasi_config_set_stderr_custom(config.ptr(), _STDERR_CB, key, _NO_FINALIZER)
        for guest, host in self._preopens:
            config.preopen_dir(host, guest, fs_mutable=False)
        store.set_wasi(config)
        return store, key, deadline

    def adopt_slot(self, slot_ptr: int) -> epoch_timer.Slot:
        """The deadline of a store `_edgecall.open_store` made for this module."""
        return self._engine._ticker.adopt(slot_ptr,  # type: ignore[union-attr]
                                          self.limits.max_execution_ms)

    def instantiate_in(self, store: wasmtime.Store) -> wasmtime.Instance:
        return self._pre.instantiate(store)

    def instantiate_async(
        self, ctx: ctypes._Pointer | c_void_p, instance: ffi.wasmtime_instance_t,
        trap_ref: Any, error_ref: Any,
    ) -> int:
        """A future instantiating the module in the store of `ctx` (`_drive` it)."""
        return _instantiate_async(self._pre.ptr(), ctx, byref(instance), trap_ref,
                                  error_ref) or 0

    def close(self) -> None:
        self.store_spec = None
        self._pre = None  # type: ignore[assignment]
        self._module = None  # type: ignore[assignment]


class _BaseInstance(InstanceBase):
    """What both ABIs share on wasmtime: the store, raw calls, trap translation."""

    def __init__(self, module: WasmtimeModule) -> None:
        self._module = module
        self._init_state(module.limits)
        self._store: wasmtime.Store | None = None
        # Its store's context: a ctypes pointer, or its address (`_open_native`).
        self._ctx: ctypes._Pointer | c_void_p | None = None
        self._memory: ffi.wasmtime_memory_t | None = None
        # The trap slot of its calls (a `wasm_trap_t *`), read as a plain address.
        self._trap = c_void_p()
        self._trap_ref = byref(self._trap)
        self._key = 0  # the address of its store's context
        self._deadline: _Deadline | None = None
        self._raw_instance: ffi.wasmtime_instance_t | None = None

    def _new_store(self, stdin: bytes | None, extra_env: list[tuple[str, str]],
                   argv: list[str] | None = None) -> None:
        self._store, self._key, self._deadline = self._module.new_store(
            self, stdin, extra_env, argv)
        self._ctx = self._store._context()

    def _instantiate(self) -> None:
        """Instantiate in the store made by `_new_store` and bind the exports."""
        assert self._store is not None
        try:
            self._raw_instance = self._make_instance()._instance
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise _instantiation_error(exc, self._deadline) from exc
        self._bind_memory(self._lookup("memory"))

    def _bind_memory(self, mem: ffi.wasmtime_extern_t | None) -> None:
        if mem is not None and mem.kind == _EXTERN_MEMORY:
            self._memory = mem.of.memory  # a view into `mem`, which it keeps alive
            self._memory_ref = byref(self._memory)
            self._view_base, self._view_size = 0, -1

    def _make_instance(self) -> wasmtime.Instance:
        assert self._store is not None
        return self._module.instantiate_in(self._store)

    def _lookup(self, name: str) -> ffi.wasmtime_extern_t | None:
        """The export `name`, looked up by name: the few an ABI uses, rather than
        wasmtime-py's map of every export wrapped in Python objects (a third of
        the cost of instantiating a small module)."""
        item = ffi.wasmtime_extern_t()
        raw, size = _name_arg(name)
        assert self._raw_instance is not None
        found = _export_get(self._ctx, byref(self._raw_instance), raw, size, byref(item))
        return item if found else None

    def _export(self, name: str) -> ctypes._Pointer | None:
        if self._module.info.exports.get(name) != "func":
            return None  # known from the module's bytes: no lookup (`_initialize`, often)
        f = self._lookup(name)
        if f is not None and f.kind == _EXTERN_FUNC:
            return ctypes.pointer(f.of.func)
        return None

    def _call_export(self, func: ctypes._Pointer) -> None:
        self._call(func, (_RawArgs * 1)(), 0)

    def memory_view(self) -> tuple[int, int]:
        """Base address and size of linear memory, valid until the guest runs again.

        Memory only moves when it grows, so the base is re-read only when the size
        changed: one C call instead of two on the hot path.
        """
        if self._memory is None:
            raise IndexError("module exports no memory")
        ctx, mem = self._ctx, self._memory_ref
        size = _memory_data_size(ctx, mem)
        if size != self._view_size:
            self._view_base = _memory_data(ctx, mem) or 0
            self._view_size = size
        return self._view_base, size

    @property
    def memory_bytes(self) -> int:
        if self._memory is None or self.closed:
            return 0
        return int(_memory_data_size(self._ctx, self._memory_ref))

    # -- GuestMemory, for the host functions ----------------------------------
    def read(self, ptr: int, length: int) -> bytes:
        base, size = self.memory_view()
        if ptr + length > size:
            raise IndexError("guest buffer out of bounds")
        return ctypes.string_at(base + ptr, length)

    def write(self, ptr: int, data: bytes) -> None:
        base, size = self.memory_view()
        if ptr + len(data) > size:
            raise IndexError("guest output buffer out of bounds")
        _memmove(base + ptr, data, len(data))

    def _call(self, func: ctypes._Pointer, args: ctypes.Array, n: int) -> None:
        """One raw call; every failure becomes an `InvocationError`."""
        err = _call_unchecked(self._ctx, func, args, _SIZES[n], self._trap_ref)
        self._outcome(err)

    def _outcome(self, err: int | None) -> None:
        """After a call: its error or trap, if any, as an `InvocationError` (or a host call's
        own exception)."""
        if err:
            error_ptr = ctypes.cast(err, POINTER(ffi.wasmtime_error_t))
            error = wasmtime.WasmtimeError._from_ptr(error_ptr)
            if isinstance(error, wasmtime.ExitTrap):
                raise ProcExit(error.code)
            self._raise_host_exception()
            # A host call's trap reaches here as an error, not a trap, and so does the
            # deadline callback's.
            if self.timed_out or (self._deadline is not None and self._deadline.expired):
                raise self._timeout()
            raise GuestTrap(f"guest failed: {error}")
        trap = self._take_trap()
        if trap is not None:
            self._raise_host_exception()
            if self.timed_out or trap.trap_code == wasmtime.TrapCode.INTERRUPT:
                self.timed_out = True
                raise self._timeout()
            raise GuestTrap(f"guest trapped: {_trap_cause(trap.message)}")

    def _take_trap(self) -> wasmtime.Trap | None:
        """The trap the last call left, if any; the slot is made ready for the next."""
        address = self._trap.value
        if not address:
            return None
        self._trap.value = None
        return wasmtime.Trap._from_ptr(ctypes.cast(address, POINTER(ffi.wasm_trap_t)))

    def _arm_deadline(self) -> None:
        assert self._deadline is not None
        self._deadline.arm()

    def _end_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.end()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _INSTANCES.pop(self._key, None)
        self._memory = None
        if self._store is not None:
            self._store.close()  # frees the deadline's slot
            self._store = None
        self._ctx = None
        self._deadline = None


def _error_at(address: int) -> wasmtime.WasmtimeError:
    """wasmtime's error at `address` as wasmtime-py's exception, which owns it."""
    return wasmtime.WasmtimeError._from_ptr(ctypes.cast(address, POINTER(ffi.wasmtime_error_t)))


def _outside() -> GuestTrap:
    return GuestTrap("response extends past linear memory")


def _trap_cause(message: str) -> str:
    """Why it trapped (`wasm trap: ...`, or what follows `Caused by:`), with the
    innermost frame of wasmtime's backtrace when it has a name, not the backtrace."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    frame = next((line.split(" - ", 1)[1] for line in lines
                  if " - " in line and "!" in line and "<wasm function" not in line), "")
    where = f" (in {frame})" if frame else ""
    for line in lines:
        if line.startswith("wasm trap:"):
            return line.removeprefix("wasm trap:").strip() + where
    if "Caused by:" in lines:
        cause = lines[lines.index("Caused by:") + 1 :]
        if cause:
            return "; ".join(cause) + where
    return (lines[-1] if lines else "trap") + where


def _instantiation_error(exc: Exception, deadline: _Deadline | None) -> InvocationError:
    if ((isinstance(exc, wasmtime.Trap) and exc.trap_code == wasmtime.TrapCode.INTERRUPT)
            or (deadline is not None and deadline.expired)):
        return GuestTimeout("instantiation exceeded max_execution_ms")
    return GuestTrap(f"instantiation failed: {_trap_cause(str(exc))}")


class _EdgeInstance(EdgeProgram, _BaseInstance):
    """An `edge-v1` instance on wasmtime: the program's hooks as raw C calls, and all
    of them in one where `_edgecall.c` was built (`_exchange`)."""

    _plan: bytes | None = None
    # Its calls made in C: not where they must be driven as futures (the subclass).
    _calls_in_c = True

    def __init__(self, module: WasmtimeModule) -> None:
        super().__init__(module)
        self._args = (_RawArgs * 10)()
        self._start_instance()
        if (_EXCHANGE is not None and self._calls_in_c and self._memory is not None
                and self._ctx is not None and self._alloc is not None
                and self._handle is not None
                and isinstance(self._deadline, epoch_timer.Slot)):
            # Addresses read off the ctypes pointers (`addressof` of what they point to:
            # a tenth of a cast's cost, and this is every instance's start).
            self._plan = _PLAN.pack(
                self._key, ctypes.addressof(self._memory),
                ctypes.addressof(self._alloc.contents), ctypes.addressof(self._handle.contents),
                0 if self._dealloc is None else ctypes.addressof(self._dealloc.contents),
                *self._deadline.addresses())

    def _exchange(self, parts: tuple[bytes, ...], total: int, cap: int) -> bytes:
        if self._plan is None:
            return super()._exchange(parts, total, cap)
        out = _EXCHANGE(self._plan, *parts, cap)
        if out.__class__ is bytes:
            return out
        if out is None:
            return super()._exchange(parts, total, cap)
        return self._resume(*out, total=total, cap=cap)

    def _resume(self, stage: int, ptr: int, written: int, err: int, trap: int, *,
                total: int, cap: int) -> bytes:
        """Where `_edgecall.exchange` stopped: its failure raised as the hooks raise it,
        the buffer handed back as `EdgeProgram._exchange` hands it back."""
        if trap:
            self._trap.value = trap
        if stage == _edgecall.UNUSABLE:
            raise unusable_alloc(total, ptr)
        after_handle = stage in (_edgecall.HANDLE, _edgecall.RESULT, _edgecall.OUTSIDE)
        try:
            if stage == _edgecall.RESULT:
                check_handle_result(written, cap)
            elif stage == _edgecall.OUTSIDE:
                raise _outside()
            self._outcome(err or None)  # ALLOC, HANDLE, DEALLOC: raises what went wrong
        except InvocationError as exc:
            if after_handle:
                self._hand_back(exc, ptr, total)  # under the deadline the C left armed
            raise
        finally:
            if after_handle:
                self._end_deadline()
        raise AssertionError(f"_edgecall stopped at {stage} with nothing wrong")

    def close(self) -> None:
        self._plan = None  # its addresses are the store's
        super().close()

    def _instantiate_guest(self) -> None:
        spec = self._module.store_spec
        if spec is None:
            self._new_store(None, [])
            self._instantiate()
        else:
            self._open_native(spec)

    # The exports `_edgecall.instantiate` looked up (`_open_native`), None until then.
    _externs: ctypes.Array | None = None
    _found = 0

    def _open_native(self, spec: bytes) -> None:
        """`_new_store` and `_instantiate` in two C calls (`_edgecall.open_store`,
        `instantiate`), registered in `_INSTANCES` between them; the same store, the
        same instance, the same errors."""
        store, ctx, slot = _edgecall.open_store(spec)
        if not store:
            raise _instantiation_error(_error_at(ctx), None)
        self._store = _NativeStore(store)  # type: ignore[assignment]
        self._ctx, self._key = c_void_p(ctx), ctx
        _INSTANCES[ctx] = self
        module = self._module
        self._deadline = module.adopt_slot(slot)
        instance = self._raw_instance = ffi.wasmtime_instance_t()
        externs = (ffi.wasmtime_extern_t * len(_NATIVE_EXPORTS))()
        stage, future, err, found = _edgecall.instantiate(
            module.pre_address, ctx, module.suspends, ctypes.addressof(instance),
            ctypes.addressof(self._trap), self._error_address(), ctypes.addressof(externs),
            _EXTERN_SIZE, _EXTERN_OF, _EXTERN_FUNC, slot, module.limits.max_execution_ms)
        if stage == _edgecall.NOT_MADE or stage == _edgecall.INSTANTIATING:
            try:
                self._instantiated(err, future)
            except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
                raise _instantiation_error(exc, self._deadline) from exc
            # Made by driving its future here: the exports are looked up (and
            # `_initialize` run) as the Python steps do.
            self._bind_memory(self._lookup("memory"))
            return
        # Made, the exports looked up, `_initialize` (if any) run or under way.
        self._externs, self._found = externs, found
        self._bind_memory(self._looked_up("memory"))
        if stage != _edgecall.MADE:
            self._initialized(err, future)

    def _initialized(self, err: int, future: int) -> None:
        """`_initialize` failed in `_edgecall.instantiate`: raised as `_call_export`
        raises it (`future`: only a suspending instance's)."""
        assert not future
        self._outcome(err or None)
        raise AssertionError("_edgecall.instantiate: _initialize failed with nothing wrong")

    def _error_address(self) -> int:
        """Where an async call's error goes: none here (the suspending subclass's)."""
        return 0

    def _instantiated(self, err: int, future: int = 0) -> None:
        """After `_edgecall.instantiate`: its error or trap raised as wasmtime-py raises
        them (`future`: only a suspending instance's)."""
        assert not future
        if err:
            raise _error_at(err)
        trap = self._take_trap()
        if trap is not None:
            raise trap

    def _looked_up(self, name: str) -> ffi.wasmtime_extern_t | None:
        """The export `name` as `_edgecall.instantiate` found it, or None."""
        index = _NATIVE_EXPORTS[name]
        return self._externs[index] if self._found >> index & 1 else None  # type: ignore[index]

    def _export(self, name: str) -> ctypes._Pointer | None:
        if self._externs is None or name not in _NATIVE_EXPORTS:
            return super()._export(name)
        f = self._looked_up(name)
        return ctypes.pointer(f.of.func) if f is not None and f.kind == _EXTERN_FUNC else None

    def _allocate(self, size: int) -> int:
        args = self._args
        _I32.pack_into(args, 0, size)
        self._call(self._alloc, args, 1)
        return _I32.unpack_from(args)[0]

    def _copy_in(self, ptr: int, total: int, parts: tuple[bytes, ...], cap: int) -> int:
        base, size = self.memory_view()
        if ptr <= 0 or ptr + total > size:
            raise unusable_alloc(total, ptr)
        data = b"".join(parts)  # one copy into the guest instead of four C calls
        if data:
            _memmove(base + ptr, data, len(data))
        method, path, headers, body = parts
        p1 = ptr + len(method)
        p2 = p1 + len(path)
        p3 = p2 + len(headers)
        offset = p3 + len(body)
        _HANDLE_ARGS.pack_into(self._args, 0, ptr, p1 - ptr, p1, p2 - p1, p2, p3 - p2, p3,
                               offset - p3, offset, cap)
        return offset

    def _call_handle(self) -> int:
        self._call(self._handle, self._args, 10)
        return _I32.unpack_from(self._args)[0]

    def _copy_out(self, offset: int, written: int) -> bytes:
        base, size = self.memory_view()
        if offset + written <= size:
            return ctypes.string_at(base + offset, written)
        raise _outside()

    def _deallocate(self, ptr: int, total: int) -> None:
        if self._dealloc is not None:
            args = self._args
            _DEALLOC_ARGS.pack_into(args, 0, ptr, total)
            self._call(self._dealloc, args, 2)


class _SuspendingEdgeInstance(_EdgeInstance):
    """An `edge-v1` instance whose guest is suspended in its waiting host calls.

    Each call is a future polled until done (`_drive`); while the guest is suspended,
    the waiting call's work (`WaitingCall.run`) runs on the driver's stack: on a thread
    it blocks, in a green task it lets the event loop run. Everything else is the
    edge-v1 program of `_EdgeInstance`, its raw arguments copied to typed values.
    """

    _calls_in_c = False

    def __init__(self, module: WasmtimeModule) -> None:
        self._pending: WaitingCall | None = None
        self._pending_results: ctypes._Pointer | None = None
        self._values = (ffi.wasmtime_val_t * 10)()
        self._results = (ffi.wasmtime_val_t * 1)()
        # The error slot of the async calls (a `wasmtime_error_t *`), read as a plain
        # address: no cast per call.
        self._error = c_void_p()
        self._error_ref = byref(self._error)
        # Where `_edgecall.start` stopped, for `_call_handle` to go on from.
        self._started: tuple[int, int, int, int, int, int] | None = None
        super().__init__(module)
        self._start_plan: bytes | None = None
        if (_NATIVE_SETUP and self._memory is not None and self._alloc is not None
                and self._handle is not None):
            dealloc = 0 if self._dealloc is None else ctypes.addressof(self._dealloc.contents)
            self._start_plan = _ASYNC_PLAN.pack(
                self._key, ctypes.addressof(self._memory), ctypes.addressof(self._alloc.contents),
                ctypes.addressof(self._handle.contents), dealloc,
                ctypes.addressof(self._values), ctypes.addressof(self._results),
                ctypes.addressof(self._trap), ctypes.addressof(self._error),
                _VAL_SIZE, _VAL_OF, _I32_KIND)

    def _make_instance(self) -> wasmtime.Instance:
        instance = ffi.wasmtime_instance_t()
        assert self._ctx is not None
        self._drive(self._module.instantiate_async(self._ctx, instance, self._trap_ref,
                                                   self._error_ref))
        self._instantiated(0)
        return wasmtime.Instance._from_raw(instance)

    def close(self) -> None:
        self._start_plan = None  # its addresses are the store's
        super().close()

    def _enter(self, parts: tuple[bytes, ...], total: int, cap: int) -> tuple[int, int]:
        """`alloc`, the inputs copied in and `handle` started in one C call where it was
        built (`_edgecall.start`): `_call_handle` goes on from where it stopped."""
        plan = self._start_plan
        out = None if plan is None else _edgecall.start(plan, *parts, cap)
        if out is None:  # not built, or sizes `alloc` cannot take: the hooks say why
            return super()._enter(parts, total, cap)
        stage, value, ptr, offset, err, trap = out
        if stage in _STARTED:
            self._started = out
            return ptr, offset
        if stage == _edgecall.ALLOC_SUSPENDED:  # `alloc` waits: the hooks from its end
            ptr = self._finish(value, nresults=1)
            return ptr, self._copy_in(ptr, total, parts, cap)
        if trap:
            self._trap.value = trap
        if stage == _edgecall.UNUSABLE:
            raise unusable_alloc(total, ptr)
        self._outcome(err or None)  # ALLOC: raises what went wrong
        raise AssertionError(f"_edgecall.start stopped at {stage} with nothing wrong")

    def _call_handle(self) -> int:
        started, self._started = self._started, None
        if started is None:
            return super()._call_handle()
        stage, value, _ptr, _offset, err, trap = started
        if stage == _edgecall.HANDLED:
            return value
        if stage == _edgecall.SUSPENDED:
            return self._finish(value, nresults=1)
        if trap:
            self._trap.value = trap
        self._outcome(err or None)  # HANDLE: raises what went wrong
        raise AssertionError(f"_edgecall.start stopped at {stage} with nothing wrong")

    def _answer(self, ptr: int, total: int, offset: int, written: int, cap: int) -> bytes:
        """The response copied out and `dealloc` started in one C call where it was built
        (`_edgecall.answer`); where it stopped, the hooks go on as they would."""
        plan = self._start_plan
        if plan is None:
            return super()._answer(ptr, total, offset, written, cap)
        out = _edgecall.answer(plan, ptr, total, offset, written, cap)
        if out.__class__ is bytes:
            return out
        stage, value, response, err, trap = out
        if stage == _edgecall.DEALLOC_SUSPENDED:  # `dealloc` waits: driven to its end
            self._finish(value, nresults=0)
            return response
        if stage == _edgecall.DEALLOC:
            if trap:
                self._trap.value = trap
            self._outcome(err or None)  # raises what went wrong
            raise AssertionError("_edgecall.answer: dealloc failed with nothing wrong")
        # RESULT, OUTSIDE: raised, and the buffer handed back, as the hooks do
        return super()._answer(ptr, total, offset, written, cap)

    def _finish(self, future: int, *, nresults: int) -> int:
        """An async call `_edgecall.start` polled once and left suspended: driven to its
        end as `_call` drives one; its i32 result (`nresults`), else 0."""
        self._drive(future, polled=True)
        self._after_call()
        return self._results[0].of.i32 if nresults else 0

    def _after_call(self) -> None:
        self._outcome(self._take_error())
        if self.late_trap is not None:
            message, self.late_trap = self.late_trap, None
            raise GuestTrap(f"guest failed: {message}")

    def _take_error(self) -> int | None:
        """The error the last async call left (its address), if any; the slot is made
        ready for the next."""
        error = self._error.value
        if error:
            self._error.value = None
        return error

    def _error_address(self) -> int:
        return ctypes.addressof(self._error)

    def _initialized(self, err: int, future: int) -> None:
        if future:  # `_initialize` waits: driven to its end as `_call` drives a call
            self._finish(future, nresults=0)
        else:
            self._after_call()
            raise AssertionError("_edgecall.instantiate: _initialize failed with nothing wrong")

    def _instantiated(self, err: int, future: int = 0) -> None:
        if future:  # suspended in a waiting host call: driven as `_make_instance` drives it
            self._drive(future, polled=True)
        error = self._take_error()
        if error:
            raise _error_at(error)
        super()._instantiated(err)

    def _call(self, func: ctypes._Pointer, args: ctypes.Array, n: int) -> None:
        values = self._values
        if n:
            raw, typed = _TYPED_I32S[n]
            typed.pack_into(values, 0, *[x for v in raw.unpack_from(args)
                                         for x in (_I32_KIND, v)])
        nresults = 1 if func is self._alloc or func is self._handle else 0
        self._drive(_call_async(self._ctx, func, values, _SIZES[n], self._results,
                                _SIZES[nresults], self._trap_ref, self._error_ref))
        self._after_call()
        if nresults:
            _I32.pack_into(args, 0, self._results[0].of.i32)

    def _drive(self, future: int, *, polled: bool = False) -> None:
        """Poll the call until it is done, running each waiting call it is suspended in
        (`polled`: it was polled once already, and is suspended). A waiting call that
        fails (a timeout, the host's own exception) abandons the suspended guest: its
        future is deleted, and the failure ends the invocation, which closes the
        instance."""
        fut = c_void_p(future)
        try:
            while polled or not _poll(fut):
                polled = False
                pending = self._pending
                if pending is not None and not pending.done:
                    pending.run()
        finally:
            self._pending = None
            self._pending_results = None
            _future_delete(fut)


class _WagiInstance(WagiProgram, _BaseInstance):
    """A WAGI program: a fresh store per request, `_start` once, stdout is the response."""

    def __init__(self, module: WasmtimeModule) -> None:
        super().__init__(module)
        self._init_wagi()

    def _run_start(self, request: GuestRequest) -> int:
        self._new_store(request.body, request.cgi_env, request.argv)
        self._instantiate()
        start = self._export(request.entrypoint)
        if start is None:
            raise GuestTrap(f"module exports no function {request.entrypoint!r}")
        self._call_export(start)
        return 0


__all__ = ["WasmtimeEngine", "WasmtimeModule"]
