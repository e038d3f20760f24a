"""`_abi.c` against `abi.parse_response_py`, the reading of record: the same result
for every input the Python reading accepts, None (the Python reading then raises)
for every input it refuses. Inputs are generated around the grammar's edges."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgefn.sandbox import abi
from edgefn.sandbox.errors import GuestError
from tests.conftest import native_part

native, pytestmark = native_part("edgefn.sandbox._abi")

# The pieces a response is made of, weighted toward the grammar's edges.
_PIECES = st.sampled_from([
    b"200", b"404", b"599", b"600", b"099", b"20", b"2000", b" 200 ", b"\t200\r", b"\x0b200",
    b"\n", b"\r\n", b"\r", b"\n\n", b"\r\n\r\n", b"\n\r\n", b":", b" ", b"\t", b"\x00",
    b"content-type", b"Content-Length", b"CONNECTION", b"keep-alive", b"upgrade",
    b"transfer-encoding", b"x-a", b"X_B!#$%&'*+.^`|~", b"text/plain", b"a b", b"\xe9\xff",
    b"@", b"(", b"\x7f", b"body",
])
_BLANKS = st.sampled_from([b"", b" ", b"\t", b" \t "])
_TOKEN = st.text("!#$%&'*+.^_`|~-09azAZ", min_size=1, max_size=12).map(str.encode)
# Header lines, mostly well formed: blanks around the name and the value, any byte
# but CR, LF and NUL in the value, now and then one that is not.
_LINE = st.builds(lambda b1, name, b2, b3, value, b4, cr: b1 + name + b2 + b":" + b3 + value
                  + b4 + cr, _BLANKS, st.one_of(_TOKEN, _PIECES), _BLANKS, _BLANKS,
                  st.binary(max_size=12).filter(lambda v: not set(v) & {10, 13, 0})
                  | _PIECES, _BLANKS, st.sampled_from([b"", b"\r", b"\r\r"]))
_EOL = st.sampled_from([b"\n", b"\r\n"])
_RESPONSES = st.one_of(
    st.lists(_PIECES, max_size=24).map(b"".join),
    st.binary(max_size=64),
    st.builds(lambda status, eol, lines, body: status + eol + eol.join(lines) + eol + eol + body,
              st.one_of(st.integers(100, 599).map(b"%d".__mod__), _PIECES), _EOL,
              st.lists(_LINE, max_size=6), st.binary(max_size=16)),
)


def _python(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
    try:
        resp = abi.parse_response_py(raw)
    except GuestError:
        return None
    return resp.status, resp.headers, resp.body


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_RESPONSES)
@example(b"200\nx-a: b\r\r\n\nbody")  # trailing CRs cut, one by one
@example(b"200\r\n\r\n\n\nbody")  # CR LF CR LF first
@example(b"200\n\n\r\n\r\nbody")  # LF LF first
@example(b"200\nx-a:\tb\x00c\n\n")  # NUL in a value
@example(b"200\nx-a: b\rc\n\n")  # CR inside a value
@example(b"200\n  \n\n")  # a line of blanks is not a header
@example(b"200\n" + b"X" * 100 + b": v\n\n")  # a name longer than the stack buffer
def test_native_reading_matches_python(raw: bytes) -> None:
    assert native is not None
    expected = _python(raw)
    assert native.parse_response(raw, False) == expected
    text = native.parse_response(raw, True)
    if expected is None:
        assert text is None
    else:
        assert text == (expected[0], abi.text_headers(expected[1]), expected[2])


def test_the_public_readings_raise_with_pythons_reason() -> None:
    with pytest.raises(GuestError, match="3-digit status"):
        abi.parse_response(b"20\n\nx")
    with pytest.raises(GuestError, match="malformed header line"):
        abi.parse_response_text(b"200\nbad header\n\nx")
    assert abi.parse_response(b"201\nA: b\nconnection: close\n\nx") == abi.GuestResponse(
        201, [(b"a", b"b")], b"x")
    assert abi.parse_response_text(b"201\nA: \xe9\n\nx") == (201, [("a", "\xe9")], b"x")


def test_a_buffer_that_is_not_bytes_is_left_to_python() -> None:
    assert native is not None
    assert native.parse_response(bytearray(b"200\n\n"), False) is None
    assert abi.parse_response(bytearray(b"200\n\nok")).body == b"ok"  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=12) | _TOKEN, st.binary(max_size=12)), max_size=8))
def test_native_header_block_matches_python(headers: list[tuple[bytes, bytes]]) -> None:
    assert native is not None
    assert native.encode_headers(headers) == abi.encode_headers_py(headers)


def test_a_header_list_of_other_types_is_left_to_python() -> None:
    assert native is not None
    assert native.encode_headers([(b"a", "text")]) is None
    assert native.encode_headers(((b"a", b"b"),)) is None
    assert abi.encode_headers([(bytearray(b"A"), b"b")]) == b"a: b\n"  # type: ignore[list-item]
