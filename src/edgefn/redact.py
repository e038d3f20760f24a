"""Log redaction: signed URLs, bearer tokens and edgefn keys never reach a log line.

Signed artifact URLs (the control plane's `?expires=&sig=`, S3's `X-Amz-*`) are
credentials until they expire, and libraries log them: httpx logs every request
URL at INFO, uvicorn every request target. `install()` wraps the log record
factory, so every record of every logger (ours, httpx, uvicorn, grpc) has its
message, arguments and exception text redacted once, when it is created, whatever
handlers and formatters are configured later. Records below a logger's level are
never created, so the cost falls only on lines that are written.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

REDACTED = "<redacted>"

# A query parameter whose value is a credential: signatures, tokens, keys.
_QUERY_SECRET = re.compile(
    r"(?i)([?&](?:sig|signature|token|access_token|api_key|key|x-amz-signature"
    r"|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential)=)"
    r"[^&#\s\"'<>]*"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
# edgefn's own tokens: node tokens, API keys.
_EDGEFN_TOKEN = re.compile(r"\b(ef[nk]_)[A-Za-z0-9_-]{8,}")

_installed = False
_lock = threading.Lock()


def redact(text: str) -> str:
    """`text` with every credential-looking value replaced by `<redacted>`."""
    if "=" in text:
        text = _QUERY_SECRET.sub(r"\1" + REDACTED, text)
    text = _BEARER.sub(r"\1" + REDACTED, text)
    return _EDGEFN_TOKEN.sub(r"\1" + REDACTED, text)


def _clean_arg(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else str(value)
    cleaned = redact(text)
    # Untouched arguments keep their type: formatters may rely on it (uvicorn's
    # access formatter unpacks the arguments; `%d` wants a number).
    return value if cleaned == text else cleaned


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact the record's message, arguments and exception text in place, keeping
    its shape, so no handler or formatter ever sees a raw credential."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_clean_arg(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _clean_arg(v) for k, v in record.args.items()}
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    return record


def install() -> None:
    """Redact every log record of this process from now on; calling it again is a no-op."""
    global _installed
    with _lock:
        if _installed:
            return
        make = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(make(*args, **kwargs))

        logging.setLogRecordFactory(factory)
        _installed = True
