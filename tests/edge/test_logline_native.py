"""`_logline.c` against `logs.invocation_line_py`, the line of record: the same bytes
for every record, or None (the Python line is then written) where it declines."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgefn.edge import logs
from edgefn.edge.logs import Invocation
from tests.conftest import native_part

native, pytestmark = native_part("edgefn.edge._logline")

# Text around the escapes: quotes, backslashes, control characters, the line
# separators and the characters whose UTF-8 starts like theirs (U+0080..U+00BF, U+2000..).
_TEXT = st.text(st.one_of(
    st.sampled_from('"\\\n\r\t\b\f\x00\x1f\x7f\x85\u2028\u2029\u2027\u202a\xc2\xe2\x84\x86'
                    '\u2000\u20ac/a0 '),
    st.characters(codec="utf-8"),
), max_size=24)
_HEX = st.text("0123456789abcdef", min_size=0, max_size=32)
_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.floats(1.6e9, 2.2e9), st.floats(0, 10), st.floats(-1, 1))
_RECORDS = st.builds(
    Invocation, _TEXT, _TEXT, _TEXT, _TEXT, _TEXT, _TEXT,
    st.one_of(st.integers(100, 599), st.integers()), _FLOAT, _FLOAT,
    st.one_of(_HEX, _TEXT), st.one_of(_HEX, _TEXT), st.one_of(_HEX, _TEXT, st.just("")),
    st.just("01"), st.one_of(st.none(), _TEXT), _TEXT)


def _python(inv: Invocation) -> bytes | None:
    try:
        return logs.invocation_line_py(inv)
    except (ValueError, OverflowError):  # int() of a time that is not finite
        return None


@settings(max_examples=3000, deadline=None)
@given(_RECORDS)
@example(Invocation("r", "f", "v", "n", "GET", "/\u2028\x85\u2029", 200, 1.7e9, 0.000123,
                    "t\u2028", "s", "p\x85", "01", 'e"\\\x01', "p"))
@example(Invocation("r", "f", "v", "n", "GET", "/", 200, -1.5, 0.25, "t", "s", "", "01",
                    None, "p"))  # floor division of a negative time
@example(Invocation("r", "f", "v", "n", "GET", "/" * 5000, 2**70, 1e300, 0.0, "t", "s", "",
                    "01", "\x00" * 500, "p"))  # past the stack buffer; numbers declined
def test_native_line_matches_python(inv: Invocation) -> None:
    assert native is not None
    line = native.invocation_line(inv)
    expected = _python(inv)
    if line is None:
        # Declined only where the numbers do not fit in C; the Python line is written.
        assert (not math.isfinite(inv.start + inv.elapsed) or not -2**63 < inv.status < 2**63
                or max(abs(inv.start), abs(inv.start + inv.elapsed), abs(inv.elapsed)) > 9e12)
        return
    assert line == expected
    if all(set(x) <= set("0123456789abcdef")
           for x in (inv.trace_id, inv.span_id, inv.parent_span_id)):
        # The ids are put in as they are: the runtime's are hex (random, or a
        # traceparent's, checked), and with those the line is JSON.
        assert json.loads(line)["path"] == inv.path


def test_a_record_the_encoder_refuses_still_raises_as_before() -> None:
    inv = Invocation("r", "f", "v", "n", "GET", "/", 200, 1.7e9, 0.0, "t", "s", "", "01",
                     "lone \ud800", "p")
    assert native is not None
    assert native.invocation_line(inv) is None
    with pytest.raises(UnicodeEncodeError):
        logs.invocation_line(inv)
