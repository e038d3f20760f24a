"""A request as the HTTP front hands it to the runtime, and the answer it gets back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class HttpRequest:
    """A request as the HTTP layer hands it over; the body is read only once routed."""

    method: str
    host: str
    path: str
    query: str
    headers: list[tuple[bytes, bytes]]
    read_body: Callable[[int], bytes]
    content_length: int | None = None
    scheme: str = "http"
    server_port: str = "80"
    remote_addr: str = ""
    # The route the front found while reading the head (`Runtime.route`), if it did.
    routed: object = None
    # The path as the client sent it (`path` has its percent-escapes normalised);
    # "" when it is `path`.
    raw_path: str = ""


@dataclass(slots=True)
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
