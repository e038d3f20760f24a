"""Small source trees of each language, packed as the build API takes them."""

from __future__ import annotations

import io
import tarfile
import zipfile

HELLO_C = b"""#include <stdint.h>
static char heap[65536];
static int32_t used;
__attribute__((export_name("alloc"))) int32_t alloc(int32_t n) {
    int32_t p = (int32_t)(heap + used);
    used += n;
    return p;
}
__attribute__((export_name("handle"))) int32_t handle(
    int32_t m, int32_t ml, int32_t p, int32_t pl, int32_t h, int32_t hl,
    int32_t b, int32_t bl, int32_t out, int32_t cap) {
    static const char r[] = "200\\ncontent-type: text/plain\\n\\nhello from c\\n";
    char *o = (char *)out;
    for (unsigned i = 0; i < sizeof r - 1; i++) o[i] = r[i];
    return sizeof r - 1;
}
"""

HELLO_WAT = b"""(module
  (memory (export "memory") 2)
  (data (i32.const 0) "200\\ncontent-type: text/plain\\n\\nhello from wat\\n")
  (func (export "alloc") (param i32) (result i32) i32.const 4096)
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (memory.copy (local.get 8) (i32.const 0) (i32.const 45))
    i32.const 45))
"""

HELLO_RUST = b"""static mut HEAP: [u8; 65536] = [0; 65536];
static mut USED: usize = 0;

#[no_mangle]
pub extern "C" fn alloc(n: i32) -> i32 {
    unsafe {
        let p = HEAP.as_mut_ptr().add(USED) as i32;
        USED += n as usize;
        p
    }
}

#[no_mangle]
pub extern "C" fn handle(
    _m: i32, _ml: i32, _p: i32, _pl: i32, _h: i32, _hl: i32, _b: i32, _bl: i32,
    out: i32, _cap: i32,
) -> i32 {
    let r = b"200\\ncontent-type: text/plain\\n\\nhello from rust\\n";
    unsafe { core::ptr::copy_nonoverlapping(r.as_ptr(), out as *mut u8, r.len()) };
    r.len() as i32
}
"""

HELLO_AS = b"""export function alloc(n: i32): i32 {
  return changetype<i32>(heap.alloc(<usize>n));
}
export function handle(m: i32, ml: i32, p: i32, pl: i32, h: i32, hl: i32,
                       b: i32, bl: i32, out: i32, cap: i32): i32 {
  const r = String.UTF8.encode("200\\ncontent-type: text/plain\\n\\nhello from as\\n");
  memory.copy(<usize>out, changetype<usize>(r), <usize>r.byteLength);
  return r.byteLength;
}
"""

TREES: dict[str, dict[str, bytes]] = {
    "c": {"fn.c": HELLO_C},
    "wat": {"hello.wat": HELLO_WAT},
    "rust": {"src/lib.rs": HELLO_RUST},
    "assemblyscript": {"assembly/index.ts": HELLO_AS},
}


def tgz(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    """A tar of `files` (gzip'd unless `mode` is another tarfile write mode)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tgz_with(*members: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def zipped(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()
