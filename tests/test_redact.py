"""Log redaction: signed URLs, bearer tokens and edgefn tokens, in messages,
arguments (of any type) and tracebacks, through any logger and formatter."""

from __future__ import annotations

import logging

import httpx
import pytest

from edgefn import redact
from edgefn.redact import REDACTED, redact_record

SIGNED = "http://cp:8080/api/v1/artifacts/f/1.0.0.wasm?expires=1796000000&sig=c2lnbmF0dXJl"
S3 = ("https://bucket.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256"
      "&X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Signature=abcdef0123")
NODE_TOKEN = "efn_" + "n" * 43
API_KEY = "efk_" + "k" * 43


@pytest.mark.parametrize(
    ("text", "secrets", "kept"),
    [
        (f"GET {SIGNED} 200", ["c2lnbmF0dXJl"], ["expires=1796000000", "sig=" + REDACTED]),
        (S3, ["AKIAEXAMPLE", "abcdef0123"], ["X-Amz-Algorithm=AWS4-HMAC-SHA256"]),
        ("authorization: Bearer eyJhbGciOi.payload.sig", ["eyJhbGciOi"], ["Bearer " + REDACTED]),
        (f"node token {NODE_TOKEN} and key {API_KEY}", [NODE_TOKEN[4:], API_KEY[4:]],
         ["efn_" + REDACTED, "efk_" + REDACTED]),
        ("/upload?token=abc.def&x=1", ["abc.def"], ["x=1"]),
    ],
)
def test_redact(text: str, secrets: list[str], kept: list[str]) -> None:
    out = redact.redact(text)
    for s in secrets:
        assert s not in out
    for k in kept:
        assert k in out


def test_plain_text_is_untouched() -> None:
    text = "function f@1.0.0 deployed to tokyo-1 (key=value pairs stay: region=tokyo)"
    assert redact.redact(text) == text


def _record(msg: str, args: tuple[object, ...]) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, None)


def test_arguments_keep_their_shape_for_formatters() -> None:
    # uvicorn's access formatter unpacks exactly five arguments, the last a number.
    rec = redact_record(_record('%s - "%s %s HTTP/%s" %d',
                                ("127.0.0.1:5000", "GET", SIGNED[15:], "1.1", 200)))
    assert isinstance(rec.args, tuple) and len(rec.args) == 5 and rec.args[4] == 200
    assert "c2lnbmF0dXJl" not in rec.getMessage()
    # httpx passes the URL as an object, not a string.
    rec = redact_record(_record("HTTP Request: %s %s", ("GET", httpx.URL(SIGNED))))
    assert "c2lnbmF0dXJl" not in rec.getMessage() and "sig=" + REDACTED in rec.getMessage()


def test_tracebacks_are_redacted() -> None:
    try:
        raise ValueError(f"cannot fetch {SIGNED}")
    except ValueError:
        import sys

        rec = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    redact_record(rec)
    assert rec.exc_text and "c2lnbmF0dXJl" not in rec.exc_text


def test_installed_factory_covers_every_logger(caplog: pytest.LogCaptureFixture) -> None:
    redact.install()
    redact.install()  # idempotent
    caplog.set_level(logging.INFO)
    logging.getLogger("httpx").info("HTTP Request: %s %s", "GET", httpx.URL(SIGNED))
    logging.getLogger("edgefn.edge.node.agent").warning("refused: Bearer %s", NODE_TOKEN)
    assert "c2lnbmF0dXJl" not in caplog.text and NODE_TOKEN not in caplog.text
    assert "sig=" + REDACTED in caplog.text
