"""Errors of the control plane; each knows its HTTP status and error code.

    CPError                     500 internal
    ├── BadRequest              400 bad_request
    │   ├── ValidationFailed    400 validation_error   (schema, unknown field, semver)
    │   ├── InvalidModule       400 invalid_module     (upload refused by wasminfo)
    │   └── InvalidSelector     400 invalid_selector   (pop_selector does not parse)
    ├── Unauthorized            401 unauthorized       (no token, bad or expired token)
    ├── Forbidden               403 forbidden          (authenticated, not allowed)
    ├── NotFound                404 not_found
    ├── Conflict                409 conflict           (duplicate name or version)
    ├── PayloadTooLarge         413 payload_too_large  (artifact over the size limit)
    ├── TooManyRequests         429 too_many_requests  (throttled; `retry-after` says when)
    ├── ArtifactStoreError      502 artifact_store_error (backend failed; vendor error chained)
    └── SecretStoreError        502 secret_store_error (Vault failed, or a sealed
                                                       value does not open)

Vendor exceptions (botocore, SQLAlchemy, jwt, argon2, cryptography, hvac) are
translated into these at the module that talks to the vendor and never travel
further.

Every error answers `ErrorBody`; `responses(...)` states in an operation's
OpenAPI which of these it may answer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class CPError(Exception):
    status = 500
    code = "internal"
    # Extra response headers this error asks for.
    headers: dict[str, str] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(CPError):
    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    code = "validation_error"


class InvalidModule(BadRequest):
    code = "invalid_module"


class InvalidSelector(BadRequest):
    code = "invalid_selector"


class Unauthorized(CPError):
    status = 401
    code = "unauthorized"


class Forbidden(CPError):
    status = 403
    code = "forbidden"


class NotFound(CPError):
    status = 404
    code = "not_found"


class Conflict(CPError):
    status = 409
    code = "conflict"


class PayloadTooLarge(CPError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(CPError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(retry_after_s)}


class ArtifactStoreError(CPError):
    status = 502
    code = "artifact_store_error"


class SecretStoreError(CPError):
    status = 502
    code = "secret_store_error"


# What every endpoint that takes a token may answer: no or a bad token, or a
# token that may not make this call (a node token anywhere but its heartbeat).
CALLER: tuple[type[CPError], ...] = (Unauthorized, Forbidden)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


def responses(*errors: type[CPError]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of an operation that may fail with `errors`, plus
    400 `validation_error`, which every operation answers to input its schema
    refuses. Errors sharing a status share one entry naming their codes."""
    codes: dict[int, list[str]] = {ValidationFailed.status: [ValidationFailed.code]}
    for err in errors:
        if err.code not in codes.setdefault(err.status, []):
            codes[err.status].append(err.code)
    return {
        status: {"model": ErrorBody, "description": "error code " + ", ".join(names)}
        for status, names in sorted(codes.items())
    }
