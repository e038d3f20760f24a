"""`_answer.c` against `front.serialize_py`, the answer of record: the same bytes for
every response it writes, None (the Python answer then raises) where a header is not
latin-1 text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefn.edge.worker import front
from edgefn.edge.worker.exchange import HttpResponse
from tests.conftest import native_part

native, pytestmark = native_part("edgefn.edge.worker._answer")

_LATIN1 = st.text(st.characters(max_codepoint=0xFF), max_size=16)
_ANY = st.text(max_size=8)
_RESPONSES = st.builds(
    HttpResponse, st.sampled_from([200, 204, 404, 502, 299, 599]),
    st.lists(st.tuples(_LATIN1, st.one_of(_LATIN1, _ANY)), max_size=6),
    st.binary(max_size=64))


@settings(max_examples=1000, deadline=None)
@given(_RESPONSES, st.booleans(), st.booleans())
def test_native_answer_matches_python(resp: HttpResponse, head_only: bool,
                                      keep_alive: bool) -> None:
    assert native is not None
    try:
        expected: bytes | None = front.serialize_py(resp, head_only=head_only,
                                                    keep_alive=keep_alive)
    except UnicodeEncodeError:
        expected = None
    status = front._STATUS_LINES.get(resp.status) or front._status_line(resp.status)
    date = front._date.header()
    out = native.serialize(status, date, resp.headers, resp.body, head_only, keep_alive)
    if out is not None and expected is not None and date != front._date.header():
        return  # the second turned between the two answers
    assert out == expected


def test_a_header_that_is_not_latin1_still_raises() -> None:
    resp = HttpResponse(200, [("x-a", "\u20ac")], b"")
    with pytest.raises(UnicodeEncodeError):
        front.serialize(resp, head_only=False, keep_alive=True)
    answer = front.serialize(HttpResponse(200, [("x-a", "\xe9")], b"ok"), head_only=False,
                             keep_alive=False)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\ndate: ")
    assert answer.endswith(b"x-a: \xe9\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
