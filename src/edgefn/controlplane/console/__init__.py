"""The web console: static HTML, CSS and JavaScript modules served at /console/.
The files hold no data; the page reads everything from the API with the token
its user gives it, so serving them needs no authentication."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).parent / "static"
PATH = "/console"

# Everything the page loads comes from the CP itself; nothing inline, no frames.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate each load, so a CP upgrade is seen at once.
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """`StaticFiles` (html=True) that adds the console's security headers."""

    def __init__(self) -> None:
        super().__init__(directory=STATIC_DIR, html=True)

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_HEADERS)
        return response
