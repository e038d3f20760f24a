// WAGI (CGI over WASI) for AssemblyScript: the request's CGI variables and body, and
// stdout for the response, over the few `wasi_snapshot_preview1` calls they need.
// The program is the entry file's top-level code, exported as `_start`:
//
//     asc prog.ts --runtime stub --use abort= --exportStart _start -O3 -o prog.wasm

import { text, utf8 } from "./index";

@external("wasi_snapshot_preview1", "environ_sizes_get")
declare function environ_sizes_get(countPtr: usize, sizePtr: usize): u16;
@external("wasi_snapshot_preview1", "environ_get")
declare function environ_get(environPtr: usize, bufPtr: usize): u16;
@external("wasi_snapshot_preview1", "fd_write")
declare function fd_write(fd: u32, iovs: usize, iovsLen: usize, written: usize): u16;
@external("wasi_snapshot_preview1", "fd_read")
declare function fd_read(fd: u32, iovs: usize, iovsLen: usize, read: usize): u16;
@external("wasi_snapshot_preview1", "proc_exit")
declare function proc_exit(code: u32): void;

// The whole environment as "NAME=value" strings.
export function environ(): Array<string> {
  const sizes = new Uint32Array(2);
  if (environ_sizes_get(sizes.dataStart, sizes.dataStart + 4) != 0) return [];
  const count = <i32>sizes[0];
  const pointers = new Uint32Array(count + 1);
  const buf = new Uint8Array(<i32>sizes[1]);
  if (environ_get(pointers.dataStart, buf.dataStart) != 0) return [];
  const out = new Array<string>();
  for (let i = 0; i < count; i++) {
    const start = <i32>(pointers[i] - <u32>buf.dataStart);
    const end = buf.indexOf(0, start);
    out.push(text(buf.subarray(start, end < 0 ? buf.length : end)));
  }
  return out;
}

// A CGI variable (REQUEST_METHOD, QUERY_STRING, HTTP_<NAME> ...), or `fallback`.
export function env(name: string, fallback: string = ""): string {
  const all = environ();
  const prefix = name + "=";
  for (let i = 0; i < all.length; i++) {
    if (all[i].startsWith(prefix)) return all[i].substring(prefix.length);
  }
  return fallback;
}

function writeTo(fd: u32, data: Uint8Array): void {
  const iov = new Uint32Array(2);
  const written = new Uint32Array(1);
  let at = 0;
  while (at < data.length) {
    iov[0] = <u32>(data.dataStart + <usize>at);
    iov[1] = <u32>(data.length - at);
    if (fd_write(fd, iov.dataStart, 1, written.dataStart) != 0 || written[0] == 0) return;
    at += <i32>written[0];
  }
}

// Writes to stdout: CGI header lines ("Status: 404 Not Found", "Content-Type: ..."),
// a blank line, then the body.
export function write(s: string): void {
  writeTo(1, utf8(s));
}

export function writeBytes(data: Uint8Array): void {
  writeTo(1, data);
}

// Writes a line to stderr, which goes to the function's log.
export function logLine(s: string): void {
  writeTo(2, utf8(s + "\n"));
}

// The request body, from stdin.
export function body(): Uint8Array {
  const chunks = new Array<Uint8Array>();
  const iov = new Uint32Array(2);
  const got = new Uint32Array(1);
  let total = 0;
  while (true) {
    const chunk = new Uint8Array(4096);
    iov[0] = <u32>chunk.dataStart;
    iov[1] = <u32>chunk.length;
    if (fd_read(0, iov.dataStart, 1, got.dataStart) != 0 || got[0] == 0) break;
    chunks.push(chunk.subarray(0, <i32>got[0]));
    total += <i32>got[0];
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < chunks.length; i++) {
    out.set(chunks[i], at);
    at += chunks[i].length;
  }
  return out;
}

// Ends the program with `code`; non-zero gives the client 500.
export function exit(code: u32): void {
  proc_exit(code);
}
