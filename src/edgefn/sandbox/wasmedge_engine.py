"""The WasmEdge engine: WasmEdge's C API through ctypes, behind the wasmtime engine's interface.

Every instance owns an executor, a store and a WASI module, so stopping one call
stops that instance only. Calls are synchronous (`WasmEdge_ExecutorInvoke`); one
watchdog thread per engine stops a call past its deadline (504) through its
executor's stop flag. Where the library has its LLVM compiler, modules are compiled
ahead of time and their calls run on a stack with a guard at least as large as the
module's largest frame and an alternate signal stack (`_nativestack`): the calling
thread's when it can take them, else a call thread's. So a guest overflowing its
native stack traps instead of killing the process. The `edge` and stdio host
modules are built once per engine and registered into every store; a host call
finds its instance through the calling frame's module instance. See docs/engines.md.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import logging
import math
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from ctypes import byref, c_char_p, c_uint64, c_void_p
from pathlib import Path
from typing import Any, TypeVar

from edgefn import native
from edgefn.sandbox import _nativestack as nativestack
from edgefn.sandbox import _wasmedge_ffi as ffi
from edgefn.sandbox import _wasmedge_wasi as wasi_stdio
from edgefn.sandbox import program, wasi_http
from edgefn.sandbox.abi import check_handle_result, unusable_alloc
from edgefn.sandbox.compilecache import CompileCache
from edgefn.sandbox.engine import (
    GuestRequest,
    Host,
    Instance,
    Limits,
    ModuleFacts,
    WasiOptions,
)
from edgefn.sandbox.enginetag import engine_tag
from edgefn.sandbox.errors import (
    EngineUnavailable,
    GuestTrap,
    InvalidModule,
    InvocationError,
    PrecompiledRefused,
)
from edgefn.sandbox.hostcalls import EDGE_FUNCTIONS, F64, I32, Adapter
from edgefn.sandbox.options import WasmEdgeOptions
from edgefn.sandbox.wasminfo import ABI_EDGE_V1, PAGE_SIZE, ModuleInfo, validate_module

log = logging.getLogger("edgefn.sandbox")

AOT_ENV = "EDGEFN_WASMEDGE_AOT"
_T = TypeVar("_T")

# The code of the user-level WasmEdge_Result a host function fails with; what
# happened (trap message, timeout, exception) is kept on the instance and turned
# into the right error after the call.
_HOST_FAILED = 1

_MAX_ARGS = 10

# WasmEdge's interpreter keeps wasm frames on the heap and sets no depth limit, so
# unbounded recursion grows the process by hundreds of MiB a second instead of
# trapping. The watchdog stops an interpreted call during which the process grew by
# more than this, reported as the stack-exhaustion trap wasmtime gives; so is one
# that reaches its deadline having grown the process by more than its linear memory
# and `_GROWTH_SLACK` with no other interpreted call beside it (a recursion starved
# of CPU, not a loop).
_RUNAWAY_BYTES = 64 << 20
_GROWTH_SLACK = 16 << 20
# How often the watchdog looks at the running calls: a deadline lands at most this late.
WATCH_TICK_S = 0.002
# This often, the fault handlers AOT code needs are checked still in place; also the
# longest the watchdog sleeps.
_HANDLER_CHECK_S = 0.1
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

# Why the watchdog stopped a call.
_DEADLINE = "deadline"
_RUNAWAY = "runaway"
_STACK_EXHAUSTED = "guest trapped: call stack exhausted"

_call_ids = itertools.count(1)
# Argument counts as the unchecked call passes them.
_COUNTS = [ctypes.c_uint32(n) for n in range(_MAX_ARGS + 1)]


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def _ensure_stdio_fds() -> None:
    """Keep fds 0-2 open, so no file a guest opens can take the number of a stdio stream.

    The stdio host functions recognise the process's stdin, stdout and stderr by their
    native fd (see `_wasmedge_wasi`); a closed one would be reused by the next open().
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


class _Memory:
    """`GuestMemory` over a WasmEdge memory instance; WasmEdge checks every bound."""

    __slots__ = ("_base", "_lib", "_mem", "_pages", "_ref", "_size")

    def __init__(self, lib: ffi.Lib, mem: int | None) -> None:
        self._lib = lib
        self._mem = mem
        self._ref = c_void_p(mem or 0)
        self._pages = lib.memory_pages_unchecked
        self._base = 0
        self._size = -1

    def view(self) -> tuple[int, int]:
        """Base address and size of the memory, valid until the guest runs again.

        The base is looked up again only when the size changed: one C call, not two,
        on the hot path."""
        size = self._pages(self._ref) * PAGE_SIZE if self._mem else 0
        if size != self._size:
            self._base = int(self._lib.MemoryInstanceGetPointer(self._mem, 0, size) or 0)
            self._size = size
        return self._base, size

    def _address(self, ptr: int, length: int) -> int:
        if not self._mem:
            raise IndexError("module exports no memory")
        if ptr < 0 or length < 0 or ptr + length > 0xFFFFFFFF:
            raise IndexError("guest buffer out of bounds")
        address = self._lib.MemoryInstanceGetPointer(self._mem, ptr, length)
        if not address:
            raise IndexError("guest buffer out of bounds")
        return int(address)

    def contains(self, ptr: int, length: int) -> bool:
        try:
            self._address(ptr, length)
        except IndexError:
            return False
        return True

    def read(self, ptr: int, length: int) -> bytes:
        if length == 0:
            self._address(ptr, 0)
            return b""
        return ctypes.string_at(self._address(ptr, length), length)

    def write(self, ptr: int, data: bytes) -> None:
        if data:
            ctypes.memmove(self._address(ptr, len(data)), data, len(data))

    @property
    def size(self) -> int:
        # The unchecked call that keeps the GIL: read after every call (the pool's
        # memory budget), it costs no GIL hand-off.
        return int(self._pages(self._ref)) * PAGE_SIZE if self._mem else 0


def _check(lib: ffi.Lib, result: int, what: str) -> None:
    if not ffi.result_ok(result):
        raise InvalidModule(f"{what}: {lib.ResultGetMessage(result).decode()}")


class _HostModules:
    """The `edge` and `edgefn_wasi` modules: built once, registered into every store."""

    def __init__(self, lib: ffi.Lib, instances: dict[int, _BaseInstance]) -> None:
        self._lib = lib
        self._instances = instances
        self._callbacks: list[object] = []  # the C side keeps only pointers
        self.modules: list[int] = []
        # A function that takes arguments: invoked without any, it fails at once, and
        # the handle of that invocation can stop its executor (see `_BaseInstance._stop`).
        self.stop_func = 0
        edge = self._module(b"edge")
        for name, (params, results, adapter) in EDGE_FUNCTIONS.items():
            cb = self._edge_callback(name, params, adapter, bool(results))
            func = self._add(edge, name, params, results, cb)
            if params and not self.stop_func:
                self.stop_func = func
        http = self._module(wasi_http.MODULE.encode())
        for name, (params, results, adapter) in wasi_http.FUNCTIONS.items():
            self._add(http, name, params, results,
                      self._edge_callback(name, params, adapter, bool(results)))
        stdio = self._module(wasi_stdio.STDIO_MODULE.encode())
        for name, (nparams, _) in wasi_stdio.HOST_FUNCTIONS.items():
            self._add(stdio, name, (I32,) * nparams, (I32,), self._stdio_callback(name, nparams))

    def _module(self, name: bytes) -> int:
        module = self._lib.ModuleInstanceCreate(ffi.wrap_string(name))
        if not module:
            raise EngineUnavailable("WasmEdge could not create a host module")
        self.modules.append(module)
        return int(module)

    def _add(
        self,
        module: int,
        name: str,
        params: tuple[str, ...],
        results: tuple[str, ...],
        callback: Callable[..., int],
    ) -> int:
        func = _host_function(self._lib, params, results, callback, self._callbacks)
        raw = name.encode()
        self._lib.ModuleInstanceAddFunction(module, ffi.wrap_string(raw), func)  # module owns it
        return func

    def _instance(self, frame: int) -> _BaseInstance | None:
        return self._instances.get(self._lib.CallingFrameGetModuleInstance(frame) or 0)

    def _edge_callback(
        self, name: str, params: tuple[str, ...], adapter: Adapter, has_result: bool
    ) -> Callable[..., int]:
        lib = self._lib
        decoders = [ffi.get_i32 if t == I32 else ffi.get_f64 for t in params]

        def callback(data: int, frame: int, args: ctypes.Array, rets: ctypes.Array) -> int:
            # The instance is found through the calling frame, the memory is the frame's.
            inst = self._instance(frame)
            if _stack_short(frame):
                if inst is not None:
                    inst.trap_message = _STACK_EXHAUSTED
                return ffi.user_error(_HOST_FAILED)
            values = [decode(args[i]) for i, decode in enumerate(decoders)]
            mem = _Memory(lib, lib.CallingFrameGetMemoryInstance(frame, 0))
            try:
                result = program.guarded_host_call(inst, name, adapter, mem, values)
            except program.HostCallFailed as exc:
                if inst is not None:
                    inst.trap_message = f"guest trapped: {exc}"
                return ffi.user_error(_HOST_FAILED)
            if has_result:
                ffi.set_i32(rets[0], int(result or 0), lib.i32)
            return 0

        return callback

    def _stdio_callback(self, name: str, nparams: int) -> Callable[..., int]:
        lib = self._lib

        def callback(data: int, frame: int, args: ctypes.Array, rets: ctypes.Array) -> int:
            inst = self._instance(frame)
            if inst is None:
                return ffi.user_error(_HOST_FAILED)
            if _stack_short(frame):
                inst.trap_message = _STACK_EXHAUSTED
                return ffi.user_error(_HOST_FAILED)
            try:
                values = [ffi.get_i32(args[i]) for i in range(nparams)]
                mem = _Memory(lib, lib.CallingFrameGetMemoryInstance(frame, 0))
                errno = wasi_stdio.call(name, mem, inst, values)
            except BaseException as exc:
                inst.host_exception = exc
                return ffi.user_error(_HOST_FAILED)
            ffi.set_i32(rets[0], errno, lib.i32)
            return 0

        return callback

    def close(self) -> None:
        for module in self.modules:
            self._lib.ModuleInstanceDelete(module)
        self.modules.clear()


def _host_function(
    lib: ffi.Lib,
    params: tuple[str, ...],
    results: tuple[str, ...],
    callback: Callable[..., int],
    keep: list[object],
) -> int:
    """A host function instance calling `callback`; its C callback is kept in `keep`."""
    kinds = {I32: lib.i32, F64: lib.f64}
    ptypes = (c_uint64 * max(1, len(params)))(*(kinds[t] for t in params))
    rtypes = (c_uint64 * max(1, len(results)))(*(kinds[t] for t in results))
    functype = lib.FunctionTypeCreate(ptypes, len(params), rtypes, len(results))
    host_func = ffi.HostFunc(callback)
    keep.append(host_func)
    try:
        func = lib.FunctionInstanceCreate(functype, host_func, None, 0)
    finally:
        lib.FunctionTypeDelete(functype)  # the function instance keeps a copy
    if not func:
        raise EngineUnavailable("WasmEdge could not create a host function")
    return int(func)


def _stack_short(frame: int) -> bool:
    """On a call thread: too little stack is left to run Python code for a host call.

    The calling frame lives on the stack of the call that made it, so its address
    says how deep the guest's native code has gone.
    """
    left = nativestack.stack_left(frame)
    return left is not None and left < nativestack.HOST_CALL_RESERVE


# (module (import "edgefn_keeper" "park" (func)) (func (export "run") call 0))
_KEEPER_WASM = bytes.fromhex(
    "0061736d010000000104016000000216010d65646765666e5f6b6565706572047061726b"
    "0000030201000707010372756e00010a0601040010000b"
)
_keeper_lock = threading.Lock()
_keeper: dict[str, object] = {}


def _keep_fault_handlers(lib: ffi.Lib, aot_code: bytes) -> nativestack.Handlers:
    """Make WasmEdge's fault handlers permanent and let them run on a signal stack.

    WasmEdge installs its SIGSEGV/SIGBUS/SIGFPE handlers (without `SA_ONSTACK`) when
    the first call into AOT code starts, and resets them to the default when the
    last one ends. One call is parked for the life of the process (`aot_code`, the
    keeper module compiled ahead of time, calls a host function that never returns),
    so they are installed once; `SA_ONSTACK` is then added to them, and the call
    threads' alternate stacks catch a native stack overflow. Once per process; the
    keeper's contexts are never freed.
    """
    with _keeper_lock:
        if "installed" in _keeper:
            return _keeper["installed"]  # type: ignore[return-value]  # set below, once
        entered = threading.Event()
        forever = threading.Event()

        def park(data: int, frame: int, args: ctypes.Array, rets: ctypes.Array) -> int:
            entered.set()
            forever.wait()
            return 0

        keep: list[object] = [forever]
        conf = lib.ConfigureCreate()
        loader, validator = lib.LoaderCreate(conf), lib.ValidatorCreate(conf)
        ast = c_void_p()
        _check(lib, lib.LoaderParseFromBuffer(loader, byref(ast), aot_code, len(aot_code)),
               "the fault keeper does not load")
        _check(lib, lib.ValidatorValidate(validator, ast), "the fault keeper does not validate")
        host = lib.ModuleInstanceCreate(ffi.wrap_string(b"edgefn_keeper"))
        func = _host_function(lib, (), (), park, keep)
        lib.ModuleInstanceAddFunction(host, ffi.wrap_string(b"park"), func)
        executor, store = lib.ExecutorCreate(conf, None), lib.StoreCreate()
        _check(lib, lib.ExecutorRegisterImport(executor, store, host), "the fault keeper")
        guest = c_void_p()
        _check(lib, lib.ExecutorInstantiate(executor, byref(guest), store, ast),
               "the fault keeper does not instantiate")
        run = lib.ModuleInstanceFindFunction(guest, ffi.wrap_string(b"run"))
        thread = threading.Thread(
            target=lib.ExecutorInvoke, args=(executor, run, None, 0, None, 0),
            name="edgefn-wasmedge-fault-keeper", daemon=True,
        )
        thread.start()
        if not entered.wait(10):
            raise EngineUnavailable("the WasmEdge fault keeper did not start")
        installed = nativestack.fault_handlers_on_alt_stack()
        if {sig for sig, _ in installed} != {int(s) for s in nativestack.FAULT_SIGNALS}:
            raise EngineUnavailable("WasmEdge installed no fault handlers for AOT code")
        _keeper.update(installed=installed, keep=(keep, thread, conf, loader, validator, ast,
                                                  host, executor, store, guest))
        return installed


class _Watchdog:
    """One thread per engine that stops the calls that must end: past their deadline,
    or, interpreted, growing the process without bound (runaway recursion).

    A call registers in `running` for its duration, then says when it is due
    (`due`); the thread looks at them all every tick (`WATCH_TICK_S`) while an
    interpreted call runs, whose growth it follows (one that starts wakes it), and
    otherwise sleeps until the earliest deadline (at most `_HANDLER_CHECK_S`), woken
    by a call due earlier. A
    worker's short AOT calls then cost it a few wake-ups a second, not one every
    tick, each of which took the GIL from the calls. Stopping one sets its
    executor's stop flag, which the interpreter and interruptible AOT code check on
    every branch and call.
    """

    def __init__(self, fault_handlers: nativestack.Handlers) -> None:
        self.running: dict[int, _BaseInstance] = {}
        self._fault_handlers = fault_handlers
        self._stop = False
        self._wake = threading.Event()
        # When the thread looks next: a call due before it wakes the thread. Infinite
        # while it reads the running calls, so that one it did not see wakes it.
        self._next = 0.0
        self._thread = threading.Thread(target=self._run, name="edgefn-wasmedge-watchdog",
                                        daemon=True)
        self._thread.start()

    def due(self, deadline: float, interpreted: bool) -> None:
        """A call registered in `running` ends by `deadline`; an interpreted one is
        looked at within a tick, since its growth is followed from its start."""
        if interpreted:
            deadline = min(deadline, time.monotonic() + WATCH_TICK_S)
        if deadline < self._next:
            self._next = deadline
            self._wake.set()

    def _run(self) -> None:
        baselines: dict[int, int] = {}  # call -> resident size when first seen running
        # Interpreted calls seen running beside another: growth is not theirs alone.
        shared: set[int] = set()
        checked = time.monotonic()
        while not self._stop:
            self._next = math.inf
            now = time.monotonic()
            if self._fault_handlers and now - checked >= _HANDLER_CHECK_S:
                nativestack.reassert(self._fault_handlers)
                checked = now
            calls = list(self.running.items())
            interpreted = [call for call, inst in calls if inst.interpreted]
            if len(interpreted) > 1:
                shared.update(interpreted)
            resident = _resident_bytes() if interpreted else 0
            wake = now + _HANDLER_CHECK_S
            for call, inst in calls:
                growth = 0
                if inst.interpreted:
                    growth = resident - baselines.setdefault(call, resident)
                late = now >= inst.deadline
                if growth > _RUNAWAY_BYTES or (
                    late and call not in shared and growth > inst.growth_allowance
                ):
                    inst.stop(call, _RUNAWAY)
                elif late:
                    inst.stop(call, _DEADLINE)
                wake = min(wake, inst.deadline)
            if not calls:
                baselines.clear()
                shared.clear()
            elif len(baselines) > len(calls):
                live = {call for call, _ in calls}
                for call in set(baselines) - live:
                    del baselines[call]
                shared &= live
            # A tick while an interpreted call grows; else the earliest deadline, at
            # least a tick away (a deadline lands at most one tick late, as before).
            wake = now + WATCH_TICK_S if interpreted else max(wake, now + WATCH_TICK_S)
            self._next = wake
            self._wake.wait(wake - now)
            self._wake.clear()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=1)


def _aot_setting(option: bool | None) -> bool:
    """The `aot` option, or EDGEFN_WASMEDGE_AOT when it is None: on unless "0"."""
    if option is not None:
        return option
    return os.environ.get(AOT_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class WasmEdgeEngine:
    """`Engine` on WasmEdge. Thread-safe; one per process.

    `options.aot`: compile modules ahead of time with the library's LLVM compiler,
    when it has one; on unless turned off (there or with EDGEFN_WASMEDGE_AOT=0). AOT
    code runs on stacks with a guard and an alternate signal stack (`_nativestack`),
    so that a runaway recursion traps; a module whose frames could be larger than
    any guard is interpreted.
    `options.cost_limit_per_ms`: an instruction-cost budget per millisecond of
    `max_execution_ms`, enforced by WasmEdge's statistics as a second guard behind
    the watchdog; off by default, as counting costs every instruction some time.
    `compile_cache`: where AOT output is kept, sealed, between processes (the node's
    `{data_dir}/compiled`, as with wasmtime); without one, AOT code is compiled in
    every process. The interpreter has nothing to cache.
    """

    name = "wasmedge"

    def __init__(
        self, options: WasmEdgeOptions | None = None, *, compile_cache: CompileCache | None = None
    ) -> None:
        options = options or WasmEdgeOptions()
        self._lib = lib = ffi.load()
        _ensure_stdio_fds()
        aot = _aot_setting(options.aot)
        cost_limit_per_ms = options.cost_limit_per_ms
        self._cost_limit_per_ms = cost_limit_per_ms
        self._conf = lib.ConfigureCreate()
        if cost_limit_per_ms is not None:
            lib.ConfigureStatisticsSetCostMeasuring(self._conf, True)
        self._loader = lib.LoaderCreate(self._conf)
        self._validator = lib.ValidatorCreate(self._conf)
        self._compiler: int | None = None
        self._aot_dir: tempfile.TemporaryDirectory[str] | None = None
        self._compile_cache: CompileCache | None = None
        # AOT code loads into a library of the same version, compiled with the same
        # options, on a CPU with the features LLVM compiled for (the host's).
        self._aot_tag = engine_tag(
            "wasmedge", lib.version_string, "aot-O2-interruptible",
            *(["cost"] if cost_limit_per_ms is not None else []),
        )
        self._lock = threading.Lock()
        self.instances: dict[int, _BaseInstance] = {}
        self.host_modules = _HostModules(lib, self.instances)
        self.threads: nativestack.CallThreads | None = None
        # "on", "off" (turned off), "missing" (no LLVM) or why AOT cannot be used.
        self._aot_state = "off"
        fault_handlers: nativestack.Handlers = []
        compiler = self._create_compiler(cost_limit_per_ms)
        if compiler is None:
            self._aot_state = "missing"
        elif not aot:
            lib.CompilerDelete(compiler)
        else:
            fault_handlers = self._start_aot(compiler, compile_cache)
        self.watchdog = _Watchdog(fault_handlers)
        self._closed = False

    def _start_aot(self, compiler: int, compile_cache: CompileCache | None) -> nativestack.Handlers:
        """Compile ahead of time from now on, if AOT code can be contained here; returns
        the fault handlers it needs, for the watchdog to keep in place."""
        if not nativestack.supported():
            self._lib.CompilerDelete(compiler)
            self._aot_state = "unsafe here: AOT calls are contained on Linux (glibc) only"
            return []
        self._compiler = compiler
        # Only for the file the compiler writes and `_precompile` reads back.
        self._aot_dir = tempfile.TemporaryDirectory(prefix="edgefn-wasmedge-aot-")
        try:
            fault_handlers = _keep_fault_handlers(
                self._lib, self._precompile(_KEEPER_WASM, "keeper")
            )
            self.threads = nativestack.CallThreads("edgefn-wasmedge-call")
        except (EngineUnavailable, InvalidModule, OSError) as exc:
            self._aot_state = f"not usable: {exc}"
            self._lib.CompilerDelete(compiler)
            self._compiler = None
            self._aot_dir.cleanup()
            self._aot_dir = None
            return []
        self._aot_state = "on"
        self._compile_cache = compile_cache
        return fault_handlers

    def _create_compiler(self, cost_limit_per_ms: int | None) -> int | None:
        """WasmEdge's AOT compiler, or None where the library was built without LLVM."""
        lib = self._lib
        compiler_conf = lib.ConfigureCreate()
        lib.ConfigureCompilerSetOutputFormat(compiler_conf, ffi.COMPILER_OUTPUT_WASM)
        lib.ConfigureCompilerSetOptimizationLevel(compiler_conf, ffi.COMPILER_OPT_O2)
        # Without interruption points, AOT code would not notice the stop flag.
        lib.ConfigureCompilerSetInterruptible(compiler_conf, True)
        if cost_limit_per_ms is not None:
            lib.ConfigureStatisticsSetCostMeasuring(compiler_conf, True)
        compiler = lib.CompilerCreate(compiler_conf) or None  # NULL without LLVM
        lib.ConfigureDelete(compiler_conf)
        return compiler

    @property
    def lib(self) -> ffi.Lib:
        return self._lib

    @property
    def cost_limit_per_ms(self) -> int | None:
        return self._cost_limit_per_ms

    @property
    def tag(self) -> str:
        # The interpreter compiles nothing ahead: nothing to precompile for it.
        return self._aot_tag if self._compiler else ""

    def compile(
        self, wasm: bytes, limits: Limits, wasi: WasiOptions, *, precompiled: bytes | None = None
    ) -> WasmEdgeModule:
        info = validate_module(wasm, memory_pages=limits.memory_pages)
        wasi.preopens()  # refuses a directory that cannot be mounted
        prepared = wasi_stdio.prepare(wasm)
        bound = self._native_frame_bound(prepared)
        with self._lock:
            if precompiled is not None and bound is not None:
                ast = self._adopt(prepared, precompiled)
            else:
                # Interpreted here (no compiler, or frames too large for a guard):
                # precompiled code is not run, whatever it is.
                ast = self._load(prepared, native=bound is not None)
        module = WasmEdgeModule(self, int(ast.value or 0), info, limits, wasi, len(wasm), bound)
        module.check_links()
        return module

    def _native_frame_bound(self, prepared: bytes) -> int | None:
        """The native frame bound of a module AOT code may run, None to interpret it:
        without a compiler, or when no call thread has a guard that large."""
        if not self._compiler:
            return None
        try:
            bound = nativestack.frame_bound(prepared)
        except InvalidModule as exc:
            reason = str(exc)
        else:
            if bound <= nativestack.CALL_GUARD_BYTES:
                return bound
            reason = f"a frame of its code could take {bound >> 20} MiB of native stack"
        log.warning("module interpreted, not compiled ahead of time: %s", reason)
        return None

    def _load(self, prepared: bytes, *, native: bool) -> c_void_p:
        """Parse and validate the module (AOT-compiled first when it runs natively)."""
        if not native:
            return self._parse(prepared)
        source = hashlib.sha256(prepared).hexdigest()
        cache = self._compile_cache
        if cache is None:
            return self._parse(self._precompile(prepared, source))
        code = cache.load(source, self._aot_tag)
        if code is not None:
            try:
                return self._parse(code)
            except InvalidModule as exc:
                cache.reject(source, self._aot_tag, f"WasmEdge refused it: {exc}")
        code = self._precompile(prepared, source)
        cache.store(source, self._aot_tag, code)
        return self._parse(code)

    def precompile(self, wasm: bytes) -> bytes:
        # What `compile` runs natively: the module with its stdio prepared, if its
        # frames fit a call thread's guard.
        prepared = wasi_stdio.prepare(wasm)
        if self._native_frame_bound(prepared) is None:
            raise InvalidModule("the module is interpreted, not compiled ahead of time, here")
        with self._lock:
            return self._precompile(prepared, hashlib.sha256(prepared).hexdigest())

    def _adopt(self, prepared: bytes, code: bytes) -> c_void_p:
        """Precompiled AOT code, parsed and kept (sealed) in the compile cache, so that
        the workers load it as if this node had compiled it."""
        try:
            # Safe only because the caller verified its digest from the control plane.
            ast = self._parse(code)
        except InvalidModule as exc:
            raise PrecompiledRefused(f"WasmEdge refused the precompiled code: {exc}") from exc
        if self._compile_cache is not None:
            self._compile_cache.store(hashlib.sha256(prepared).hexdigest(), self._aot_tag, code)
        return ast

    def _parse(self, code: bytes) -> c_void_p:
        lib = self._lib
        ast = c_void_p()
        result = lib.LoaderParseFromBuffer(self._loader, byref(ast), code, len(code))
        _check(lib, result, "module does not load")
        result = lib.ValidatorValidate(self._validator, ast)
        if not ffi.result_ok(result):
            lib.ASTModuleDelete(ast)
            _check(lib, result, "module does not validate")
        return ast

    def _precompile(self, wasm: bytes, source: str) -> bytes:
        """AOT-compile into a universal wasm (native code in a custom section)."""
        assert self._aot_dir is not None
        # The compiler writes a file; it is read back at once and not kept as it is.
        out = Path(self._aot_dir.name) / f"{source}.wasm"
        try:
            result = self._lib.CompilerCompileFromBuffer(
                self._compiler, wasm, len(wasm), str(out).encode()
            )
            _check(self._lib, result, "module does not compile")
            return out.read_bytes()
        finally:
            out.unlink(missing_ok=True)

    def describe(self) -> dict[str, str]:
        lib = self._lib
        if self._compiler:
            compiler = (
                "LLVM AOT (universal wasm, interruptible; on stacks with a guard "
                "and a signal stack)"
            ) + (", cached on disk, sealed" if self._compile_cache else "")
        elif self._aot_state == "missing":
            compiler = "interpreter (library built without LLVM)"
        elif self._aot_state == "off":
            compiler = f"interpreter (LLVM AOT available, turned off: {AOT_ENV}=0 or aot=False)"
        else:
            compiler = f"interpreter (LLVM AOT {self._aot_state})"
        return {
            "engine": "wasmedge",
            "version": lib.version_string,
            "library": lib.path,
            "compiler": compiler,
            "timeout": (f"watchdog at each deadline (every {WATCH_TICK_S * 1000:g} ms while "
                        "an interpreted call runs) stopping the executor"),
            "cost_limit_per_ms": str(self._cost_limit_per_ms or "off"),
            "tag": self.tag or "none (interpreter)",
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for inst in list(self.instances.values()):
            inst.close()
        self.watchdog.close()
        if self.threads is not None:
            self.threads.close()
        lib = self._lib
        self.host_modules.close()
        if self._compiler:
            lib.CompilerDelete(self._compiler)
            self._compiler = None
        lib.ValidatorDelete(self._validator)
        lib.LoaderDelete(self._loader)
        lib.ConfigureDelete(self._conf)
        if self._aot_dir is not None:
            self._aot_dir.cleanup()


class WasmEdgeModule(ModuleFacts):
    """A loaded, validated module of one function version; its instances share its AST."""

    def __init__(
        self,
        engine: WasmEdgeEngine,
        ast: int,
        info: ModuleInfo,
        limits: Limits,
        wasi_options: WasiOptions,
        wasm_size: int,
        frame_bound: int | None,
    ) -> None:
        super().__init__(info, limits, wasi_options, wasm_size)
        lib = engine.lib
        self.engine = engine
        self.lib = lib
        self.ast = ast
        # None: interpreted; else AOT code whose frames take at most this much stack.
        self.frame_bound = frame_bound
        self._preopens = [f"{guest}:{host}:readonly".encode()
                          for guest, host in wasi_options.preopens()]
        self.conf = lib.ConfigureCreate()
        lib.ConfigureSetMaxMemoryPage(self.conf, limits.memory_pages)
        self.cost_limit: int | None = None
        if engine.cost_limit_per_ms is not None:
            lib.ConfigureStatisticsSetCostMeasuring(self.conf, True)
            self.cost_limit = engine.cost_limit_per_ms * limits.max_execution_ms
        # Instances run the AST's code: it is freed only when the last one is closed.
        self._live = 0
        self._closed = False
        self._lock = threading.Lock()

    def instantiate(self) -> Instance:
        if self.abi == ABI_EDGE_V1:
            return _EdgeInstance(self)
        return _WagiInstance(self)

    def check_links(self) -> None:
        """Link once in a scratch store, so a bad import fails at compile, as with wasmtime.

        Nothing of the guest runs: the start function is called by the engine, later.
        """
        scratch = _Contexts(self, [])
        try:
            scratch.instantiate()
        except GuestTrap as exc:
            self.close()
            raise InvalidModule(str(exc)) from None
        finally:
            scratch.close()

    def wasi_module(self, extra_env: list[tuple[str, str]], argv: list[str] | None = None) -> int:
        envs = [f"{k}={v}".encode() for k, v in self.wasi.environ(extra_env)]
        args = [a.encode() for a in argv or ()]
        preopens = self._preopens
        env_arr = (c_char_p * max(1, len(envs)))(*envs)
        arg_arr = (c_char_p * max(1, len(args)))(*args)
        pre_arr = (c_char_p * max(1, len(preopens)))(*preopens)
        module = self.lib.ModuleInstanceCreateWASI(
            arg_arr, len(args), env_arr, len(envs), pre_arr, len(preopens)
        )
        if not module:
            raise GuestTrap("WasmEdge could not create the WASI module")
        return int(module)

    def acquire(self) -> None:
        with self._lock:
            if self._closed:
                raise GuestTrap("module is closed")
            self._live += 1

    def release(self) -> None:
        with self._lock:
            self._live -= 1
            free = self._closed and self._live == 0
        if free:
            self._free()

    def _free(self) -> None:
        if self.ast:
            self.lib.ASTModuleDelete(self.ast)
            self.ast = 0
        if self.conf:
            self.lib.ConfigureDelete(self.conf)
            self.conf = 0

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            free = self._live == 0
        if free:
            self._free()


class _Contexts:
    """The WasmEdge contexts of one instance, each deleted exactly once by `close`."""

    def __init__(
        self, module: WasmEdgeModule, extra_env: list[tuple[str, str]],
        argv: list[str] | None = None,
    ) -> None:
        module.acquire()
        self.module = module
        self.lib = lib = module.lib
        self.stats: int | None = None
        if module.cost_limit is not None:
            self.stats = lib.StatisticsCreate()
            lib.StatisticsSetCostLimit(self.stats, module.cost_limit)
        self.executor: int = lib.ExecutorCreate(module.conf, self.stats)
        self.executor_ref = c_void_p(self.executor)  # for the unchecked call
        self.store: int = lib.StoreCreate()
        self.wasi: int = module.wasi_module(extra_env, argv)
        self.guest: int = 0

    def instantiate(self) -> None:
        lib = self.lib
        for imported in (self.wasi, *self.module.engine.host_modules.modules):
            result = lib.ExecutorRegisterImport(self.executor, self.store, imported)
            if not ffi.result_ok(result):
                raise GuestTrap(f"linking failed: {lib.ResultGetMessage(result).decode()}")
        guest = c_void_p()
        result = lib.ExecutorInstantiate(self.executor, byref(guest), self.store, self.module.ast)
        if not ffi.result_ok(result):
            raise GuestTrap(f"instantiation failed: {lib.ResultGetMessage(result).decode()}")
        self.guest = int(guest.value or 0)

    def function(self, name: str) -> c_void_p | None:
        raw = name.encode()
        func = self.lib.ModuleInstanceFindFunction(self.guest, ffi.wrap_string(raw))
        return c_void_p(func) if func else None

    def memory(self) -> int | None:
        raw = b"memory"
        return self.lib.ModuleInstanceFindMemory(self.guest, ffi.wrap_string(raw)) or None

    def close(self) -> None:
        lib = self.lib
        if self.guest:
            lib.ModuleInstanceDelete(self.guest)
            self.guest = 0
        if self.wasi:
            lib.ModuleInstanceDelete(self.wasi)
            self.wasi = 0
        if self.store:
            lib.StoreDelete(self.store)
            self.store = 0
        if self.executor:
            lib.ExecutorDelete(self.executor)
            self.executor = 0
        if self.stats:
            lib.StatisticsDelete(self.stats)
            self.stats = None
        if self.module is not None:
            self.module.release()
            self.module = None  # type: ignore[assignment]


class _BaseInstance(program.InstanceBase):
    """What both ABIs share on WasmEdge: the contexts, calls under the watchdog, stdio."""

    def __init__(self, module: WasmEdgeModule) -> None:
        self._module = module
        self._lib = module.lib
        self._engine = module.engine
        self.interpreted = module.frame_bound is None
        self.growth_allowance = module.limits.memory_pages * PAGE_SIZE + _GROWTH_SLACK
        self._frame_bound = module.frame_bound or 0
        self._threads = None if self.interpreted else module.engine.threads
        self._invoke = module.lib.invoke_unchecked
        self._running = module.engine.watchdog.running
        self._due = module.engine.watchdog.due
        self._init_state(module.limits)
        self.trap_message: str | None = None
        self._stdin = b""
        self._stdin_pos = 0
        self._ctx: _Contexts | None = None
        self._mem = _Memory(self._lib, None)
        # Every argument of every call is an i32: the type is written once.
        self._params = (ffi.Value * _MAX_ARGS)()
        for param in self._params:
            ffi.set_i32(param, 0, self._lib.i32)
        self._returns = (ffi.Value * 1)()
        self.deadline = 0.0
        # The call running now and, once the watchdog stopped one, why: the executor's
        # stop flag may then still be set, so the instance is spent.
        self._call_lock = threading.Lock()
        self._call_id = 0
        self._stopped: str | None = None

    def _on_call_thread(self, fn: Callable[..., _T], *args: object) -> _T:
        """Run `fn` where guest code may run: AOT code only on a stack whose guard fits
        the module's frame bound, the calling thread's or else a call thread's."""
        if self._threads is None:
            return fn(*args)
        return self._threads.run(self._frame_bound, fn, *args)

    def _bind(self, extra_env: list[tuple[str, str]], argv: list[str] | None = None) -> None:
        """Create this instance's contexts, instantiate, and run the start function."""
        self._ctx = ctx = _Contexts(self._module, extra_env, argv)
        ctx.instantiate()
        self._engine.instances[ctx.guest] = self
        self._mem = _Memory(self._lib, ctx.memory())
        start = ctx.function(wasi_stdio.START_EXPORT)
        if start is not None:
            try:
                self._call(start, 0, 0)
            except GuestTrap as exc:
                # The module's start function is part of instantiating it, as wasmtime
                # reports it (a timeout stays a timeout).
                cause = str(exc).removeprefix("guest trapped: ")
                raise GuestTrap(f"instantiation failed: {cause}") from None

    # --- stdio (the `Stdio` protocol of _wasmedge_wasi) ---

    def read_stdin(self, size: int) -> bytes:
        data = self._stdin[self._stdin_pos : self._stdin_pos + size]
        self._stdin_pos += len(data)
        return data

    def native_fd(self, fd: int) -> int | None:
        if self._ctx is None or not self._ctx.wasi:
            return None
        handle = c_uint64()
        if self._lib.ModuleInstanceWASIGetNativeHandler(self._ctx.wasi, fd, byref(handle)):
            return None
        return int(handle.value)

    # --- calls ---

    def _export(self, name: str) -> c_void_p | None:
        assert self._ctx is not None
        return self._ctx.function(name)

    def _call_export(self, func: c_void_p) -> None:
        self._call(func, 0, 0)

    def _arm_deadline(self) -> None:
        self.deadline = time.monotonic() + self.limits.max_execution_ms / 1000
        if self._ctx is not None and self._ctx.stats:
            self._lib.StatisticsClear(self._ctx.stats)

    def stop(self, call: int, reason: str) -> None:
        """The watchdog's: stop `call` if it is still running.

        The C API stops an executor only through the handle of an asynchronous
        invocation; one is made for the purpose, of a function given no arguments
        where it takes some, which fails before running anything.
        """
        with self._call_lock:
            if self._call_id != call or self._stopped is not None or self._ctx is None:
                return
            self._stopped = reason
            lib = self._lib
            handle = lib.ExecutorAsyncInvoke(
                self._ctx.executor, self._engine.host_modules.stop_func, None, 0
            )
            if handle:
                lib.AsyncCancel(handle)
                lib.AsyncWait(handle)
                lib.AsyncDelete(handle)

    def _call(self, func: c_void_p, nparams: int, nresults: int) -> int:
        """One call under the watchdog; returns the i32 result (0 when there is none).

        Runs where it is called: every way into guest code (`invoke`, the start of an
        edge-v1 instance) has gone through `_on_call_thread` already."""
        ctx = self._ctx
        assert ctx is not None
        if self._stopped is not None:
            raise GuestTrap("instance was stopped")
        result, stopped = self._watched(self._invoke, ctx.executor_ref, func, self._params,
                                        _COUNTS[nparams], self._returns, _COUNTS[nresults])
        if result == 0 and stopped is None and not self.timed_out:
            if not nresults:
                return 0
            value: int = self._returns[0].lo & 0xFFFFFFFF
            return value - 0x100000000 if value & 0x80000000 else value
        return self._failed(result, stopped)

    def _watched(self, fn: Callable[..., _T], *args: object) -> tuple[_T, str | None]:
        """`fn(*args)`, guest code under the deadline armed, registered with the watchdog
        for its duration: what it returned, and why the watchdog stopped it (None: it
        did not)."""
        call = next(_call_ids)
        self._call_id = call
        self._running[call] = self
        self._due(self.deadline, self.interpreted)
        try:
            out = fn(*args)
        finally:
            del self._running[call]
            with self._call_lock:
                self._call_id = 0
                stopped = self._stopped
        return out, stopped

    def _failed(self, result: int, stopped: str | None) -> int:
        """Why a call did not succeed, as the error to raise (0 for proc_exit(0) of a
        call that may end so: never, every caller raises on it)."""
        lib = self._lib
        self._raise_host_exception()
        if stopped == _RUNAWAY:
            raise GuestTrap(
                "guest trapped: call stack exhausted (the interpreter's stack grew without bound)"
            )
        if stopped is not None:
            self.timed_out = True
        if self.timed_out:
            raise self._timeout()
        category, code = ffi.result_category(result), ffi.result_code(result)
        if category == ffi.CATEGORY_USER:  # a host call failed; a timeout is seen above
            message, self.trap_message = self.trap_message, None
            raise GuestTrap(message or "guest trapped: host function failed")
        if code in (ffi.ERR_INTERRUPTED, ffi.ERR_COST_LIMIT_EXCEEDED):
            raise self._timeout()
        if code == ffi.ERR_TERMINATED:
            assert self._ctx is not None
            raise program.ProcExit(int(lib.ModuleInstanceWASIGetExitCode(self._ctx.wasi)))
        if code == ffi.ERR_MEMORY_OUT_OF_BOUNDS and _stack_exhausted():
            raise GuestTrap(_STACK_EXHAUSTED)
        raise GuestTrap(f"guest trapped: {lib.ResultGetMessage(result).decode()}")

    @property
    def memory_bytes(self) -> int:
        if self.closed:
            return 0
        return self._mem.size

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self._call_lock:  # not while the watchdog is stopping a call of it
            ctx, self._ctx = self._ctx, None
        self._mem = _Memory(self._lib, None)
        if ctx is not None:
            self._engine.instances.pop(ctx.guest, None)
            ctx.close()


def _stack_exhausted() -> bool:
    """After an out-of-bounds fault in AOT code: was it the stack's guard? Then the
    stack the call touched is given back."""
    stack = nativestack.current_stack()
    if stack is None or not stack.exhausted():
        return False
    stack.release()
    return True


# `_edgecall.wasmedge_exchange` (the call's five steps in C), configured with the
# library's functions once it is loaded; None where it was not built (`setup.py`).
_edgecall: Any = None
_PLAN = struct.Struct("7P")  # _edgecall.c's wasmedge_plan_t


def _native_exchange(lib: ffi.Lib) -> Any:
    """`_edgecall`, configured for `lib` (one library a process: `ffi.load`)."""
    global _edgecall
    if _edgecall is None:
        edgecall = native.part("edgefn.sandbox._edgecall")
        if edgecall is None or not hasattr(edgecall, "wasmedge_exchange"):
            return None
        edgecall.configure_wasmedge(*(
            ctypes.cast(lib.dll["WasmEdge_" + name], c_void_p).value or 0
            for name in ("ExecutorInvoke", "MemoryInstanceGetPageSize",
                         "MemoryInstanceGetPointer")))
        _edgecall = edgecall
    return _edgecall


class _EdgeInstance(program.EdgeProgram, _BaseInstance):
    """An `edge-v1` instance on WasmEdge: the program's hooks as calls under the
    watchdog, or all five in one C call (`_edgecall.wasmedge_exchange`) where it was
    built."""

    def __init__(self, module: WasmEdgeModule) -> None:
        super().__init__(module)
        self._plan: bytes | None = None
        self._on_call_thread(self._start_instance)
        ctx = self._ctx
        if (ctx is not None and self._mem._mem and self._alloc is not None
                and self._handle is not None and _native_exchange(self._lib) is not None):
            self._plan = _PLAN.pack(
                ctx.executor, self._mem._mem, self._alloc.value, self._handle.value,
                0 if self._dealloc is None else self._dealloc.value,
                ctypes.addressof(self._params), ctypes.addressof(self._returns))

    def close(self) -> None:
        self._plan = None  # its addresses are the contexts'
        super().close()

    def _exchange(self, parts: tuple[bytes, ...], total: int, cap: int) -> bytes:
        plan = self._plan
        if plan is None or self._stopped is not None:
            return super()._exchange(parts, total, cap)
        self._arm_deadline()
        # One registration with the watchdog for the five calls, as the deadline is one.
        out, stopped = self._watched(_edgecall.wasmedge_exchange, plan, *parts, cap)
        if out is None:  # sizes `alloc` cannot take: the hooks say why
            return super()._exchange(parts, total, cap)
        if out.__class__ is bytes and stopped is None and not self.timed_out:
            return out
        if out.__class__ is bytes:  # stopped as it ended: spent, as `_call` says
            self._failed(0, stopped)
            raise AssertionError("_failed returned")
        stage, ptr, written, result, _ = out
        return self._resume(stage, ptr, written, result, stopped=stopped, total=total, cap=cap)

    def _resume(self, stage: int, ptr: int, written: int, result: int, *,
                stopped: str | None, total: int, cap: int) -> bytes:
        """Where `_edgecall.wasmedge_exchange` stopped: its failure raised as `_call` and
        the hooks raise it, the buffer handed back as `EdgeProgram._exchange` does."""
        if stage == _edgecall.UNUSABLE and stopped is None:
            raise unusable_alloc(total, ptr)
        after_handle = stage in (_edgecall.HANDLE, _edgecall.RESULT, _edgecall.OUTSIDE)
        try:
            if result or stopped is not None or self.timed_out:
                self._failed(result, stopped)  # ALLOC, HANDLE, DEALLOC, or stopped
            if stage == _edgecall.RESULT:
                check_handle_result(written, cap)
            elif stage == _edgecall.OUTSIDE:
                raise GuestTrap("response extends past linear memory")
        except InvocationError as exc:
            if after_handle:
                self._hand_back(exc, ptr, total)
            raise
        raise AssertionError(f"_edgecall.wasmedge_exchange stopped at {stage} with nothing wrong")

    def invoke(self, request: GuestRequest, host: Host) -> bytes:
        # One hand-over to a call thread per request, not one per guest call.
        return self._on_call_thread(program.EdgeProgram.invoke, self, request, host)

    def _instantiate_guest(self) -> None:
        self._arm_deadline()
        self._bind([])

    def _set(self, i: int, value: int) -> None:
        self._params[i].lo = value & 0xFFFFFFFF

    def _allocate(self, size: int) -> int:
        self._set(0, size)
        return self._call(self._alloc, 1, 1)

    def _copy_in(self, ptr: int, total: int, parts: tuple[bytes, ...], cap: int) -> int:
        base, size = self._mem.view()
        if ptr <= 0 or ptr + total > size:
            raise unusable_alloc(total, ptr)
        params = self._params
        offset = ptr
        for i, part in enumerate(parts):
            n = len(part)
            if n:
                ctypes.memmove(base + offset, part, n)
            params[2 * i].lo = offset
            params[2 * i + 1].lo = n
            offset += n
        params[8].lo = offset
        params[9].lo = cap
        return offset

    def _call_handle(self) -> int:
        return self._call(self._handle, 10, 1)

    def _copy_out(self, offset: int, written: int) -> bytes:
        base, size = self._mem.view()
        if offset + written <= size:
            return ctypes.string_at(base + offset, written)
        raise GuestTrap("response extends past linear memory")

    def _deallocate(self, ptr: int, total: int) -> None:
        if self._dealloc is not None:
            self._set(0, ptr)
            self._set(1, total)
            self._call(self._dealloc, 2, 0)


class _WagiInstance(program.WagiProgram, _BaseInstance):
    """A WAGI program: fresh contexts per request, `_start` once, stdout is the response."""

    def __init__(self, module: WasmEdgeModule) -> None:
        super().__init__(module)
        self._init_wagi()

    def invoke(self, request: GuestRequest, host: Host) -> bytes:
        return self._on_call_thread(program.WagiProgram.invoke, self, request, host)

    def _run_start(self, request: GuestRequest) -> int:
        self._stdin = request.body
        self._arm_deadline()
        self._bind(request.cgi_env, request.argv)
        start = self._export(request.entrypoint)
        if start is None:
            raise GuestTrap(f"module exports no function {request.entrypoint!r}")
        self._call_export(start)
        return 0


__all__ = ["WasmEdgeEngine", "WasmEdgeModule"]
