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


class HttpResponse:
    """An answer. A guest's header lines stay bytes (`guest_headers`) until someone
    reads `headers`: the front writes them as they are, not decoded and encoded
    again; headers the node adds go through `add_header`."""

    __slots__ = ("_guest", "_headers", "body", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes,
                 guest_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self._headers = headers
        self.body = body
        self._guest = guest_headers or None

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Every header, as text (the guest's decoded on the first look)."""
        if self._guest is not None:
            self._headers[:0] = [(k.decode("latin-1"), v.decode("latin-1"))
                                 for k, v in self._guest]
            self._guest = None
        return self._headers

    def add_header(self, name: str, value: str) -> None:
        self._headers.append((name, value))

    def head_lines(self) -> bytes:
        """The header lines as sent: `name: value\r\n` each, in order."""
        text = "".join([f"{n}: {v}\r\n" for n, v in self._headers]).encode("latin-1")
        if self._guest is None:
            return text
        return b"".join([k + b": " + v + b"\r\n" for k, v in self._guest]) + text

    def __repr__(self) -> str:
        return f"HttpResponse({self.status}, {self.headers!r}, {self.body!r})"
