"""Errors of the edge node; each knows the HTTP status a client gets for it.

    EdgeError
    ├── ArtifactError          an artifact is missing, corrupt or cannot be fetched
    │   └── DigestMismatch     what was downloaded is not what the sha256 names
    ├── FunctionUnavailable    known but not runnable on this node (503)
    ├── RequestTooLarge        request body over the limit (413)
    ├── Overloaded             the function has its share of request threads (503)
    │   └── NodeOverloaded     a worker holds all the complete requests it may (503)
    ├── QuotaExceeded          the project's quota is spent (429, with retry-after)
    ├── BadRequest             a request the edge cannot encode for a guest, or bad HTTP (400)
    ├── RequestTimeout         the client did not send its head or body in time (408)
    └── HeadersTooLarge        the request line and headers are over the limit (431)
"""

from __future__ import annotations


class EdgeError(Exception):
    status = 500
    code = "internal"


class ArtifactError(EdgeError):
    status = 503
    code = "artifact_unavailable"


class DigestMismatch(ArtifactError):
    """Downloaded bytes whose sha256 is not the one the control plane gave."""


class FunctionUnavailable(EdgeError):
    status = 503
    code = "function_unavailable"


class RequestTooLarge(EdgeError):
    status = 413
    code = "request_too_large"


class Overloaded(EdgeError):
    status = 503
    code = "function_overloaded"


class QuotaExceeded(EdgeError):
    status = 429
    code = "quota_exceeded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadRequest(EdgeError):
    status = 400
    code = "bad_request"


class NodeOverloaded(Overloaded):
    code = "node_overloaded"


class RequestTimeout(EdgeError):
    status = 408
    code = "request_timeout"


class HeadersTooLarge(EdgeError):
    status = 431
    code = "headers_too_large"
