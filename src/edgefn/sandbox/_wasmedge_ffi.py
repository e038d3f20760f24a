"""ctypes bindings to the WasmEdge C API (`wasmedge/wasmedge.h`, 0.14 or newer).

Only the calls the WasmEdge engine uses, declared once. The library is found through
`EDGEFN_WASMEDGE_LIB`, else the usual install places (`candidate_paths`); `load()` raises
`EngineUnavailable` naming every place it looked. Nothing here owns a context: the
engine creates and deletes each one (see `wasmedge_engine.py`).

ABI notes for x86-64 and aarch64 SysV: `WasmEdge_Result` (one uint32) and
`WasmEdge_ValType` (eight bytes) are returned in a register, so they are declared as
plain integers; `WasmEdge_String` (uint32 + pointer) is passed by value as a struct.
"""

from __future__ import annotations

import ctypes
import os
import struct
from ctypes import POINTER, c_bool, c_char_p, c_int32, c_uint32, c_uint64, c_void_p
from pathlib import Path
from typing import Any

from edgefn.sandbox.errors import EngineUnavailable

LIBRARY_ENV = "EDGEFN_WASMEDGE_LIB"
LIBRARY_NAMES = ("libwasmedge.so", "libwasmedge.so.0", "libwasmedge.dylib")
MIN_VERSION = (0, 14)

# WasmEdge_Result: category in the top byte, code in the low 24 bits.
RESULT_SUCCESS = 0x00
RESULT_TERMINATED = 0x01
CATEGORY_WASM = 0x00
CATEGORY_USER = 0x01

# Error codes of the WASM category (include/common/enum.inc).
ERR_TERMINATED = 0x0001
ERR_COST_LIMIT_EXCEEDED = 0x0003
ERR_INTERRUPTED = 0x0007
ERR_MEMORY_OUT_OF_BOUNDS = 0x0408

COMPILER_OUTPUT_WASM = 1  # WasmEdge_CompilerOutputFormat_Wasm: AOT code in a custom section
COMPILER_OPT_O2 = 2


class String(ctypes.Structure):
    """`WasmEdge_String`; a borrowed view, never deleted when built here."""

    _fields_ = [("length", c_uint32), ("buf", c_char_p)]


class Value(ctypes.Structure):
    """`WasmEdge_Value`: a 128-bit payload and an 8-byte type, padded to 32 bytes."""

    _fields_ = [
        ("lo", c_uint64),
        ("hi", c_uint64),
        ("type", c_uint64),
        ("_pad", c_uint64),
    ]


assert ctypes.sizeof(Value) == 32

HostFunc = ctypes.CFUNCTYPE(c_uint32, c_void_p, c_void_p, POINTER(Value), POINTER(Value))

_P = c_void_p
_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "VersionGet": (c_char_p, []),
    "VersionGetMajor": (c_uint32, []),
    "VersionGetMinor": (c_uint32, []),
    "VersionGetPatch": (c_uint32, []),
    "LogOff": (None, []),
    "ValTypeGenI32": (c_uint64, []),
    "ValTypeGenF64": (c_uint64, []),
    "ResultGetMessage": (c_char_p, [c_uint32]),
    # configure
    "ConfigureCreate": (_P, []),
    "ConfigureDelete": (None, [_P]),
    "ConfigureSetMaxMemoryPage": (None, [_P, c_uint32]),
    "ConfigureSetForceInterpreter": (None, [_P, c_bool]),
    "ConfigureCompilerSetOptimizationLevel": (None, [_P, ctypes.c_int]),
    "ConfigureCompilerSetOutputFormat": (None, [_P, ctypes.c_int]),
    "ConfigureCompilerSetInterruptible": (None, [_P, c_bool]),
    "ConfigureStatisticsSetCostMeasuring": (None, [_P, c_bool]),
    # statistics
    "StatisticsCreate": (_P, []),
    "StatisticsDelete": (None, [_P]),
    "StatisticsSetCostLimit": (None, [_P, c_uint64]),
    "StatisticsClear": (None, [_P]),
    # loader, validator, compiler, AST
    "LoaderCreate": (_P, [_P]),
    "LoaderDelete": (None, [_P]),
    "LoaderParseFromBuffer": (c_uint32, [_P, POINTER(_P), c_char_p, c_uint32]),
    "ValidatorCreate": (_P, [_P]),
    "ValidatorDelete": (None, [_P]),
    "ValidatorValidate": (c_uint32, [_P, _P]),
    "CompilerCreate": (_P, [_P]),
    "CompilerDelete": (None, [_P]),
    "CompilerCompileFromBuffer": (c_uint32, [_P, c_char_p, c_uint64, c_char_p]),
    "ASTModuleDelete": (None, [_P]),
    # executor, store
    "ExecutorCreate": (_P, [_P, _P]),
    "ExecutorDelete": (None, [_P]),
    "ExecutorInstantiate": (c_uint32, [_P, POINTER(_P), _P, _P]),
    "ExecutorRegisterImport": (c_uint32, [_P, _P, _P]),
    "ExecutorInvoke": (
        c_uint32, [_P, _P, POINTER(Value), c_uint32, POINTER(Value), c_uint32]
    ),
    "ExecutorAsyncInvoke": (_P, [_P, _P, POINTER(Value), c_uint32]),
    "StoreCreate": (_P, []),
    "StoreDelete": (None, [_P]),
    # module instances
    "ModuleInstanceCreate": (_P, [String]),
    "ModuleInstanceCreateWASI": (
        _P,
        [POINTER(c_char_p), c_uint32, POINTER(c_char_p), c_uint32, POINTER(c_char_p), c_uint32],
    ),
    "ModuleInstanceWASIGetExitCode": (c_uint32, [_P]),
    "ModuleInstanceWASIGetNativeHandler": (c_uint32, [_P, c_int32, POINTER(c_uint64)]),
    "ModuleInstanceFindFunction": (_P, [_P, String]),
    "ModuleInstanceFindMemory": (_P, [_P, String]),
    "ModuleInstanceAddFunction": (None, [_P, String, _P]),
    "ModuleInstanceDelete": (None, [_P]),
    # functions
    "FunctionTypeCreate": (_P, [POINTER(c_uint64), c_uint32, POINTER(c_uint64), c_uint32]),
    "FunctionTypeDelete": (None, [_P]),
    "FunctionInstanceCreate": (_P, [_P, HostFunc, _P, c_uint64]),
    # memory, calling frame
    "MemoryInstanceGetPointer": (_P, [_P, c_uint32, c_uint32]),
    "MemoryInstanceGetPageSize": (c_uint32, [_P]),
    "CallingFrameGetModuleInstance": (_P, [_P]),
    "CallingFrameGetMemoryInstance": (_P, [_P, c_uint32]),
    # async
    "AsyncWait": (None, [_P]),
    "AsyncWaitFor": (c_bool, [_P, c_uint64]),
    "AsyncCancel": (None, [_P]),
    "AsyncGet": (c_uint32, [_P, POINTER(Value), c_uint32]),
    "AsyncDelete": (None, [_P]),
}


class Lib:
    """The loaded library: each `WasmEdge_X` function is the attribute `X`."""

    def __init__(self, path: str) -> None:
        try:
            self.dll = ctypes.CDLL(path)
        except OSError as exc:
            raise EngineUnavailable(f"cannot load the WasmEdge library {path}: {exc}") from exc
        self.path = path
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                fn = self.dll["WasmEdge_" + name]
            except AttributeError as exc:
                raise EngineUnavailable(
                    f"{path} lacks WasmEdge_{name}; WasmEdge {'.'.join(map(str, MIN_VERSION))} "
                    "or newer is required"
                ) from exc
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)
        self.version = (self.VersionGetMajor(), self.VersionGetMinor(), self.VersionGetPatch())
        if self.version[:2] < MIN_VERSION:
            raise EngineUnavailable(
                f"{path} is WasmEdge {self.VersionGet().decode()}; "
                f"{'.'.join(map(str, MIN_VERSION))} or newer is required"
            )
        self.version_string = self.VersionGet().decode()
        # The hot path's calls, without ctypes' checks and conversions: they are
        # passed ctypes objects only (`c_void_p` for pointers). A getter that returns
        # at once also keeps the GIL: releasing and taking it back costs more than the
        # call, and lets another thread in.
        self._pydll = ctypes.PyDLL(path)
        self.invoke_unchecked = self._unchecked("ExecutorInvoke", c_uint32)
        self.memory_pages_unchecked = self._unchecked(
            "MemoryInstanceGetPageSize", c_uint32, keep_gil=True
        )
        self.i32 = self.ValTypeGenI32()
        self.f64 = self.ValTypeGenF64()

    def _unchecked(self, name: str, restype: Any, *, keep_gil: bool = False) -> Any:
        # A handle of its own, apart from the checked one.
        fn = (self._pydll if keep_gil else self.dll)["WasmEdge_" + name]
        fn.restype = restype
        fn.argtypes = None  # type: ignore[assignment]
        return fn

    def __getattr__(self, name: str) -> Any:  # the C functions, set in __init__
        raise AttributeError(name)


def candidate_paths() -> list[Path]:
    """Where the library is looked for, in order."""
    configured = os.environ.get(LIBRARY_ENV)
    if configured:
        path = Path(configured).expanduser()
        return [path / n for n in LIBRARY_NAMES] if path.is_dir() else [path]
    # The installer's place, then a build installed by hand: CMake's default prefix,
    # or /opt/wasmedge as docs/engines.md builds it, then the system's.
    dirs = [
        Path.home() / ".wasmedge" / "lib",
        Path("/usr/local/lib"),
        Path("/opt/wasmedge/lib"),
        Path("/usr/lib"),
    ]
    return [d / n for d in dirs for n in LIBRARY_NAMES]


_loaded: Lib | None = None


def load() -> Lib:
    """The WasmEdge library, loaded once per process."""
    global _loaded
    if _loaded is None:
        candidates = candidate_paths()
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            where = ", ".join(sorted({str(p.parent) for p in candidates}))
            raise EngineUnavailable(
                f"libwasmedge not found (looked in {where}); install WasmEdge 0.14 or newer "
                f"or set {LIBRARY_ENV} to the library's path"
            )
        lib = Lib(str(found))
        lib.LogOff()  # errors are translated by the engine, not printed on stderr
        _loaded = lib
    return _loaded


def result_code(result: int) -> int:
    return result & 0x00FFFFFF


def result_category(result: int) -> int:
    return result >> 24


def result_ok(result: int) -> bool:
    """Success or Terminated (proc_exit), as `WasmEdge_ResultOK` says."""
    return result_category(result) == CATEGORY_WASM and result_code(result) in (
        RESULT_SUCCESS,
        RESULT_TERMINATED,
    )


def user_error(code: int) -> int:
    """A `WasmEdge_Result` of the user-level category, returned by host functions."""
    return (CATEGORY_USER << 24) | (code & 0x00FFFFFF)


def wrap_string(data: bytes) -> String:
    """A borrowed `WasmEdge_String`; `data` must outlive the call it is passed to."""
    return String(len(data), data)


def set_i32(value: Value, number: int, i32_type: int) -> None:
    value.lo = number & 0xFFFFFFFF
    value.hi = 0
    value.type = i32_type


def get_i32(value: Value) -> int:
    n = value.lo & 0xFFFFFFFF
    return n - (1 << 32) if n & 0x80000000 else n


def get_f64(value: Value) -> float:
    result: float = struct.unpack("<d", (value.lo & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little"))[0]
    return result
