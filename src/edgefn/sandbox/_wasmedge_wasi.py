"""WASI under WasmEdge: its built-in preview1 module, with stdio taken over by the host.

WasmEdge's WASI binds guest fds 0, 1 and 2 to the process's own stdin, stdout and
stderr, and its C API cannot give an instance other ones. So before a module is
loaded its imports of `fd_write` and `fd_read` are renamed to the host module
`edgefn_wasi`, implemented here: writes reaching the process's stdout or stderr are
captured, reads of its stdin serve the request body, and reads of any other fd (a
file under the read-only /config preopen) go to that fd's native handle, which the
built-in module opened and rights-checked. Every other WASI call stays built-in.
The standard `sock_*` calls are answered here too (no socket ever exists), and
WasmEdge's non-standard WASI extensions (`sock_open`, `sock_connect`, ...) are
refused at compile, as wasmtime's linker refuses them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Protocol

from edgefn.sandbox.errors import InvalidModule
from edgefn.sandbox.hostcalls import GuestMemory
from edgefn.sandbox.wasminfo import _Reader, _skip_import_desc

WASI_MODULE = "wasi_snapshot_preview1"
STDIO_MODULE = "edgefn_wasi"
# The start function, exported so that it runs under the invocation deadline.
START_EXPORT = "edgefn.start"

PREVIEW1 = frozenset(
    """
    args_get args_sizes_get environ_get environ_sizes_get clock_res_get clock_time_get
    fd_advise fd_allocate fd_close fd_datasync fd_fdstat_get fd_fdstat_set_flags
    fd_fdstat_set_rights fd_filestat_get fd_filestat_set_size fd_filestat_set_times
    fd_pread fd_prestat_get fd_prestat_dir_name fd_pwrite fd_read fd_readdir fd_renumber
    fd_seek fd_sync fd_tell fd_write path_create_directory path_filestat_get
    path_filestat_set_times path_link path_open path_readlink path_remove_directory
    path_rename path_symlink path_unlink_file poll_oneoff proc_exit proc_raise sched_yield
    random_get sock_accept sock_recv sock_send sock_shutdown
    """.split()  # noqa: SIM905
)

ERRNO_SUCCESS = 0
ERRNO_BADF = 8
ERRNO_FAULT = 21
ERRNO_INVAL = 28
ERRNO_IO = 29
ERRNO_ISDIR = 31
ERRNO_NOTSOCK = 57

_HOST_ERRNO = {errno.EBADF: ERRNO_BADF, errno.EINVAL: ERRNO_INVAL, errno.EISDIR: ERRNO_ISDIR}
_MAX_IOVECS = 1024
_MAX_READ = 1 << 20

_SECTION_IMPORT, _SECTION_EXPORT, _SECTION_START = 2, 7, 8


class Stdio(Protocol):
    """What the calling instance offers its WASI stdio."""

    def capture(self, stream: int, data: bytes) -> None: ...

    def read_stdin(self, size: int) -> bytes: ...

    def native_fd(self, fd: int) -> int | None:
        """The host fd behind a guest fd of the built-in WASI module, None if closed."""
        ...


# --- the module rewrite ---------------------------------------------------------


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _name(text: str) -> bytes:
    raw = text.encode()
    return _leb(len(raw)) + raw


def _section(section_id: int, body: bytes) -> bytes:
    return bytes([section_id]) + _leb(len(body)) + body


def _rewrite_imports(wasm: bytes, start: int, end: int) -> bytes:
    r = _Reader(wasm, start, end)
    count = r.u32()
    out = bytearray(_leb(count))
    for _ in range(count):
        module, name, kind = r.name(), r.name(), r.byte()
        desc_start = r.pos
        _skip_import_desc(r, kind)
        if module == WASI_MODULE:
            if name not in PREVIEW1:
                raise InvalidModule(f"import {module}.{name} is not a WASI preview1 function")
            if name in HOST_FUNCTIONS:
                module = STDIO_MODULE
        out += _name(module) + _name(name) + bytes([kind]) + wasm[desc_start : r.pos]
    return bytes(out)


def prepare(wasm: bytes) -> bytes:
    """The module as WasmEdge runs it: stdio imports renamed, the start function exported.

    Only names change; no function index moves, so the code section is copied as is.
    """
    r = _Reader(wasm, 8)
    sections: list[tuple[int, int, int, int]] = []
    start_func: int | None = None
    while r.pos < r.end:
        header = r.pos
        section_id = r.byte()
        size = r.u32()
        sections.append((section_id, header, r.pos, r.pos + size))
        if section_id == _SECTION_START:
            start_func = _Reader(wasm, r.pos, r.pos + size).u32()
        r.pos += size
    out = bytearray(wasm[:8])
    for section_id, header, start, end in sections:
        if section_id == _SECTION_IMPORT:
            out += _section(section_id, _rewrite_imports(wasm, start, end))
        elif section_id == _SECTION_EXPORT and start_func is not None:
            body = _Reader(wasm, start, end)
            count = body.u32()
            extra = _name(START_EXPORT) + b"\x00" + _leb(start_func)
            out += _section(section_id, _leb(count + 1) + wasm[body.pos : end] + extra)
        elif section_id == _SECTION_START:
            continue
        else:
            out += wasm[header:end]
    if start_func is not None and not any(s[0] == _SECTION_EXPORT for s in sections):
        raise InvalidModule("a module with a start function must export its entry points")
    return bytes(out)


# --- the host functions ---------------------------------------------------------


def _iovecs(mem: GuestMemory, iovs: int, count: int) -> list[tuple[int, int]]:
    if count < 0 or count > _MAX_IOVECS:
        raise ValueError("too many iovecs")
    raw = mem.read(iovs, 8 * count)
    return [
        (int.from_bytes(raw[i : i + 4], "little"), int.from_bytes(raw[i + 4 : i + 8], "little"))
        for i in range(0, len(raw), 8)
    ]


def _store_u32(mem: GuestMemory, ptr: int, value: int) -> None:
    mem.write(ptr, (value & 0xFFFFFFFF).to_bytes(4, "little"))


def fd_write(mem: GuestMemory, stdio: Stdio, a: list[int]) -> int:
    fd, iovs, count, nwritten = a
    native = stdio.native_fd(fd)
    if native not in (1, 2):
        # Nothing but stdout and stderr is writable: /config is read-only.
        return ERRNO_BADF
    data = b"".join(mem.read(buf, length) for buf, length in _iovecs(mem, iovs, count))
    stdio.capture(native, data)
    _store_u32(mem, nwritten, len(data))
    return ERRNO_SUCCESS


def _scatter(mem: GuestMemory, vecs: list[tuple[int, int]], data: bytes) -> None:
    offset = 0
    for buf, length in vecs:
        chunk = data[offset : offset + length]
        if not chunk:
            break
        mem.write(buf, chunk)
        offset += len(chunk)


def fd_read(mem: GuestMemory, stdio: Stdio, a: list[int]) -> int:
    fd, iovs, count, nread = a
    native = stdio.native_fd(fd)
    if native is None or native in (1, 2):
        return ERRNO_BADF
    vecs = _iovecs(mem, iovs, count)
    want = min(sum(length for _, length in vecs), _MAX_READ)
    if native == 0:
        data = stdio.read_stdin(want)
    else:
        try:
            data = os.read(native, want)
        except OSError as exc:
            return _HOST_ERRNO.get(exc.errno or 0, ERRNO_IO)
    _scatter(mem, vecs, data)
    _store_u32(mem, nread, len(data))
    return ERRNO_SUCCESS


def _no_socket(mem: GuestMemory, stdio: Stdio, a: list[int]) -> int:
    return ERRNO_BADF if stdio.native_fd(a[0]) is None else ERRNO_NOTSOCK


# name -> (number of i32 parameters, implementation); each returns an errno.
HOST_FUNCTIONS: dict[str, tuple[int, Callable[[GuestMemory, Stdio, list[int]], int]]] = {
    "fd_write": (4, fd_write),
    "fd_read": (4, fd_read),
    "sock_accept": (3, _no_socket),
    "sock_recv": (6, _no_socket),
    "sock_send": (5, _no_socket),
    "sock_shutdown": (2, _no_socket),
}


def call(name: str, mem: GuestMemory, stdio: Stdio, args: list[int]) -> int:
    """Run one stdio host function; a bad guest pointer is EFAULT, as WASI answers."""
    try:
        return HOST_FUNCTIONS[name][1](mem, stdio, args)
    except IndexError:
        return ERRNO_FAULT
    except ValueError:
        return ERRNO_INVAL
