//! edgefn: write an edgefn function in Rust.
//!
//! One crate, no dependencies: the request as the host hands it over, a response
//! builder that writes the `edge-v1` encoding, every `edge` host function, and
//! `handler!`, which exports `alloc`, `dealloc` and `handle` around a plain function:
//!
//! ```ignore
//! use edgefn::{Request, Response};
//!
//! fn serve(req: &Request) -> Response {
//!     Response::new(200).header("content-type", "text/plain").body(req.path())
//! }
//!
//! edgefn::handler!(serve);
//! ```
//!
//! Build it for `wasm32-wasi` with rustc alone (docs/sdk.md):
//!
//! ```sh
//! rustc --edition 2021 --target wasm32-wasi -O --crate-type rlib \
//!       --crate-name edgefn sdk/rust/src/lib.rs -o libedgefn.rlib
//! rustc --edition 2021 --target wasm32-wasi -O --crate-type cdylib \
//!       --extern edgefn=libedgefn.rlib fn.rs -o fn.wasm
//! ```

use std::fmt;

/// The raw imports of module `edge`, exactly as CONTRACT §3 declares them.
pub mod raw {
    #[link(wasm_import_module = "edge")]
    extern "C" {
        pub fn log(level: i32, msg_ptr: *const u8, msg_len: i32);
        pub fn metrics_increment(
            name_ptr: *const u8,
            name_len: i32,
            value: f64,
            tags_ptr: *const u8,
            tags_len: i32,
        );
        pub fn kv_get(key_ptr: *const u8, key_len: i32, out_ptr: *mut u8, out_cap: i32) -> i32;
        pub fn kv_put(
            key_ptr: *const u8,
            key_len: i32,
            val_ptr: *const u8,
            val_len: i32,
            ttl_seconds: i32,
        ) -> i32;
        pub fn http_fetch(req_ptr: *const u8, req_len: i32, out_ptr: *mut u8, out_cap: i32)
            -> i32;
        pub fn env_get(key_ptr: *const u8, key_len: i32, out_ptr: *mut u8, out_cap: i32) -> i32;
        pub fn request_id(out_ptr: *mut u8, out_cap: i32) -> i32;
        pub fn request_header(
            name_ptr: *const u8,
            name_len: i32,
            out_ptr: *mut u8,
            out_cap: i32,
        ) -> i32;
        pub fn secret_get(name_ptr: *const u8, name_len: i32, out_ptr: *mut u8, out_cap: i32)
            -> i32;
    }
}

// ---- Errors -------------------------------------------------------------------

/// Why a host function gave no value: its negative return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// -1: no such key, variable, header or secret.
    NotFound,
    /// -2: the function's policy does not allow it (KV off, host not allowlisted,
    /// secret not listed).
    Denied,
    /// -3: a quota is exhausted.
    Quota,
    /// -4: an error or a timeout on the host side (also any code this SDK does not know).
    Failed,
}

impl HostError {
    pub fn from_code(code: i32) -> HostError {
        match code {
            -1 => HostError::NotFound,
            -2 => HostError::Denied,
            -3 => HostError::Quota,
            _ => HostError::Failed,
        }
    }

    pub fn code(self) -> i32 {
        match self {
            HostError::NotFound => -1,
            HostError::Denied => -2,
            HostError::Quota => -3,
            HostError::Failed => -4,
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostError::NotFound => "not found",
            HostError::Denied => "denied by policy",
            HostError::Quota => "quota exceeded",
            HostError::Failed => "failed",
        })
    }
}

impl std::error::Error for HostError {}

// ---- Host functions -------------------------------------------------------------

/// Log levels of `log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Notice = 2,
    Warn = 3,
    Error = 4,
}

// Every lookup returns the full length and writes min(length, cap) bytes; a value
// longer than the first buffer is read again with a buffer of its length.
fn lookup(call: impl Fn(*mut u8, i32) -> i32) -> Result<Vec<u8>, HostError> {
    let mut buf: Vec<u8> = vec![0; 1024];
    loop {
        let n = call(buf.as_mut_ptr(), buf.len() as i32);
        if n < 0 {
            return Err(HostError::from_code(n));
        }
        let n = n as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        buf = vec![0; n];
    }
}

fn lookup_str(call: impl Fn(*mut u8, i32) -> i32) -> Result<String, HostError> {
    lookup(call).map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Writes `msg` to the function's log at `level`.
pub fn log(level: Level, msg: &str) {
    unsafe { raw::log(level as i32, msg.as_ptr(), msg.len() as i32) }
}

/// Adds `value` to the counter `name`, with `tags` as `(key, value)` pairs.
pub fn metrics_increment(name: &str, value: f64, tags: &[(&str, &str)]) {
    let mut lines = String::new();
    for (k, v) in tags {
        lines.push_str(k);
        lines.push('=');
        lines.push_str(v);
        lines.push('\n');
    }
    unsafe {
        raw::metrics_increment(
            name.as_ptr(),
            name.len() as i32,
            value,
            lines.as_ptr(),
            lines.len() as i32,
        )
    }
}

/// The value stored under `key`.
pub fn kv_get(key: &str) -> Result<Vec<u8>, HostError> {
    lookup(|out, cap| unsafe { raw::kv_get(key.as_ptr(), key.len() as i32, out, cap) })
}

/// Stores `value` under `key`; `ttl_seconds` 0 keeps it until it is replaced.
pub fn kv_put(key: &str, value: &[u8], ttl_seconds: i32) -> Result<(), HostError> {
    let rc = unsafe {
        raw::kv_put(key.as_ptr(), key.len() as i32, value.as_ptr(), value.len() as i32, ttl_seconds)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(HostError::from_code(rc))
    }
}

/// A declared environment variable of the function.
pub fn env_get(name: &str) -> Result<String, HostError> {
    lookup_str(|out, cap| unsafe { raw::env_get(name.as_ptr(), name.len() as i32, out, cap) })
}

/// This request's id (also the `x-request-id` header).
pub fn request_id() -> Result<String, HostError> {
    lookup_str(|out, cap| unsafe { raw::request_id(out, cap) })
}

/// A request header by its lower-case name, asked of the host.
pub fn request_header(name: &str) -> Result<String, HostError> {
    lookup_str(|out, cap| unsafe { raw::request_header(name.as_ptr(), name.len() as i32, out, cap) })
}

/// A secret of the function's project that the function lists in `secrets`.
/// Keep its value out of logs and responses.
pub fn secret_get(name: &str) -> Result<String, HostError> {
    lookup_str(|out, cap| unsafe { raw::secret_get(name.as_ptr(), name.len() as i32, out, cap) })
}

/// An outbound request for `http_fetch`.
pub struct FetchRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl FetchRequest {
    pub fn new(method: &str, url: &str) -> FetchRequest {
        FetchRequest {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(url: &str) -> FetchRequest {
        FetchRequest::new("GET", url)
    }

    pub fn header(mut self, name: &str, value: &str) -> FetchRequest {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> FetchRequest {
        self.body = body.into();
        self
    }

    /// "METHOD URL\n" + header lines + "\n" + body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.body.len());
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.url.as_bytes());
        out.push(b'\n');
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }
}

/// Sends `req` under the function's egress policy; the answer parsed from the
/// `edge-v1` response encoding.
pub fn http_fetch(req: &FetchRequest) -> Result<Response, HostError> {
    let wire = req.encode();
    let bytes =
        lookup(|out, cap| unsafe { raw::http_fetch(wire.as_ptr(), wire.len() as i32, out, cap) })?;
    Response::parse(&bytes).ok_or(HostError::Failed)
}

// ---- The request ------------------------------------------------------------------

/// The request as the host passed it to `handle`.
pub struct Request<'a> {
    /// `GET`, upper case.
    pub method: &'a str,
    /// The request target with its query: `/api/hello?x=1`.
    pub target: &'a str,
    /// `name: value\n` lines, names lower-case.
    pub headers: &'a [u8],
    pub body: &'a [u8],
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s`, `+` as a space.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(hi * 16 + lo);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<'a> Request<'a> {
    /// The path without its query.
    pub fn path(&self) -> &'a str {
        match self.target.find('?') {
            Some(i) => &self.target[..i],
            None => self.target,
        }
    }

    /// The raw query string, without `?` (empty when there is none).
    pub fn query_string(&self) -> &'a str {
        match self.target.find('?') {
            Some(i) => &self.target[i + 1..],
            None => "",
        }
    }

    /// The percent-decoded value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<String> {
        for pair in self.query_string().split('&') {
            let (k, v) = match pair.find('=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, ""),
            };
            if k == name {
                return Some(percent_decode(v));
            }
        }
        None
    }

    /// Every header as `(name, value)`, names lower-case, in order.
    pub fn header_pairs(&self) -> Vec<(&'a str, &'a str)> {
        let text = std::str::from_utf8(self.headers).unwrap_or("");
        text.split('\n')
            .filter_map(|line| {
                let line = line.strip_suffix('\r').unwrap_or(line);
                let i = line.find(':')?;
                Some((&line[..i], line[i + 1..].trim_start()))
            })
            .collect()
    }

    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.header_pairs().into_iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The body as UTF-8 (invalid sequences replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(self.body).into_owned()
    }
}

// ---- The response -------------------------------------------------------------------

/// A response: what a handler returns, and what `http_fetch` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }

    /// 200 with `content-type: text/plain; charset=utf-8`.
    pub fn text(body: &str) -> Response {
        Response::new(200).header("content-type", "text/plain; charset=utf-8").body(body)
    }

    /// 200 with `content-type: application/json`; `body` is JSON already.
    pub fn json(body: &str) -> Response {
        Response::new(200).header("content-type", "application/json").body(body)
    }

    pub fn status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// The first value of header `name`, compared without case.
    pub fn get_header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The section-1 encoding: `STATUS\n`, header lines, `\n`, body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.body.len());
        out.extend_from_slice(format!("{:03}\n", self.status % 1000).as_bytes());
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads the section-1 encoding (a `\r` before `\n` tolerated); None when malformed.
    pub fn parse(bytes: &[u8]) -> Option<Response> {
        let mut rest = bytes;
        let mut lines: Vec<&[u8]> = Vec::new();
        loop {
            let nl = rest.iter().position(|&c| c == b'\n')?;
            let mut line = &rest[..nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            rest = &rest[nl + 1..];
            if line.is_empty() && !lines.is_empty() {
                break;
            }
            lines.push(line);
        }
        let status: u16 = std::str::from_utf8(lines[0]).ok()?.trim().parse().ok()?;
        let mut resp = Response::new(status);
        for line in &lines[1..] {
            let text = std::str::from_utf8(line).ok()?;
            let i = text.find(':')?;
            resp.headers.push((text[..i].to_string(), text[i + 1..].trim_start().to_string()));
        }
        resp.body = rest.to_vec();
        Some(resp)
    }

    /// Text of the body (invalid UTF-8 replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

// ---- The edge-v1 exports ---------------------------------------------------------------

#[doc(hidden)]
pub mod __export {
    use super::{Request, Response};
    use std::alloc::{alloc, dealloc, Layout};

    fn layout(size: i32) -> Layout {
        Layout::from_size_align(if size > 0 { size as usize } else { 1 }, 1).unwrap()
    }

    pub fn alloc_bytes(size: i32) -> *mut u8 {
        unsafe { alloc(layout(size)) }
    }

    pub unsafe fn dealloc_bytes(ptr: *mut u8, size: i32) {
        dealloc(ptr, layout(size))
    }

    unsafe fn bytes<'a>(ptr: *const u8, len: i32) -> &'a [u8] {
        if len <= 0 {
            &[]
        } else {
            std::slice::from_raw_parts(ptr, len as usize)
        }
    }

    /// Calls `serve` with the host's buffers and writes its response; returns the
    /// full encoded length, which is above `cap` when it did not fit (the client
    /// gets 502 rather than a cut body).
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn handle(
        serve: fn(&Request) -> Response,
        method: *const u8,
        method_len: i32,
        path: *const u8,
        path_len: i32,
        headers: *const u8,
        headers_len: i32,
        body: *const u8,
        body_len: i32,
        out: *mut u8,
        cap: i32,
    ) -> i32 {
        let req = Request {
            method: std::str::from_utf8(bytes(method, method_len)).unwrap_or(""),
            target: std::str::from_utf8(bytes(path, path_len)).unwrap_or(""),
            headers: bytes(headers, headers_len),
            body: bytes(body, body_len),
        };
        let wire = serve(&req).encode();
        let n = wire.len().min(if cap > 0 { cap as usize } else { 0 });
        std::ptr::copy_nonoverlapping(wire.as_ptr(), out, n);
        wire.len().min(i32::MAX as usize) as i32
    }
}

/// Exports `alloc`, `dealloc` and `handle` around `fn(&Request) -> Response`.
/// A panic traps, and the client gets 500.
#[macro_export]
macro_rules! handler {
    ($serve:path) => {
        #[no_mangle]
        pub extern "C" fn alloc(size: i32) -> *mut u8 {
            $crate::__export::alloc_bytes(size)
        }

        #[no_mangle]
        pub unsafe extern "C" fn dealloc(ptr: *mut u8, size: i32) {
            $crate::__export::dealloc_bytes(ptr, size)
        }

        #[no_mangle]
        pub unsafe extern "C" fn handle(
            method: *const u8,
            method_len: i32,
            path: *const u8,
            path_len: i32,
            headers: *const u8,
            headers_len: i32,
            body: *const u8,
            body_len: i32,
            out: *mut u8,
            cap: i32,
        ) -> i32 {
            $crate::__export::handle(
                $serve, method, method_len, path, path_len, headers, headers_len, body,
                body_len, out, cap,
            )
        }
    };
}
