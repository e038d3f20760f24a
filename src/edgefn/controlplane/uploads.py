"""Request bodies read as they stream in, with a hard cap: a raw body (a PUT to a
signed upload URL) and a form (a version upload: multipart with the artifact, or
url-encoded fields alone).

Endpoints that take these authenticate and authorise from the headers first, so
an anonymous or unauthorised sender is answered before its body is read (the
server stops reading, and TCP flow control stops the sender). The cap is checked
on every chunk: 413 goes out as soon as it is passed, and nothing is spooled to
disk, so a request holds at most one artifact's worth, in memory.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from edgefn.controlplane.errors import PayloadTooLarge, ValidationFailed

# Room for the boundaries, part headers and small fields around the artifact.
FORM_OVERHEAD = 64 * 1024


def _too_large(limit: int, what: str = "artifact") -> PayloadTooLarge:
    return PayloadTooLarge(f"{what} is over the limit of {limit} bytes")


def refuse_declared_size(
    request: Request, limit: int, *, overhead: int = 0, what: str = "artifact"
) -> None:
    """413 before reading when Content-Length already says the body is over
    `limit` (plus `overhead`, for what surrounds the artifact in a form)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + overhead:
        raise _too_large(limit, what)


async def read_capped(
    chunks: AsyncIterator[bytes], limit: int, *, what: str = "artifact"
) -> bytes:
    """The whole body, or 413 at the first chunk that takes it over `limit`."""
    body = bytearray()
    async for chunk in chunks:
        body.extend(chunk)
        if len(body) > limit:
            raise _too_large(limit, what)
    return bytes(body)


def _admit(name: str, seen: set[str], limits: Mapping[str, int]) -> int:
    """The size limit of a form field the endpoint knows and has not had yet."""
    if name not in limits:
        known = ", ".join(limits)
        raise ValidationFailed(f"unknown form field {name!r} (expected {known})")
    if name in seen:
        raise ValidationFailed(f"{name}: sent more than once")
    seen.add(name)
    return limits[name]


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    file: bytes | None = None
    # File parts other than the main one (`extra_files` of `read_form`), by name.
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class _Part:
    name: str = ""
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    data: bytearray = field(default_factory=bytearray)
    limit: int = 0


class _FormReader:
    """Callbacks of python-multipart's streaming parser, enforcing the form's shape
    (known fields, each once, each within its size) as the bytes arrive."""

    def __init__(self, fields: Mapping[str, int], file_field: str, file_limit: int,
                 extra_files: Mapping[str, int]) -> None:
        self.field_limits = fields
        self.file_field = file_field
        self.file_limit = file_limit
        # Other file parts, by name, with their own limits (kept in `Form.files`).
        self.file_limits = {**extra_files, file_field: file_limit}
        self.form = Form()
        self.seen: set[str] = set()
        self.part = _Part()
        self.ended = False

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.part.header_field.extend(data[start:end])

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.part.header_value.extend(data[start:end])

    def on_header_end(self) -> None:
        name = bytes(self.part.header_field).lower()
        self.part.headers[name] = bytes(self.part.header_value)
        self.part.header_field.clear()
        self.part.header_value.clear()

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        limits = {**self.field_limits, **self.file_limits}
        self.part.name = name
        self.part.limit = _admit(name, self.seen, limits)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.part.data.extend(data[start:end])
        if len(self.part.data) > self.part.limit:
            if self.part.name in self.file_limits:
                what = "artifact" if self.part.name == self.file_field else self.part.name
                raise _too_large(self.part.limit, what)
            raise ValidationFailed(f"{self.part.name}: longer than {self.part.limit} characters")

    def on_part_end(self) -> None:
        if self.part.name == self.file_field:
            self.form.file = bytes(self.part.data)
            return
        if self.part.name in self.file_limits:
            self.form.files[self.part.name] = bytes(self.part.data)
            return
        try:
            self.form.fields[self.part.name] = self.part.data.decode()
        except UnicodeDecodeError as exc:
            raise ValidationFailed(f"{self.part.name}: not UTF-8") from exc

    def on_end(self) -> None:
        self.ended = True


async def read_form(
    request: Request, *, fields: Mapping[str, int], file_field: str, file_limit: int,
    extra_files: Mapping[str, int] | None = None,
) -> Form:
    """Parse a multipart/form-data body as it streams in: `fields` (name -> most
    characters) as text, `file_field` as bytes of at most `file_limit`, and each of
    `extra_files` (name -> most bytes) as bytes too."""
    extra = dict(extra_files or {})
    media_type, params = parse_options_header(request.headers.get("content-type", ""))
    if media_type == b"application/x-www-form-urlencoded":
        # Fields only (the artifact is already at the upload URL): small by nature.
        return await _read_urlencoded(request, fields)
    boundary = params.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise ValidationFailed("expected a multipart/form-data or url-encoded form body")
    files_limit = file_limit + sum(extra.values())
    body_limit = files_limit + FORM_OVERHEAD
    refuse_declared_size(request, files_limit, overhead=FORM_OVERHEAD)
    reader = _FormReader(fields, file_field, file_limit, extra)
    callbacks = {
        "on_part_begin": reader.on_part_begin,
        "on_header_field": reader.on_header_field,
        "on_header_value": reader.on_header_value,
        "on_header_end": reader.on_header_end,
        "on_headers_finished": reader.on_headers_finished,
        "on_part_data": reader.on_part_data,
        "on_part_end": reader.on_part_end,
        "on_end": reader.on_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise _too_large(files_limit)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise ValidationFailed(f"malformed multipart body: {exc}") from exc
    if not reader.ended:
        raise ValidationFailed("malformed multipart body: it ends before its closing boundary")
    return reader.form


async def _read_urlencoded(request: Request, fields: Mapping[str, int]) -> Form:
    refuse_declared_size(request, FORM_OVERHEAD, what="form body")
    body = await read_capped(request.stream(), FORM_OVERHEAD, what="form body")
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode(), keep_blank_values=True, strict_parsing=bool(body), errors="strict"
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValidationFailed(f"malformed form body: {exc}") from exc
    form = Form()
    for name, value in pairs:
        if len(value) > _admit(name, set(form.fields), fields):
            raise ValidationFailed(f"{name}: longer than {fields[name]} characters")
        form.fields[name] = value
    return form
