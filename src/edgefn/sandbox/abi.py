"""The byte encodings of the guest ABIs (docs/edge.md), engine-independent.

`parse_response` reads what an `edge-v1` guest wrote (and what `http_fetch`
returns, which `encode_response` writes); `parse_cgi` reads a WAGI program's
stdout; `parse_fetch_request` reads an `http_fetch` request. All raise
`GuestError` on bytes a client or a server must not see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def parse_response(raw: bytes) -> GuestResponse:
    """`STATUS\\n` + header lines + blank line + body."""
    lines, body = _split_head(raw)
    status_line = lines[0].strip()
    if len(status_line) != 3 or not status_line.isdigit():
        raise GuestError(f"response does not start with a 3-digit status: {status_line[:20]!r}")
    status = int(status_line)
    if not 100 <= status <= 599:
        raise GuestError(f"status {status} out of range")
    headers = [_header(line) for line in lines[1:] if line]
    return GuestResponse(status, [h for h in headers if h[0] not in _HOP_BY_HOP], body)


def parse_cgi(stdout: bytes) -> GuestResponse:
    """CGI response: header lines (`Status: 200 OK` optional), a blank line, the body."""
    if b"\n" not in stdout:
        raise GuestError("WAGI program wrote no CGI header")
    lines, body = _split_head(stdout)
    status = 200
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        if not line:
            continue
        name, value = _header(line)
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
    return GuestResponse(status, headers, body)


def encode_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """`name: value\\n` lines, names lower-cased, repeated headers repeated."""
    return b"".join(name.lower() + b": " + value + b"\n" for name, value in headers)


def cgi_environ(
    *,
    method: str,
    path: str,
    query: str,
    script_name: str,
    server_name: str,
    server_port: str,
    headers: list[tuple[bytes, bytes]],
    body_length: int,
    remote_addr: str = "",
) -> list[tuple[str, str]]:
    """The CGI/1.1 variables of the WAGI ABI (docs/edge.md) for one request."""
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "edgefn",
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path[len(script_name) :] if path.startswith(script_name) else path,
        "QUERY_STRING": query,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "CONTENT_LENGTH": str(body_length),
        "CONTENT_TYPE": "",
        "REMOTE_ADDR": remote_addr,
    }
    for name, value in headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        if key == "content-type":
            env["CONTENT_TYPE"] = text
            continue
        var = "HTTP_" + key.upper().replace("-", "_")
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
