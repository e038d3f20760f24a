"""The wasmtime engine: wasmtime-py for setup, its raw C bindings on the hot path.

The high-level call API costs tens of microseconds per call; the unchecked raw
call with a reused argument array and `memmove` into linear memory costs a few.
Timeouts are epoch interruption, the epoch advanced by a POSIX timer in native code
(`epoch_timer`; a Python thread where there is none); memory is capped by the store
limiter; `edge` host functions are linked once per engine and find their invocation
through a thread-local, since a call runs on one thread.
"""

from __future__ import annotations

import ctypes
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

from edgefn.sandbox import epoch_timer, wasi_http
from edgefn.sandbox.abi import unusable_alloc
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
from edgefn.sandbox.hostcalls import EDGE_FUNCTIONS, F64, I32, Adapter
from edgefn.sandbox.options import WasmtimeOptions
from edgefn.sandbox.program import (
    EdgeProgram,
    HostCallFailed,
    InstanceBase,
    ProcExit,
    WagiProgram,
    guarded_host_call,
)
from edgefn.sandbox.wasminfo import ABI_EDGE_V1, PAGE_SIZE, ModuleInfo, validate_module

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
# Raw call arguments are 16-byte `wasmtime_val_raw_t`s whose i32 is the first four
# bytes: written and read with struct, no ctypes object is made per value.
_I32 = struct.Struct("<i")
_DEALLOC_ARGS = struct.Struct("<i12xi")
_HANDLE_ARGS = struct.Struct("<" + "i12x" * 9 + "i")
_INTERRUPT = ffi.wasmtime_trap_code_enum.WASMTIME_TRAP_CODE_INTERRUPT.value


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


class _ThreadTicker:
    """Advances the engine's epoch every `tick_ms` from a Python thread; deadlines are
    counted in ticks. Where there is no native timer (see `epoch_timer`), or when
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

    def stop(self) -> None:
        self._stop.set()
        with self._starting:
            if self._started:
                self._thread.join(timeout=1)


# How far past the end of a deadline the native timer stays armed: calls whose
# deadlines end within it take no lock, and a busy worker takes it about once per
# `_SLACK_S`.
_SLACK_S = 1.0
# How often the watchdog of an armed native timer looks whether it may disarm it.
_WATCH_S = 1.0
# An empty exported function `p`: calling it traps once the store's deadline is
# reached (wasmtime checks the epoch on function entry).
_PROBE_WASM = bytes.fromhex("0061736d0100000001040160000003020100070501017000000a040102000b")


class _NativeTicker:
    """Advances the engine's epoch from a POSIX timer (`epoch_timer`): no GIL per tick.

    The timer is armed only while a guest that asked for a deadline may be running.
    `_until` is a time until which it is known to stay armed. A call sets its
    deadline, then reads the clock: a deadline that ends before `_until` needs nothing
    more (a flag read and a clock read, no lock, no system call). Otherwise, under the
    lock, `_until` moves past that deadline's end by `_SLACK_S`, the timer is armed if
    it was not, and a watchdog thread is started with it.

    The watchdog wakes every `_WATCH_S` and never disarms under a running guest:
    - once the clock passes `_until` (no call has asked for more since), it sets a
      probe store's deadline as long as the longest any call may have set since the
      timer was armed, and notes the count of extensions;
    - it disarms only when the probe's deadline has passed in ticks (a call to an
      empty guest function traps) and no call has extended `_until` since. Every
      deadline set before the probe's was set ends no later than the probe's; a call
      that set its deadline after that read the clock after `_until` too, so it
      extended it and the watchdog starts over. Ticks, not the clock, decide: when
      notifications are late or lost (an overloaded or throttled process) deadlines
      end late, and the timer stays armed until they have.
    """

    def __init__(self, engine: wasmtime.Engine, tick_ms: float) -> None:
        self.tick_ms = tick_ms
        self._interval = tick_ms / 1000
        self._engine = engine
        self._probe_module: wasmtime.Module | None = None
        self._forget()
        _after_fork(self)
        # Before the engine is freed, and at interpreter exit before anything is torn
        # down: the timer's thread must never call into a freed engine.
        self._finalizer = weakref.finalize(self, _NativeTicker._shut, self._state)

    def _forget(self) -> None:
        """No timer (a new ticker, or a forked child: POSIX timers are not inherited)."""
        self._pid = os.getpid()
        self._until = -math.inf
        self._longest = 0  # ticks: the longest deadline set since the timer was armed
        self._paused = False
        self._extensions = 0
        self._lock = threading.Lock()
        # What the finalizer needs, without a reference to the ticker. The engine too:
        # the ticker may be freed while the finalizer runs (its watchdog was the last
        # to hold it), and the engine must outlive the timer.
        self._state: dict[str, Any] = {
            "timer": None, "stop": threading.Event(), "watchdog": None, "fallback": None,
            "lock": self._lock, "engine": self._engine}

    @staticmethod
    def _shut(state: dict[str, Any]) -> None:
        state["stop"].set()
        if state["fallback"] is not None:
            state["fallback"].stop()
        watchdog = state["watchdog"]
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(timeout=2 * _WATCH_S)
        with state["lock"]:  # no call arms it meanwhile (they see `stop` once in)
            state["watchdog"] = None
            timer, state["timer"] = state["timer"], None
            if timer is not None:
                timer.delete()

    @property
    def armed(self) -> bool:
        """Whether the kernel's timer is armed (not only whether it should be)."""
        timer = self._state["timer"]
        return timer is not None and timer.armed

    def lag(self) -> int:
        """Always 0: the kernel counts the ticks. A late notification makes a deadline
        end later, never earlier."""
        return 0

    def ticks_for(self, ms: int) -> int:
        # One extra tick: the deadline is never early, at most one tick late.
        return math.ceil(ms / self.tick_ms) + 1

    def arm(self, ctx: ctypes._Pointer | None, ticks: int) -> None:
        """Set the store's deadline `ticks` from now, and keep the timer armed for it.

        The deadline is set before the clock is read: see the class docstring."""
        _set_epoch_deadline(ctx, ctypes.c_uint64(ticks))
        if time.monotonic() + ticks * self._interval > self._until:
            self._extend(ctx, ticks)

    def _extend(self, ctx: ctypes._Pointer | None, ticks: int) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._forget()  # a child forked without the hook
                _NativeTicker._rebind(self)
            state = self._state
            if state["stop"].is_set():
                return  # closed: as with the thread ticker, nothing ticks any more
            now = time.monotonic()
            end = now + ticks * self._interval
            if end <= self._until:
                return
            self._until = end + _SLACK_S
            self._longest = max(self._longest, ticks + math.ceil(_SLACK_S / self._interval) + 1)
            self._extensions += 1
            if state["timer"] is None:
                timer = epoch_timer.EpochTimer.create(
                    ctypes.cast(self._engine.ptr(), c_void_p).value or 0, self._interval)
                if timer is None:  # timer_create failed (out of timers): tick from Python
                    self._fall_back(ctx, ticks)
                    return
                state["timer"] = timer
            if state["watchdog"] is None:
                state["timer"].arm()
                watchdog = threading.Thread(
                    target=self._watch, name="edgefn-epoch-watch", daemon=True)
                state["watchdog"] = watchdog
                watchdog.start()

    def _pause(self) -> None:
        """Before a fork: glibc's timer thread holds a lock of its own while it starts
        a notification's thread, and a child forked meanwhile would hang in its first
        `timer_create`. So the timer is disarmed and its last notification waited out,
        and nothing arms it again (the lock is held) until the fork is done."""
        self._lock.acquire()
        timer = self._state["timer"]
        self._paused = timer is not None and self._state["watchdog"] is not None
        if self._paused:
            timer.disarm()
            time.sleep(max(0.005, 3 * self._interval))

    def _resume(self) -> None:
        if self._paused:
            self._state["timer"].arm()
        self._lock.release()

    def _fall_back(self, ctx: ctypes._Pointer | None, ticks: int) -> None:
        """From now on, a ticker thread: its methods shadow these."""
        thread = _ThreadTicker(self._engine, self.tick_ms)
        self.arm = thread.arm  # type: ignore[method-assign]
        self.lag = thread.lag  # type: ignore[method-assign]
        self._state["fallback"] = thread
        self._until = math.inf
        thread.ticks_for(0)  # starts it
        thread.arm(ctx, ticks)

    @staticmethod
    def _rebind(ticker: _NativeTicker) -> None:
        ticker._finalizer.detach()
        ticker._finalizer = weakref.finalize(ticker, _NativeTicker._shut, ticker._state)

    def _watch(self) -> None:
        state = self._state
        probe: tuple[int, wasmtime.Store, wasmtime.Func] | None = None
        if self._probe_module is None:  # compiled once, not under the lock calls may wait on
            self._probe_module = wasmtime.Module(self._engine, _PROBE_WASM)
        while not state["stop"].wait(_WATCH_S):
            with self._lock:
                if time.monotonic() <= self._until:
                    probe = None
                    continue
                if probe is None or probe[0] != self._extensions:
                    probe = self._probe(self._extensions, self._longest)
                    continue
                if not self._reached(probe):
                    continue
                state["timer"].disarm()
                state["watchdog"] = None
                self._longest = 0
                return

    def _probe(self, extensions: int, ticks: int) -> tuple[int, wasmtime.Store, wasmtime.Func]:
        assert self._probe_module is not None
        store = wasmtime.Store(self._engine)
        store.set_epoch_deadline(ticks)
        func = wasmtime.Instance(store, self._probe_module, []).exports(store)["p"]
        assert isinstance(func, wasmtime.Func)
        return extensions, store, func

    @staticmethod
    def _reached(probe: tuple[int, wasmtime.Store, wasmtime.Func]) -> bool:
        _, store, func = probe
        try:
            func(store)
        except wasmtime.Trap:
            return True
        return False

    def stop(self) -> None:
        self._finalizer()


_Ticker = _ThreadTicker | _NativeTicker


def _after_fork(ticker: _Ticker) -> None:
    """Make a forked child forget the parent's ticking: it has neither its threads nor
    its timer, and starts its own with its first deadline. A native timer is paused
    across the fork: see `_NativeTicker._pause`."""
    ref = weakref.ref(ticker)

    def before() -> None:
        t = ref()
        if isinstance(t, _NativeTicker):
            t._pause()

    def in_parent() -> None:
        t = ref()
        if isinstance(t, _NativeTicker):
            t._resume()

    def in_child() -> None:
        t = ref()
        if t is not None:
            t._forget()
            if isinstance(t, _NativeTicker):
                _NativeTicker._rebind(t)

    os.register_at_fork(before=before, after_in_parent=in_parent, after_in_child=in_child)


def _make_ticker(engine: wasmtime.Engine, options: WasmtimeOptions) -> _Ticker:
    if options.native_epoch_timer and epoch_timer.available():
        return _NativeTicker(engine, options.epoch_tick_ms)
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
        self._linker = wasmtime.Linker(self._engine)
        self._linker.define_wasi()
        self._callbacks: list[object] = []
        for fname, (params, results, adapter) in EDGE_FUNCTIONS.items():
            self._define_host_function(fname, params, results, adapter)
        for fname, (params, results, adapter) in wasi_http.FUNCTIONS.items():
            self._define_host_function(fname, params, results, adapter, wasi_http.MODULE)

    def _define_host_function(
        self, fname: str, params: tuple[str, ...], results: tuple[str, ...], adapter: Adapter,
        module_name: str = "edge",
    ) -> None:
        functype = wasmtime.FuncType([_VALTYPES[t] for t in params],
                                     [_VALTYPES[t] for t in results])
        cb = ffi.wasmtime_func_unchecked_callback_t(
            _make_callback(fname, params, adapter, bool(results))
        )
        self._callbacks.append(cb)  # the C side keeps only a pointer
        module, name = module_name.encode(), fname.encode()
        err = ffi.wasmtime_linker_define_func_unchecked(
            self._linker.ptr(),
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
            pre = self._linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as exc:
            raise InvalidModule(f"module does not compile: {exc}") from exc
        return WasmtimeModule(self, module, pre, info, limits, wasi, len(wasm))

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
            "epoch_tick_ms": str(self._ticker.tick_ms),
            "epoch_ticker": "posix timer" if isinstance(self._ticker, _NativeTicker) else "thread",
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
    ) -> None:
        super().__init__(info, limits, wasi, wasm_size)
        self._engine = engine
        self._module = module
        self._pre = pre
        self._preopens = wasi.preopens()

    def instantiate(self) -> Instance:
        if self.abi == ABI_EDGE_V1:
            return _EdgeInstance(self)
        return _WagiInstance(self)

    def new_store(
        self, owner: _BaseInstance, stdin: bytes | None, extra_env: list[tuple[str, str]],
        argv: list[str] | None = None,
    ) -> tuple[wasmtime.Store, int]:
        """A store with this module's limits and WASI, registered for `owner`; returns
        it with its key in `_INSTANCES`, which `owner` removes when it closes."""
        store = wasmtime.Store(self._engine._engine)
        key = ctypes.cast(store._context(), c_void_p).value or 0
        _INSTANCES[key] = owner
        # A new store's epoch deadline is "now": arm it before any guest code runs.
        ticker = self._engine._ticker
        ticker.arm(store._context(), ticker.ticks_for(self.limits.max_execution_ms))
        memory_bytes = self.limits.memory_pages * PAGE_SIZE
        ffi.wasmtime_store_limiter(store.ptr(), memory_bytes, _MAX_TABLE_ELEMENTS, 1, 1, 1)
        config = wasmtime.WasiConfig()
        config.env = self.wasi.environ(extra_env)
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
        return store, key

    def instantiate_in(self, store: wasmtime.Store) -> wasmtime.Instance:
        return self._pre.instantiate(store)

    def close(self) -> None:
        self._pre = None  # type: ignore[assignment]
        self._module = None  # type: ignore[assignment]


class _BaseInstance(InstanceBase):
    """What both ABIs share on wasmtime: the store, raw calls, trap translation."""

    def __init__(self, module: WasmtimeModule) -> None:
        self._module = module
        self._init_state(module.limits)
        self._store: wasmtime.Store | None = None
        self._ctx: ctypes._Pointer | None = None
        self._memory: ffi.wasmtime_memory_t | None = None
        self._trap = POINTER(ffi.wasm_trap_t)()
        self._trap_ref = byref(self._trap)
        self._key = 0
        self._ticker = module._engine._ticker
        self._ticks = self._ticker.ticks_for(self.limits.max_execution_ms)

    def _new_store(self, stdin: bytes | None, extra_env: list[tuple[str, str]],
                   argv: list[str] | None = None) -> None:
        self._store, self._key = self._module.new_store(self, stdin, extra_env, argv)
        self._ctx = self._store._context()

    def _instantiate(self) -> None:
        """Instantiate in the store made by `_new_store` and bind the exports."""
        assert self._store is not None
        try:
            self._instance = self._module.instantiate_in(self._store)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise _instantiation_error(exc) from exc
        mem = self._lookup("memory")
        if mem is not None and mem.kind == _EXTERN_MEMORY:
            self._memory = mem.of.memory  # a view into `mem`, which it keeps alive
            self._memory_ref = byref(self._memory)
            self._view_base, self._view_size = 0, -1

    def _lookup(self, name: str) -> ffi.wasmtime_extern_t | None:
        """The export `name`, looked up by name: the few an ABI uses, rather than
        wasmtime-py's map of every export wrapped in Python objects (a third of
        the cost of instantiating a small module)."""
        item = ffi.wasmtime_extern_t()
        raw = name.encode()
        found = _raw.wasmtime_instance_export_get(
            self._ctx, byref(self._instance._instance), raw, len(raw), byref(item))
        return item if found else None

    def _export(self, name: str) -> ctypes._Pointer | None:
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
        if err:
            error_ptr = ctypes.cast(err, POINTER(ffi.wasmtime_error_t))
            error = wasmtime.WasmtimeError._from_ptr(error_ptr)
            if isinstance(error, wasmtime.ExitTrap):
                raise ProcExit(error.code)
            self._raise_host_exception()
            if self.timed_out:  # a host call's trap reaches here as an error, not a trap
                raise self._timeout()
            raise GuestTrap(f"guest failed: {error}")
        if self._trap:
            trap = wasmtime.Trap._from_ptr(self._trap)
            self._trap = POINTER(ffi.wasm_trap_t)()
            self._trap_ref = byref(self._trap)
            self._raise_host_exception()
            if self.timed_out or trap.trap_code == wasmtime.TrapCode.INTERRUPT:
                self.timed_out = True
                raise self._timeout()
            raise GuestTrap(f"guest trapped: {_trap_cause(trap.message)}")

    def _arm_deadline(self) -> None:
        self._ticker.arm(self._ctx, self._ticks)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        _INSTANCES.pop(self._key, None)
        self._memory = None
        if self._store is not None:
            self._store.close()
            self._store = None
        self._ctx = None


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


def _instantiation_error(exc: Exception) -> InvocationError:
    if isinstance(exc, wasmtime.Trap) and exc.trap_code == wasmtime.TrapCode.INTERRUPT:
        return GuestTimeout("instantiation exceeded max_execution_ms")
    return GuestTrap(f"instantiation failed: {_trap_cause(str(exc))}")


class _EdgeInstance(EdgeProgram, _BaseInstance):
    """An `edge-v1` instance on wasmtime: the program's hooks as raw C calls."""

    def __init__(self, module: WasmtimeModule) -> None:
        super().__init__(module)
        self._args = (_RawArgs * 10)()
        self._start_instance()

    def _instantiate_guest(self) -> None:
        self._new_store(None, [])
        self._instantiate()

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
        raise GuestTrap("response extends past linear memory")

    def _deallocate(self, ptr: int, total: int) -> None:
        if self._dealloc is not None:
            args = self._args
            _DEALLOC_ARGS.pack_into(args, 0, ptr, total)
            self._call(self._dealloc, args, 2)


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
