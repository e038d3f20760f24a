"""What the author's commands print: tables or `--json` for listings, a progress bar
on a terminal, and the exit codes every command keeps (docs/cli.md, Exit codes).

The bar is drawn on stderr with a carriage return, only when stderr is a terminal
and the command is not asked for JSON: piped output and scripts never see it.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

# Exit codes: 0 done; 1 failed (a deployment, rollout or build failed or timed out,
# or the CP failed: 5xx); 2 usage (click's own: bad arguments).
EXIT_UNREACHABLE = 3  # the control plane did not answer
EXIT_REFUSED = 4  # the CP refused the request: 4xx but 404 (credentials, role, conflict)
EXIT_NOT_FOUND = 5  # 404, or no function of that name visible to the token
EXIT_MISSING_TOOL = 6  # a toolchain the command needs is not installed here

F = TypeVar("F", bound=Callable[..., Any])


class NotFoundError(click.ClickException):
    exit_code = EXIT_NOT_FOUND


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="print JSON (for scripts) instead of a table")(f)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Left-aligned columns, two spaces apart; "-" for an empty cell."""
    cells = [[str(c) if c not in (None, "") else "-" for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


class _Line:
    """One line on stderr redrawn in place with a carriage return, only on a terminal."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._drawn = False

    def _draw(self, text: str) -> None:
        if not self.enabled:
            return
        sys.stderr.write(f"\r{text}\033[K")  # wipes what a longer line left
        sys.stderr.flush()
        self._drawn = True

    def clear(self) -> None:
        """Wipe the line, so another can be printed where it was (redraw with `update`)."""
        if self._drawn:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._drawn = False

    def finish(self) -> None:
        if self._drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._drawn = False


class Progress(_Line):
    """`label [#####.....] done/total` redrawn in place; silent when not on a terminal."""

    def __init__(self, label: str, total: int, *, enabled: bool = True,
                 fmt: Callable[[int], str] = str) -> None:
        super().__init__(enabled=enabled)
        self.label = label
        self.total = max(total, 0)
        self.done = 0
        self._fmt = fmt

    def update(self, done: int) -> None:
        self.done = min(done, self.total)
        width = max(10, min(40, shutil.get_terminal_size((80, 24)).columns - 40))
        filled = width * self.done // self.total if self.total else width
        bar = "#" * filled + "." * (width - filled)
        self._draw(f"{self.label} [{bar}] {self._fmt(self.done)}/{self._fmt(self.total)}")


class Status(_Line):
    """`label: state | 12s`, a spinner and the time since it began, for work whose
    size is unknown (a build); redrawn in place, silent when not on a terminal."""

    FRAMES = "|/-\\"

    def __init__(self, label: str, *, enabled: bool = True) -> None:
        super().__init__(enabled=enabled)
        self.label = label
        self.started = time.monotonic()
        self._frame = 0

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def update(self, state: str) -> None:
        self._frame = (self._frame + 1) % len(self.FRAMES)
        self._draw(f"{self.label}: {state} {self.FRAMES[self._frame]} {self.elapsed_s:.0f}s")


class ProgressReader(io.BytesIO):
    """Bytes read by httpx's multipart encoder in chunks, each moving the bar."""

    def __init__(self, data: bytes, progress: Progress, *, offset: int = 0) -> None:
        super().__init__(data)
        self._progress = progress
        # Bytes of the same upload read before these (an earlier part of the form).
        self._offset = offset

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self._progress.update(self._offset + self.tell())
        return chunk
