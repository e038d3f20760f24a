"""The byte encodings of the guest ABIs (docs/edge.md), engine-independent.

`parse_response` reads what an `edge-v1` guest wrote (and what `http_fetch`
returns, which `encode_response` writes); `parse_cgi` reads a WAGI program's
stdout; `parse_fetch_request` reads an `http_fetch` request. All raise
`GuestError` on bytes a client or a server must not see.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from edgefn import native
from edgefn.sandbox.errors import GuestError, GuestTrap, ResponseTooLarge

_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"content-length"}
)


@dataclass(slots=True)
class GuestResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


def check_handle_result(written: int, cap: int) -> None:
    """What `handle`'s return says: negative is a guest error (500), over the cap a
    response that did not fit (502)."""
    if written < 0:
        raise GuestError(f"handle returned error code {written}")
    if written > cap:
        raise ResponseTooLarge(f"response of {written} bytes exceeds the cap of {cap}")


def unusable_alloc(total: int, ptr: int) -> GuestTrap:
    """`alloc` gave no room (its heap is spent or corrupt): the instance cannot serve
    another request, so it is a trap (500) and the instance is discarded."""
    return GuestTrap(f"alloc({total}) returned an unusable pointer {ptr}")


def _split_head(raw: bytes) -> tuple[list[bytes], bytes]:
    """Split header lines from the body at the first blank line; tolerate CRLF."""
    lf = raw.find(b"\n\n")
    crlf = raw.find(b"\r\n\r\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        head, body = raw[:crlf], raw[crlf + 4 :]
    elif lf != -1:
        head, body = raw[:lf], raw[lf + 2 :]
    else:
        head, body = raw, b""
    return [line.rstrip(b"\r") for line in head.split(b"\n")], body


# RFC 9110 token characters for the name; no CR, LF or NUL in the value.
_HEADER_LINE = re.compile(rb"[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:[ \t]*([^\r\n\x00]*?)[ \t]*")


def _header(line: bytes) -> tuple[bytes, bytes]:
    m = _HEADER_LINE.fullmatch(line)
    if m is None:
        raise GuestError(f"malformed header line {line[:80]!r}")
    return m.group(1).lower(), m.group(2)


_ABI = native.part("edgefn.sandbox._abi")
_parse_native: Callable[[bytes, bool], tuple[int, list, bytes] | None] | None = (
    _ABI and _ABI.parse_response)
_encode_native: Callable[[list[tuple[bytes, bytes]]], bytes | None] | None = (
    _ABI and _ABI.encode_headers)


def parse_response(raw: bytes) -> GuestResponse:
    """`STATUS\\n` + header lines + blank line + body."""
    if _parse_native is not None:
        parsed = _parse_native(raw, False)
        if parsed is not None:
            return GuestResponse(*parsed)
    return parse_response_py(raw)


def parse_response_text(raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """`parse_response` with the header names and values as latin-1 text, as the front
    sends them: one pass over the bytes where the native reading is built."""
    if _parse_native is not None:
        parsed = _parse_native(raw, True)
        if parsed is not None:
            return parsed
    resp = parse_response_py(raw)
    return resp.status, text_headers(resp.headers), resp.body


def text_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Header names and values as latin-1 text (what the front writes back out)."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


def parse_response_py(raw: bytes) -> GuestResponse:
    """`parse_response` in Python: the reading of record, which `_abi.c` must match,
    and the one that raises with the reason."""
    lines, body = _split_head(raw)
    status_line = lines[0].strip()
    if len(status_line) != 3 or not status_line.isdigit():
        raise GuestError(f"response does not start with a 3-digit status: {status_line[:20]!r}")
    status = int(status_line)
    if not 100 <= status <= 599:
        raise GuestError(f"status {status} out of range")
    headers = [_header(line) for line in lines[1:] if line]
    return GuestResponse(status, [h for h in headers if h[0] not in _HOP_BY_HOP], body)


# WAGI's rule (RFC 3875 §6.2): a response names its content or where to go; a
# `Status` alone is accepted too, as WAGI accepts it.
_SUFFICIENT = frozenset({b"content-type", b"location", b"status"})
INSUFFICIENT_CGI = "Exactly one of 'location' or 'content-type' must be specified"


def parse_cgi(stdout: bytes) -> GuestResponse:
    """CGI response: header lines (`Status: 200 OK` optional), a blank line, the body.

    A header block with none of `Content-Type`, `Location` and `Status` is a 500,
    with WAGI's own message."""
    if b"\n" not in stdout:
        raise GuestError("WAGI program wrote no CGI header")
    lines, body = _split_head(stdout)
    status = 200
    headers: list[tuple[bytes, bytes]] = []
    sufficient = False
    for line in lines:
        if not line:
            continue
        name, value = _header(line)
        sufficient = sufficient or name in _SUFFICIENT
        if name == b"status":
            code = value.split(b" ", 1)[0]
            if len(code) != 3 or not code.isdigit():
                raise GuestError(f"bad CGI Status {value[:40]!r}")
            status = int(code)
        elif name == b"location" and status == 200:
            status = 302
            headers.append((name, value))
        elif name not in _HOP_BY_HOP:
            headers.append((name, value))
    if not sufficient:
        raise GuestError(INSUFFICIENT_CGI)
    return GuestResponse(status, headers, body)


def encode_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """`name: value\\n` lines, names lower-cased, repeated headers repeated."""
    if _encode_native is not None:
        block = _encode_native(headers)
        if block is not None:
            return block
    return encode_headers_py(headers)


def encode_headers_py(headers: list[tuple[bytes, bytes]]) -> bytes:
    """`encode_headers` in Python, the block of record that `_abi.c` must match."""
    return b"".join(name.lower() + b": " + value + b"\n" for name, value in headers)


@dataclass(frozen=True, slots=True)
class WagiRoute:
    """A WAGI route pattern: `base` exactly, or (`prefix`) `base` and everything below
    `base/` (WAGI's `/base/...`; `/...` is the prefix "")."""

    base: str
    prefix: bool = False

    @classmethod
    def parse(cls, text: str) -> WagiRoute:
        """WAGI's notation: `/path` or `/path/...`."""
        if text.endswith("/..."):
            return cls(text[:-4], True)
        return cls(text)

    @classmethod
    def of_route(cls, path: str) -> WagiRoute:
        """An edgefn route path: `/path` or `/path/*`."""
        if path.endswith("/*"):
            return cls(path[:-2], True)
        return cls(path)

    @property
    def text(self) -> str:
        """`X_MATCHED_ROUTE`: the pattern as WAGI writes it."""
        return self.base + "/..." if self.prefix else self.base

    @property
    def route_path(self) -> str:
        """The pattern as an edgefn route path."""
        return self.base + "/*" if self.prefix else self.base

    @property
    def script_name(self) -> str:
        if self.prefix and not self.base.startswith("/"):
            return "/" + self.base
        return self.base

    def matches(self, path: str) -> bool:
        if not self.prefix:
            return path == self.base
        return path == self.base or path.startswith(self.base + "/")

    def relative(self, path: str) -> str:
        """What follows the pattern's base in `path` ("" when `path` is not under it)."""
        return path[len(self.base):] if path.startswith(self.base) else ""

    def append(self, sub: WagiRoute) -> WagiRoute:
        """A sub-route (from a module's `_routes`) under this route."""
        base = self.base[:-1] if self.base.endswith("/") else self.base
        tail = sub.base[1:] if sub.base.startswith("/") else sub.base
        return WagiRoute(f"{base}/{tail}", sub.prefix)


def parse_wagi_routes(text: str) -> list[tuple[WagiRoute, str]]:
    """The stdout of a module's `_routes` export: `pattern entrypoint` lines."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise GuestError(f"_routes wrote an invalid line {line[:80]!r}")
        out.append((WagiRoute.parse(parts[0]), parts[1]))
    if not out:
        raise GuestError("_routes wrote no route")
    return out


def wagi_argv(template: str | None, raw_path: str, query: str) -> list[str]:
    """WAGI's argv: the request path, then the query's `&`-separated items; or the
    function's template with `${SCRIPT_NAME}` (the request path, as WAGI has it) and
    `${ARGS}` (the items, space-separated) replaced, split on whitespace."""
    if template is None:
        return [raw_path, *query.split("&")] if query else [raw_path]
    text = template.replace("${SCRIPT_NAME}", raw_path).replace("${ARGS}", query.replace("&", " "))
    return text.split()


# Request headers a program is not given (RFC 3875 §4.1.18), or has as CGI variables.
_NOT_PASSED = frozenset({b"authorization", b"proxy-authorization", b"connection",
                         b"content-length", b"content-type"})


def cgi_environ(
    *,
    method: str,
    path: str,
    query: str,
    route: WagiRoute,
    server_name: str,
    server_port: str,
    headers: list[tuple[bytes, bytes]],
    body_length: int,
    remote_addr: str = "",
    raw_path: str = "",
    scheme: str = "http",
) -> list[tuple[str, str]]:
    """The CGI/1.1 variables of one request as WAGI sets them (docs/wagi.md).

    `path` is the normalised path the request was routed on, `raw_path` the path as
    the client sent it (percent-escapes kept; "" when the same). `server_port` is
    the server's: a port in the `Host` header wins, as in WAGI.
    """
    raw = raw_path or path
    relative = route.relative(raw) if raw.startswith(route.base) else route.relative(path)
    decoded = unquote(relative, errors="replace")
    content_type = ""
    for name, value in headers:
        if name == b"host":
            host, sep, port = value.decode("latin-1").partition(":")
            server_name = host or server_name
            server_port = port if sep and port else server_port
        elif name == b"content-type":
            content_type = value.decode("latin-1")
    target = raw + "?" + query if query else raw
    env = {
        "AUTH_TYPE": "",
        "CONTENT_LENGTH": str(body_length),
        "CONTENT_TYPE": content_type,
        "GATEWAY_INTERFACE": "CGI/1.1",
        "PATH_INFO": decoded,
        "PATH_TRANSLATED": decoded,
        "QUERY_STRING": query,
        "REMOTE_ADDR": remote_addr,
        "REMOTE_HOST": remote_addr,
        "REMOTE_USER": "",
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": route.script_name,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "edgefn",
        "X_FULL_URL": f"{scheme}://{server_name}:{server_port}{target}",
        "X_MATCHED_ROUTE": route.text,
        "X_RAW_PATH_INFO": relative,
    }
    for name, value in headers:
        if name in _NOT_PASSED:
            continue
        var = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        env[var] = env[var] + "," + text if var in env else text
    return list(env.items())


def encode_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The section-1 response encoding, as `parse_response` reads it."""
    return b"%03d\n" % status + encode_headers(headers) + b"\n" + body


@dataclass(slots=True)
class FetchRequest:
    method: str
    url: str
    headers: list[tuple[bytes, bytes]]
    body: bytes


_METHOD = re.compile(rb"[A-Z]{1,16}")
_URL = re.compile(rb"[\x21-\x7e]{1,8192}")  # printable ASCII, no spaces


def parse_fetch_request(raw: bytes) -> FetchRequest:
    """`METHOD URL\\n` + header lines + blank line + body (docs/edge.md, Host functions)."""
    lines, body = _split_head(raw)
    method, sep, url = lines[0].partition(b" ")
    if not sep or not _METHOD.fullmatch(method) or not _URL.fullmatch(url):
        raise GuestError(f"malformed http_fetch request line {lines[0][:80]!r}")
    headers = [_header(line) for line in lines[1:] if line]
    return FetchRequest(method.decode(), url.decode(), headers, body)
