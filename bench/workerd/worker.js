// The edge-v1 host side (docs/edge.md) in a Cloudflare Worker, serving
// tests/fixtures/wasm/echo.wasm: the workerd peer of the edgefn hot-path
// benchmark. One instance per isolate, reused across requests, as edgefn does.
import guestModule from "./echo.wasm";

const RESPONSE_CAP = 65536; // the function's max_response_bytes
const NULL_BODY_STATUS = new Set([101, 204, 205, 304]);
const WASI_ENOSYS = 52;
const EDGE_FAILED = -4;

// Stubs for whatever the guest imports (echo.wasm imports nothing): WASI calls
// fail with ENOSYS, edge host calls with -4, proc_exit ends the call.
function stubImports(module) {
  const imports = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.kind !== "function") continue;
    let fn;
    if (imp.module === "wasi_snapshot_preview1") {
      fn = imp.name === "proc_exit"
        ? (code) => { throw new Error(`guest called proc_exit(${code})`); }
        : () => WASI_ENOSYS;
    } else {
      fn = () => EDGE_FAILED;
    }
    (imports[imp.module] ??= {})[imp.name] = fn;
  }
  return imports;
}

const instance = new WebAssembly.Instance(guestModule, stubImports(guestModule));
const { memory, alloc, dealloc, handle } = instance.exports;
if (instance.exports._initialize) instance.exports._initialize();

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function encodeHeaders(headers, requestId) {
  // Names arrive lower-cased; x-request-id is always present for the guest.
  let text = "";
  let hasId = false;
  for (const [name, value] of headers) {
    if (name === "x-request-id") hasId = true;
    text += `${name}: ${value}\n`;
  }
  if (!hasId) text += `x-request-id: ${requestId}\n`;
  return encoder.encode(text);
}

// STATUS\n, name: value\n lines, \n, body; a \r before a \n is tolerated.
function parseResponse(bytes) {
  let pos = 0;
  const line = () => {
    const nl = bytes.indexOf(10, pos);
    const end = nl === -1 ? bytes.length : nl;
    let stop = end;
    if (stop > pos && bytes[stop - 1] === 13) stop--;
    const text = decoder.decode(bytes.subarray(pos, stop));
    pos = nl === -1 ? bytes.length : nl + 1;
    return text;
  };
  const statusLine = line().trim();
  const status = Number(statusLine);
  if (!/^\d{3}$/.test(statusLine) || status < 200 || status > 599) {
    throw new Error(`bad status line ${JSON.stringify(statusLine.slice(0, 20))}`);
  }
  const headers = new Headers();
  for (let h = line(); h !== "" || pos < bytes.length; h = line()) {
    if (h === "") break;
    const colon = h.indexOf(":");
    if (colon <= 0) throw new Error(`malformed header line ${JSON.stringify(h.slice(0, 80))}`);
    headers.append(h.slice(0, colon).trim(), h.slice(colon + 1).trim());
  }
  return { status, headers, body: bytes.slice(pos) };
}

function invoke(method, path, headers, body) {
  const parts = [method, path, headers, body];
  const total = parts.reduce((n, p) => n + p.length, 0) + RESPONSE_CAP;
  const ptr = alloc(total);
  if (ptr <= 0) throw new Error(`alloc(${total}) failed`);
  // alloc may have grown memory: take the view afterwards.
  const view = new Uint8Array(memory.buffer);
  const args = [];
  let offset = ptr;
  for (const p of parts) {
    view.set(p, offset);
    args.push(offset, p.length);
    offset += p.length;
  }
  try {
    const written = handle(...args, offset, RESPONSE_CAP);
    if (written < 0) return { error: 500, message: `handle returned ${written}` };
    if (written > RESPONSE_CAP) return { error: 502, message: `response of ${written} bytes` };
    return { raw: new Uint8Array(memory.buffer, offset, written).slice() };
  } finally {
    if (dealloc) dealloc(ptr, total);
  }
}

export default {
  async fetch(request) {
    const requestId = request.headers.get("x-request-id") || crypto.randomUUID();
    const url = new URL(request.url);
    const result = invoke(
      encoder.encode(request.method.toUpperCase()),
      encoder.encode(url.pathname + url.search),
      encodeHeaders(request.headers, requestId),
      new Uint8Array(await request.arrayBuffer()),
    );
    if (result.error) {
      return new Response(`${result.message}\n`, {
        status: result.error,
        headers: { "x-request-id": requestId },
      });
    }
    let parsed;
    try {
      parsed = parseResponse(result.raw);
    } catch (err) {
      return new Response(`${err.message}\n`, { status: 500, headers: { "x-request-id": requestId } });
    }
    parsed.headers.set("x-request-id", requestId);
    const body = NULL_BODY_STATUS.has(parsed.status) ? null : parsed.body;
    return new Response(body, { status: parsed.status, headers: parsed.headers });
  },
};
