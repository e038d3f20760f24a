"""Static inspection of a WebAssembly binary: imports, exports, memory, ABI.

The control plane validates uploads with it and the edge checks a module with it
before handing it to an engine, so neither needs an engine to say what a module is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgefn.sandbox.errors import InvalidModule

WASM_MAGIC = b"\x00asm"
WASM_VERSION = b"\x01\x00\x00\x00"
PAGE_SIZE = 65536

ABI_EDGE_V1 = "edge-v1"
ABI_WAGI = "wagi"

# WAGI's outbound HTTP (sandbox/wasi_http.py): a WAGI program may import it; the
# edge loads such a module only where its policy allows outbound HTTP.
WASI_HTTP_MODULE = "wasi_experimental_http"
WASI_HTTP_IMPORTS = frozenset({"req", "close", "header_get", "headers_get_all", "body_read"})
ALLOWED_IMPORT_MODULES = frozenset({"edge", "wasi_snapshot_preview1", WASI_HTTP_MODULE})
EDGE_IMPORTS = frozenset(
    {
        "log",
        "metrics_increment",
        "kv_get",
        "kv_put",
        "http_fetch",
        "env_get",
        "request_id",
        "request_header",
        "secret_get",
    }
)

_SECTION_IMPORT = 2
_SECTION_MEMORY = 5
_SECTION_EXPORT = 7
_KIND_NAMES = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: str


@dataclass(frozen=True)
class ModuleInfo:
    imports: tuple[Import, ...]
    exports: dict[str, str] = field(default_factory=dict)
    initial_pages: int = 0
    max_pages: int | None = None

    @property
    def abi(self) -> str:
        """`edge-v1` when memory, alloc and handle are exported; `wagi` for a command."""
        has = self.exports.get
        if has("handle") == "func" and has("alloc") == "func" and has("memory") == "memory":
            return ABI_EDGE_V1
        if has("_start") == "func" and "handle" not in self.exports:
            return ABI_WAGI
        raise InvalidModule(
            "module exports neither the edge-v1 ABI (memory, alloc, handle) "
            "nor a WAGI command (_start)"
        )


class _Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise InvalidModule("unexpected end of module")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        result = shift = 0
        for _ in range(5):
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise InvalidModule("malformed LEB128 integer")

    def bytes(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise InvalidModule("unexpected end of module")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def name(self) -> str:
        raw = self.bytes(self.u32())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidModule("name is not valid UTF-8") from exc

    def limits(self) -> tuple[int, int | None]:
        flags = self.byte()
        if flags & ~0x07:
            raise InvalidModule(f"unsupported limits flags {flags:#x}")
        if flags & 0x04:
            raise InvalidModule("64-bit memories are not supported")
        minimum = self.u32()
        maximum = self.u32() if flags & 0x01 else None
        return minimum, maximum


def _skip_import_desc(r: _Reader, kind: int) -> tuple[int, int | None] | None:
    """Consume one import descriptor; return its limits when it is a memory."""
    if kind == 0:
        r.u32()
    elif kind == 1:
        r.byte()
        r.limits()
    elif kind == 2:
        return r.limits()
    elif kind == 3:
        r.byte()
        r.byte()
    elif kind == 4:
        r.byte()
        r.u32()
    else:
        raise InvalidModule(f"unknown import kind {kind}")
    return None


def inspect_module(wasm: bytes) -> ModuleInfo:
    """Parse the sections that decide whether and how a module can run here."""
    if len(wasm) < 8 or wasm[:4] != WASM_MAGIC:
        raise InvalidModule("not a WebAssembly module (bad magic number)")
    if wasm[4:8] != WASM_VERSION:
        raise InvalidModule("unsupported WebAssembly version (components are not accepted)")
    r = _Reader(wasm, 8)
    imports: list[Import] = []
    exports: dict[str, str] = {}
    memory: tuple[int, int | None] | None = None
    while r.pos < r.end:
        section_id = r.byte()
        size = r.u32()
        body = _Reader(wasm, r.pos, r.pos + size)
        if body.end > len(wasm):
            raise InvalidModule("section extends past the end of the module")
        if section_id == _SECTION_IMPORT:
            for _ in range(body.u32()):
                module, name, kind = body.name(), body.name(), body.byte()
                limits = _skip_import_desc(body, kind)
                if limits is not None:
                    memory = limits
                imports.append(Import(module, name, _KIND_NAMES[kind]))
        elif section_id == _SECTION_MEMORY:
            count = body.u32()
            if count > 1:
                raise InvalidModule("multiple memories are not supported")
            if count:
                memory = body.limits()
        elif section_id == _SECTION_EXPORT:
            for _ in range(body.u32()):
                name, kind = body.name(), body.byte()
                body.u32()
                if kind not in _KIND_NAMES:
                    raise InvalidModule(f"unknown export kind {kind}")
                exports[name] = _KIND_NAMES[kind]
        r.pos += size
    initial, maximum = memory if memory else (0, None)
    return ModuleInfo(tuple(imports), exports, initial, maximum)


def check_imports(info: ModuleInfo) -> None:
    """Refuse any import outside `edge` (the contract's names) and WASI."""
    for imp in info.imports:
        if imp.module not in ALLOWED_IMPORT_MODULES:
            raise InvalidModule(
                f"import {imp.module}.{imp.name} is not allowed "
                "(only 'edge', 'wasi_snapshot_preview1' and, for WAGI programs, "
                f"'{WASI_HTTP_MODULE}')"
            )
        if imp.module == "edge" and (imp.kind != "func" or imp.name not in EDGE_IMPORTS):
            raise InvalidModule(f"unknown host function edge.{imp.name}")
        if imp.module == "wasi_snapshot_preview1" and imp.kind != "func":
            raise InvalidModule(f"import {imp.module}.{imp.name} must be a function")
        if imp.module == WASI_HTTP_MODULE and (
            imp.kind != "func" or imp.name not in WASI_HTTP_IMPORTS
        ):
            raise InvalidModule(f"unknown host function {WASI_HTTP_MODULE}.{imp.name}")


def uses_wasi_http(info: ModuleInfo) -> bool:
    """The module imports WAGI's outbound HTTP (`wasi_experimental_http`)."""
    return any(imp.module == WASI_HTTP_MODULE for imp in info.imports)


def validate_module(wasm: bytes, *, memory_pages: int) -> ModuleInfo:
    """Everything an upload or a load must pass; returns the module's facts."""
    info = inspect_module(wasm)
    check_imports(info)
    if info.abi != ABI_WAGI and uses_wasi_http(info):
        raise InvalidModule(f"only a WAGI program (_start) may import {WASI_HTTP_MODULE}")
    if info.initial_pages > memory_pages:
        raise InvalidModule(
            f"initial memory of {info.initial_pages} pages exceeds memory_pages={memory_pages}"
        )
    return info
