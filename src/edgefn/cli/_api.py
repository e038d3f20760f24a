"""The control-plane HTTP API as the command line uses it: one httpx client, the
CP's JSON errors turned into click errors that render themselves, with the exit
codes of `_output` (3 unreachable, 4 refused, 5 not found, 1 for the CP's own faults)."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx

from edgefn.cli._output import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNREACHABLE
from edgefn.cli.credentials import trusted_ca

API_PREFIX = "/api/v1"
_PAGE = 200  # the CP's largest page


class CPRequestError(click.ClickException):
    """The CP answered with an error; the message is the CP's own."""

    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        try:
            error = response.json()["error"]
            self.code, detail = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            self.code, detail = "error", response.text[:200] or response.reason_phrase
        request = response.request
        super().__init__(
            f"{request.method} {request.url.path} -> {self.status} {self.code}: {detail}"
        )


class CPRefused(CPRequestError):
    exit_code = EXIT_REFUSED


class CPNotFound(CPRequestError):
    exit_code = EXIT_NOT_FOUND


def cp_error(response: httpx.Response) -> CPRequestError:
    """The error of a CP answer, of the class its exit code goes with."""
    status = response.status_code
    if status == 404:
        return CPNotFound(response)
    return CPRefused(response) if 400 <= status < 500 else CPRequestError(response)


class CPUnreachable(click.ClickException):
    exit_code = EXIT_UNREACHABLE

    def __init__(self, url: str, exc: httpx.HTTPError) -> None:
        super().__init__(f"cannot reach the control plane at {url}: {exc}")


class CPClient:
    """Calls under /api/v1 with a bearer token; non-2xx answers raise CPRequestError."""

    def __init__(
        self, base_url: str, token: str, *, timeout_s: float = 30.0, ca_file: Path | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        ca_file = ca_file or trusted_ca()
        self._http = httpx.Client(
            base_url=self.base_url + API_PREFIX,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            verify=ssl.create_default_context(cafile=ca_file) if ca_file else True,
        )

    def __enter__(self) -> CPClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The raw answer, errors included (for callers that handle some of them)."""
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CPUnreachable(self.base_url, exc) from exc

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.send(method, path, **kwargs)
        if response.is_error:
            raise cp_error(response)
        return response.json() if response.content else None

    @contextlib.contextmanager
    def stream(self, path: str, *, read_timeout_s: float | None,
               **params: Any) -> Iterator[Iterator[str]]:
        """The lines of a streamed GET answer as they arrive; a non-2xx answer raises."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout_s)
        try:
            with self._http.stream("GET", path, params=params, timeout=timeout) as response:
                if response.is_error:
                    response.read()
                    raise cp_error(response)
                yield self._lines(response)
        except httpx.HTTPError as exc:
            raise CPUnreachable(self.base_url, exc) from exc

    def _lines(self, response: httpx.Response) -> Iterator[str]:
        try:
            yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise CPUnreachable(self.base_url, exc) from exc

    def list_all(self, path: str, **params: Any) -> list[Any]:
        """Every item of a paged list."""
        items: list[Any] = []
        while True:
            page = self.call("GET", path, params={**params, "limit": _PAGE, "offset": len(items)})
            items.extend(page)
            if len(page) < _PAGE:
                return items
