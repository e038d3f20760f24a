// edgefn: write an edgefn function in AssemblyScript.
//
// The request as the host hands it over, a response builder that writes the
// edge-v1 encoding, every `edge` host function, and the alloc/dealloc/handle
// exports around one handler:
//
//     import { Request, Response, serve } from "../sdk/assemblyscript/assembly/index";
//     export { alloc, dealloc, handle } from "../sdk/assemblyscript/assembly/index";
//
//     serve((req: Request): Response => Response.text("hello\n"));
//
// Build (docs/sdk.md): asc fn.ts --runtime incremental --use abort= -O3 -o fn.wasm

// ---- Raw imports of module "edge" (CONTRACT section 3) ----------------------------

@external("edge", "log")
declare function edge_log(level: i32, msgPtr: usize, msgLen: i32): void;
@external("edge", "metrics_increment")
declare function edge_metrics_increment(namePtr: usize, nameLen: i32, value: f64,
                                        tagsPtr: usize, tagsLen: i32): void;
@external("edge", "kv_get")
declare function edge_kv_get(keyPtr: usize, keyLen: i32, outPtr: usize, outCap: i32): i32;
@external("edge", "kv_put")
declare function edge_kv_put(keyPtr: usize, keyLen: i32, valPtr: usize, valLen: i32,
                             ttlSeconds: i32): i32;
@external("edge", "http_fetch")
declare function edge_http_fetch(reqPtr: usize, reqLen: i32, outPtr: usize, outCap: i32): i32;
@external("edge", "env_get")
declare function edge_env_get(keyPtr: usize, keyLen: i32, outPtr: usize, outCap: i32): i32;
@external("edge", "request_id")
declare function edge_request_id(outPtr: usize, outCap: i32): i32;
@external("edge", "request_header")
declare function edge_request_header(namePtr: usize, nameLen: i32, outPtr: usize,
                                     outCap: i32): i32;
@external("edge", "secret_get")
declare function edge_secret_get(namePtr: usize, nameLen: i32, outPtr: usize, outCap: i32): i32;

// ---- Results --------------------------------------------------------------------------

// Negative codes of the host functions: no value, and why.
export const NOT_FOUND: i32 = -1; // no such key, variable, header or secret
export const DENIED: i32 = -2;    // the function's policy does not allow it
export const QUOTA: i32 = -3;     // a quota is exhausted
export const FAILED: i32 = -4;    // an error or a timeout on the host side

export const LOG_DEBUG: i32 = 0;
export const LOG_INFO: i32 = 1;
export const LOG_NOTICE: i32 = 2;
export const LOG_WARN: i32 = 3;
export const LOG_ERROR: i32 = 4;

// A host function's answer: `value` when `code` is 0 (ok), else one of the codes above.
export class Result<T> {
  constructor(public code: i32, public value: T | null) {}

  get ok(): bool {
    return this.code == 0;
  }

  // The value, or `fallback` when there is none.
  or(fallback: T): T {
    const v = this.value;
    return v === null ? fallback : v;
  }
}

// ---- Bytes and strings ------------------------------------------------------------------

export function utf8(s: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(s));
}

export function text(b: Uint8Array): string {
  return String.UTF8.decodeUnsafe(b.dataStart, b.length);
}

function concat(parts: Array<Uint8Array>): Uint8Array {
  let n = 0;
  for (let i = 0; i < parts.length; i++) n += parts[i].length;
  const out = new Uint8Array(n);
  let at = 0;
  for (let i = 0; i < parts.length; i++) {
    out.set(parts[i], at);
    at += parts[i].length;
  }
  return out;
}

function hex(c: i32): i32 {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

// Percent-decodes `s`, `+` as a space.
export function percentDecode(s: string): string {
  const b = utf8(s);
  const out = new Uint8Array(b.length);
  let n = 0;
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (c == 37 && i + 2 < b.length && hex(b[i + 1]) >= 0 && hex(b[i + 2]) >= 0) {
      out[n++] = <u8>(hex(b[i + 1]) * 16 + hex(b[i + 2]));
      i += 2;
    } else {
      out[n++] = c == 43 ? 32 : c;
    }
  }
  return text(out.subarray(0, n));
}

// Every lookup returns the full length and writes min(length, cap) bytes; a value
// longer than the first buffer is read again with a buffer of its length.
function lookup(call: (out: usize, cap: i32) => i32): Result<Uint8Array> {
  let buf = new Uint8Array(1024);
  while (true) {
    const n = call(buf.dataStart, buf.length);
    if (n < 0) return new Result<Uint8Array>(n, null);
    if (n <= buf.length) return new Result<Uint8Array>(0, buf.slice(0, n));
    buf = new Uint8Array(n);
  }
}

function lookupText(r: Result<Uint8Array>): Result<string> {
  const v = r.value;
  return new Result<string>(r.code, v === null ? null : text(v));
}

// ---- Host functions ------------------------------------------------------------------------

// Arguments of the lookups: the closures below read them, since AssemblyScript
// closures cannot capture locals.
let argA: Uint8Array = new Uint8Array(0);

export function log(level: i32, msg: string): void {
  const b = utf8(msg);
  edge_log(level, b.dataStart, b.length);
}

// Adds `value` to the counter `name`; `tags` are "k=v" strings.
export function metricsIncrement(name: string, value: f64, tags: Array<string> = []): void {
  const n = utf8(name);
  let lines = "";
  for (let i = 0; i < tags.length; i++) lines += tags[i] + "\n";
  const t = utf8(lines);
  edge_metrics_increment(n.dataStart, n.length, value, t.dataStart, t.length);
}

export function kvGet(key: string): Result<Uint8Array> {
  argA = utf8(key);
  return lookup((out: usize, cap: i32): i32 => edge_kv_get(argA.dataStart, argA.length, out, cap));
}

// Stores `value` under `key`; ttlSeconds 0 keeps it until it is replaced. 0 ok, else a code.
export function kvPut(key: string, value: Uint8Array, ttlSeconds: i32 = 0): i32 {
  const k = utf8(key);
  return edge_kv_put(k.dataStart, k.length, value.dataStart, value.length, ttlSeconds);
}

export function envGet(name: string): Result<string> {
  argA = utf8(name);
  return lookupText(lookup((out: usize, cap: i32): i32 =>
    edge_env_get(argA.dataStart, argA.length, out, cap)));
}

export function requestId(): Result<string> {
  return lookupText(lookup((out: usize, cap: i32): i32 => edge_request_id(out, cap)));
}

export function requestHeader(name: string): Result<string> {
  argA = utf8(name);
  return lookupText(lookup((out: usize, cap: i32): i32 =>
    edge_request_header(argA.dataStart, argA.length, out, cap)));
}

// A secret the function lists in `secrets`; keep its value out of logs and responses.
export function secretGet(name: string): Result<string> {
  argA = utf8(name);
  return lookupText(lookup((out: usize, cap: i32): i32 =>
    edge_secret_get(argA.dataStart, argA.length, out, cap)));
}

// An outbound request for httpFetch.
export class FetchRequest {
  headers: Array<string> = []; // "name: value"
  body: Uint8Array = new Uint8Array(0);

  constructor(public method: string, public url: string) {}

  static get(url: string): FetchRequest {
    return new FetchRequest("GET", url);
  }

  header(name: string, value: string): FetchRequest {
    this.headers.push(name + ": " + value);
    return this;
  }

  withBody(body: Uint8Array): FetchRequest {
    this.body = body;
    return this;
  }

  // "METHOD URL\n" + header lines + "\n" + body.
  encode(): Uint8Array {
    let head = this.method + " " + this.url + "\n";
    for (let i = 0; i < this.headers.length; i++) head += this.headers[i] + "\n";
    return concat([utf8(head + "\n"), this.body]);
  }
}

// Sends `req` under the function's egress policy; the answer parsed from the
// edge-v1 response encoding.
export function httpFetch(req: FetchRequest): Result<Response> {
  argA = req.encode();
  const r = lookup((out: usize, cap: i32): i32 =>
    edge_http_fetch(argA.dataStart, argA.length, out, cap));
  const v = r.value;
  if (v === null) return new Result<Response>(r.code, null);
  const parsed = Response.parse(v);
  return new Result<Response>(parsed === null ? FAILED : 0, parsed);
}

// ---- The request ---------------------------------------------------------------------------

export class Request {
  constructor(
    public method: string,     // "GET"
    public target: string,     // "/a/b?x=1"
    public headers: string,    // "name: value\n" lines, names lower-case
    public body: Uint8Array,
  ) {}

  // The path without its query.
  path(): string {
    const q = this.target.indexOf("?");
    return q < 0 ? this.target : this.target.substring(0, q);
  }

  queryString(): string {
    const q = this.target.indexOf("?");
    return q < 0 ? "" : this.target.substring(q + 1);
  }

  // The percent-decoded value of query parameter `name`, or null.
  query(name: string): string | null {
    const pairs = this.queryString().split("&");
    for (let i = 0; i < pairs.length; i++) {
      const pair = pairs[i];
      const eq = pair.indexOf("=");
      const key = eq < 0 ? pair : pair.substring(0, eq);
      if (key == name) return percentDecode(eq < 0 ? "" : pair.substring(eq + 1));
    }
    return null;
  }

  // The first value of header `name` (lower-case), or null.
  header(name: string): string | null {
    const lines = this.headers.split("\n");
    for (let i = 0; i < lines.length; i++) {
      let line = lines[i];
      if (line.endsWith("\r")) line = line.substring(0, line.length - 1);
      const colon = line.indexOf(":");
      if (colon > 0 && line.substring(0, colon) == name) return line.substring(colon + 1).trimStart();
    }
    return null;
  }

  bodyText(): string {
    return text(this.body);
  }
}

// ---- The response ------------------------------------------------------------------------

export class Response {
  headers: Array<string> = []; // "name: value"
  body: Uint8Array = new Uint8Array(0);

  constructor(public status: i32 = 200) {}

  // 200 with content-type text/plain; charset=utf-8.
  static text(body: string): Response {
    return new Response(200).header("content-type", "text/plain; charset=utf-8").withText(body);
  }

  // 200 with content-type application/json; `body` is JSON already.
  static json(body: string): Response {
    return new Response(200).header("content-type", "application/json").withText(body);
  }

  withStatus(status: i32): Response {
    this.status = status;
    return this;
  }

  header(name: string, value: string): Response {
    this.headers.push(name + ": " + value);
    return this;
  }

  withBody(body: Uint8Array): Response {
    this.body = body;
    return this;
  }

  withText(body: string): Response {
    this.body = utf8(body);
    return this;
  }

  // The first value of header `name`, compared without case, or null.
  getHeader(name: string): string | null {
    const want = name.toLowerCase();
    for (let i = 0; i < this.headers.length; i++) {
      const h = this.headers[i];
      const colon = h.indexOf(":");
      if (h.substring(0, colon).toLowerCase() == want) return h.substring(colon + 1).trimStart();
    }
    return null;
  }

  bodyText(): string {
    return text(this.body);
  }

  // The section-1 encoding: "STATUS\n", header lines, "\n", body.
  encode(): Uint8Array {
    let head = (this.status % 1000).toString().padStart(3, "0") + "\n";
    for (let i = 0; i < this.headers.length; i++) head += this.headers[i] + "\n";
    return concat([utf8(head + "\n"), this.body]);
  }

  // Reads the section-1 encoding (a "\r" before "\n" tolerated); null when malformed.
  static parse(bytes: Uint8Array): Response | null {
    let at = 0;
    let lines: Array<string> = [];
    while (true) {
      const nl = bytes.indexOf(10, at);
      if (nl < 0) return null;
      let end = nl;
      if (end > at && bytes[end - 1] == 13) end--;
      const line = text(bytes.subarray(at, end));
      at = nl + 1;
      if (line.length == 0 && lines.length > 0) break;
      lines.push(line);
    }
    const status = I32.parseInt(lines[0].trim());
    if (status < 100 || status > 999) return null;
    const resp = new Response(status);
    for (let i = 1; i < lines.length; i++) {
      const colon = lines[i].indexOf(":");
      if (colon < 0) return null;
      resp.header(lines[i].substring(0, colon), lines[i].substring(colon + 1).trimStart());
    }
    resp.body = bytes.slice(at);
    return resp;
  }
}

// ---- The edge-v1 exports ----------------------------------------------------------------

let handler: ((req: Request) => Response) | null = null;

// Sets the function that answers every request; call it once at the top level.
export function serve(fn: (req: Request) => Response): void {
  handler = fn;
}

export function alloc(size: i32): usize {
  return heap.alloc(size > 0 ? <usize>size : 1);
}

export function dealloc(ptr: usize, size: i32): void {
  heap.free(ptr);
}

function bytesAt(ptr: usize, len: i32): Uint8Array {
  const out = new Uint8Array(len > 0 ? len : 0);
  if (len > 0) memory.copy(out.dataStart, ptr, <usize>len);
  return out;
}

// Calls the handler and writes its response; returns the full encoded length, which is
// above `cap` when it did not fit (the client gets 502 rather than a cut body).
export function handle(methodPtr: usize, methodLen: i32, pathPtr: usize, pathLen: i32,
                       headersPtr: usize, headersLen: i32, bodyPtr: usize, bodyLen: i32,
                       outPtr: usize, cap: i32): i32 {
  const fn = handler;
  if (fn === null) return -1;
  const req = new Request(
    String.UTF8.decodeUnsafe(methodPtr, <usize>methodLen),
    String.UTF8.decodeUnsafe(pathPtr, <usize>pathLen),
    String.UTF8.decodeUnsafe(headersPtr, <usize>headersLen),
    bytesAt(bodyPtr, bodyLen),
  );
  const wire = fn(req).encode();
  const n = wire.length < cap ? wire.length : (cap > 0 ? cap : 0);
  memory.copy(outPtr, wire.dataStart, <usize>n);
  return wire.length;
}
