"""A version's data archive as a deploy carries it: where a node fetches it, the
sha256 and size it must have, and which directory of it each guest path mounts.

The mount map names directories inside the archive, never paths on a node: a node
resolves them below its own unpacked copy of the archive, so no instruction can
make a node mount a directory of its own (docs/wagi.md, Volumes).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pydantic import ConfigDict, Field, field_validator

from edgefn.contract._base import Record

MAX_MOUNTS = 32
_MAX_PATH_CHARS = 1024
# The archive's top directory, in a mount map.
ARCHIVE_ROOT = "."


def guest_path(guest: str) -> str:
    """`guest` as a mount point: absolute, without `.` or `..` parts (a trailing `/`
    dropped, `/` itself allowed); ValueError otherwise."""
    parts = guest.split("/")
    if (not guest.startswith("/") or ".." in parts or "." in parts or ":" in guest
            or "\x00" in guest or "\\" in guest or len(guest) > _MAX_PATH_CHARS):
        raise ValueError(f"guest path {guest!r} is not an absolute path without . or ..")
    return guest.rstrip("/") or "/"


def archive_dir(name: str) -> str:
    """`name` as a directory of the archive: relative, no `..` part (`.` or "" the top
    directory, given back as `.`); ValueError otherwise."""
    if "\x00" in name or "\\" in name or len(name) > _MAX_PATH_CHARS:
        raise ValueError(f"archive directory {name!r}: odd characters in the name")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise ValueError(f"archive directory {name!r} is absolute; name one inside the archive")
    parts = [p for p in path.parts if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"archive directory {name!r} leads out of the archive")
    return "/".join(parts) or ARCHIVE_ROOT


def mount_map(mounts: dict[str, str]) -> dict[str, str]:
    """The map guest path -> archive directory, each side checked and normalised, no
    guest path twice; ValueError otherwise."""
    if len(mounts) > MAX_MOUNTS:
        raise ValueError(f"more than {MAX_MOUNTS} mounts")
    out: dict[str, str] = {}
    for guest, source in mounts.items():
        if not isinstance(guest, str) or not isinstance(source, str):
            raise ValueError("a mount maps a guest path to a directory of the archive")
        point = guest_path(guest)
        if point in out:
            raise ValueError(f"guest path {point!r} is mounted twice")
        out[point] = archive_dir(source)
    if not out:
        raise ValueError("a data archive mounts at least one directory")
    return out


class DataArchive(Record):
    """The data archive of a deploy's version (a tar.gz, docs/wagi.md)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # Minted when the instruction is handed out, like `artifact_url`.
    url: str = Field(default="", max_length=4096)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    # Guest path -> directory inside the archive, each mounted read-only.
    mounts: dict[str, str]

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, v: dict[str, str]) -> dict[str, str]:
        return mount_map(v)
