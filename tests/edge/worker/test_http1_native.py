"""`_http1.c` against httptools (llhttp), the front's parser of record: every request
the C reads whole, llhttp reads the same way (method, target, header lines, Host,
Content-Length, body, keep-alive); the C declines what is outside its subset."""

from __future__ import annotations

import httptools
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import native_part

native, pytestmark = native_part("edgefn.edge.worker._http1")

MAX_HEAD = 64 * 1024


class _Collect:
    """What the front's callbacks keep of a request (`front._Connection`)."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.complete = 0
        self.parser: httptools.HttpRequestParser | None = None
        self.keep_alive: bool | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        # Asked here, as the front asks: after the message the parser is reset.
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()
        self.complete += 1


def _llhttp(data: bytes) -> tuple[object, ...] | None:
    """`data` read by httptools as the front reads it, or None: an error, an upgrade,
    or not exactly one whole request."""
    seen = _Collect()
    parser = seen.parser = httptools.HttpRequestParser(seen)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return None
    if seen.complete != 1:
        return None
    host = b""
    length = None
    for name, value in seen.headers:
        if name == b"host":
            host = value
        elif name == b"content-length":
            length = int(value)
    return (parser.get_method().decode(), seen.url, seen.headers, host, length,
            b"".join(seen.body), seen.keep_alive)


_METHOD = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS",
                           "get", "TRACE", "CONNECT", "PRI", "G ET", ""])
_TARGET = st.one_of(
    st.text("/abcAZ09-._~!$&'()*+,;=:@%?", min_size=1, max_size=20).map(lambda t: "/" + t),
    st.text(st.characters(max_codepoint=0xFF), max_size=12).map(lambda t: "/" + t),
    st.sampled_from(["*", "http://h/p", "/a#b", "/a b", "/\x7f", "//", "/?", "/a?b=c&d"]),
).map(lambda t: t.encode("latin-1"))
_VERSION = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "])
_NAME = st.one_of(
    st.sampled_from([b"Host", b"host", b"HOST", b"Content-Length", b"content-length",
                     b"Connection", b"Transfer-Encoding", b"Upgrade", b"Expect",
                     b"X-Request-Id", b"traceparent", b"User-Agent", b"Accept"]),
    st.text("!#$%&'*+.^_`|~-09azAZ", min_size=1, max_size=10).map(str.encode),
    st.sampled_from([b"", b"a b", b"a:b", b"\x80", b" x"]))
_VALUE = st.one_of(
    st.sampled_from([b"keep-alive", b"close", b"Keep-Alive", b"upgrade", b"chunked", b"0",
                     b"10", b"012", b"-1", b"1 0", b"18446744073709551616", b"a.test",
                     b"100-continue", b""]),
    st.binary(max_size=12))
_BLANK = st.sampled_from([b"", b" ", b"  ", b"\t"])
_LINE = st.builds(lambda n, b1, v, b2, eol: n + b":" + b1 + v + b2 + eol, _NAME, _BLANK, _VALUE,
                  st.sampled_from([b"", b"", b"", b" ", b"\t"]),
                  st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"]))
_REQUESTS = st.builds(
    lambda m, t, v, lines, body, extra: (m.encode() + b" " + t + b" " + v + b"\r\n"
                                         + b"".join(lines) + b"\r\n" + body + extra),
    _METHOD, _TARGET, _VERSION, st.lists(_LINE, max_size=6), st.binary(max_size=12),
    st.sampled_from([b"", b"", b"", b"GET / HTTP/1.1\r\n\r\n", b"\r\n", b"x"]))


# Requests inside the subset, mostly: the common methods, origin-form targets, header
# lines of tokens and visible ASCII, the body's own Content-Length.
_PLAIN_LINE = st.builds(
    lambda n, b, v: n + b":" + b + v + b"\r\n",
    st.one_of(_NAME.filter(lambda n: n not in (b"Content-Length", b"content-length")),
              st.sampled_from([b"Host", b"Connection", b"X-A"])),
    _BLANK, st.one_of(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                              max_size=10).map(str.encode),
                      st.sampled_from([b"a b", b"keep-alive", b"close", b"a.test:8080"])))
_PLAIN = st.builds(
    lambda m, t, lines, body: _with_length(m.encode() + b" " + t + b" HTTP/1.1\r\n"
                                           + b"".join(lines) + b"\r\n" + body),
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]),
    st.text("/abcAZ09-._~!$&'()*+,;=:@%?", min_size=1, max_size=20).map(
        lambda t: ("/" + t).encode()),
    st.lists(_PLAIN_LINE, max_size=6), st.binary(max_size=12))


def _with_length(data: bytes) -> bytes:
    """`data` with a Content-Length that matches its body, where it has a body."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or not body:
        return data
    return head + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body


@settings(max_examples=4000, deadline=None)
@given(st.one_of(_PLAIN, _REQUESTS, _REQUESTS.map(_with_length), st.binary(max_size=80)))
@example(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
@example(b"POST /echo?x=1 HTTP/1.1\r\nhost: a\r\nContent-Length: 3\r\n\r\nabc")
@example(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")  # declined: two hosts
@example(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc")
@example(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc")
@example(b"GET / HTTP/1.1\r\nX:  a b \r\n\r\n")  # declined: a blank after the value
def test_what_the_c_reads_llhttp_reads_alike(data: bytes) -> None:
    assert native is not None
    read = native.parse_request(data, MAX_HEAD)
    if read is not None:
        assert read == _llhttp(data)


def test_plain_requests_are_read_and_the_rest_declined() -> None:
    assert native is not None
    read = native.parse_request(
        b"POST /echo?q=1 HTTP/1.1\r\nHost: a.test\r\nUser-Agent: x\r\nContent-Length: 10\r\n"
        b"\r\nhello edge", MAX_HEAD)
    assert read == ("POST", b"/echo?q=1", [(b"host", b"a.test"), (b"user-agent", b"x"),
                                           (b"content-length", b"10")],
                    b"a.test", 10, b"hello edge", True)
    for declined in [
        b"GET / HTTP/1.1\r\nHost: a\r\n",  # not whole yet
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc",  # the body in part
        b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",  # pipelined
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\n\r\n",  # absolute form: httptools splits it
        b"GET / HTTP/1.1\r\nX: \x80\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded\r\n\r\n",
    ]:
        assert native.parse_request(declined, MAX_HEAD) is None, declined
    head = b"GET / HTTP/1.1\r\nX: " + b"a" * 100 + b"\r\n\r\n"
    assert native.parse_request(head, len(head)) is not None
    assert native.parse_request(head, len(head) - 1) is None  # over the head limit


def test_the_generator_reaches_both_sides() -> None:
    """The differential test is worth something only if the C accepts many of its
    inputs and declines many: counted over a fixed sample."""
    assert native is not None
    accepted = declined = 0

    @settings(max_examples=1500, deadline=None, database=None)
    @given(st.one_of(_PLAIN, _REQUESTS, _REQUESTS.map(_with_length)))
    def count(data: bytes) -> None:
        nonlocal accepted, declined
        if native.parse_request(data, MAX_HEAD) is None:
            declined += 1
        else:
            accepted += 1

    count()
    assert accepted > 100 and declined > 100, (accepted, declined)
