"""Unpacking a source archive (tar.gz or zip) into a scratch directory, refusing
anything that could write outside it or blow up on the way.

Only regular files and directories are written: links of any kind, devices and
fifos are refused, as are absolute names and names with a `..` component. Sizes
are counted from the bytes actually decompressed (never from what a header
claims), against a total and a file count, so a zip bomb stops at the limit.
Files are created with O_EXCL | O_NOFOLLOW below a directory this module made,
so nothing already on disk is followed or overwritten.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from edgefn.builder.errors import ArchiveRefused

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int = 64 * 1024 * 1024  # decompressed, all files together
    max_files: int = 2000


@dataclass
class _Entry:
    name: str
    is_dir: bool
    mode: int
    open: IO[bytes] | None


def _safe_parts(name: str) -> tuple[str, ...]:
    if "\x00" in name or "\\" in name:
        raise ArchiveRefused(f"refused {name!r}: odd characters in the name")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise ArchiveRefused(f"refused {name!r}: absolute path")
    parts = tuple(p for p in path.parts if p not in ("", "."))
    if ".." in parts:
        raise ArchiveRefused(f"refused {name!r}: a '..' component leads out of the tree")
    return parts


def _tar_entries(data: bytes) -> Iterator[_Entry]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                if member.isdir():
                    yield _Entry(member.name, True, member.mode, None)
                elif member.isreg():
                    yield _Entry(member.name, False, member.mode, tar.extractfile(member))
                else:
                    kind = "link" if member.issym() or member.islnk() else "special file"
                    raise ArchiveRefused(f"refused {member.name!r}: a {kind}")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveRefused(f"not a readable tar archive: {exc}") from exc


def _zip_entries(data: bytes) -> Iterator[_Entry]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                mode = info.external_attr >> 16
                kind = stat.S_IFMT(mode)
                # Zips from non-Unix tools leave the type bits at 0: a plain file.
                if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                    raise ArchiveRefused(f"refused {info.filename!r}: a link or special file")
                if info.is_dir():
                    yield _Entry(info.filename, True, mode, None)
                else:
                    yield _Entry(info.filename, False, mode, archive.open(info))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError) as exc:
        raise ArchiveRefused(f"not a readable zip archive: {exc}") from exc


def _mkdirs(root: Path, parts: tuple[str, ...]) -> Path:
    """Directory `parts` below `root`, made one level at a time without following links."""
    here = root
    for part in parts:
        here = here / part
        try:
            os.mkdir(here, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(here).st_mode):
                raise ArchiveRefused(
                    f"refused {'/'.join(parts)!r}: a file and a directory"
                ) from None
    return here


def extract(data: bytes, dest: Path, limits: ArchiveLimits = ArchiveLimits()) -> list[str]:
    """Unpack `data` (gzip'd tar, plain tar or zip) into the empty directory `dest`;
    the relative names of the files written. ArchiveRefused on anything hostile."""
    entries = _zip_entries(data) if data[:4] == b"PK\x03\x04" else _tar_entries(data)
    written: list[str] = []
    total = 0
    for entry in entries:
        parts = _safe_parts(entry.name)
        if not parts:
            continue
        if entry.is_dir:
            _mkdirs(dest, parts)
            continue
        if len(written) >= limits.max_files:
            raise ArchiveRefused(f"more than {limits.max_files} files")
        parent = _mkdirs(dest, parts[:-1])
        assert entry.open is not None
        mode = 0o755 if entry.mode & 0o111 else 0o644
        try:
            fd = os.open(
                parent / parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode
            )
        except FileExistsError:
            raise ArchiveRefused(f"refused {entry.name!r}: named twice") from None
        with os.fdopen(fd, "wb") as out, entry.open as src:
            try:
                while chunk := src.read(_CHUNK):
                    total += len(chunk)
                    if total > limits.max_bytes:
                        raise ArchiveRefused(f"unpacks to more than {limits.max_bytes} bytes")
                    out.write(chunk)
            except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as exc:
                raise ArchiveRefused(f"{entry.name!r} does not unpack: {exc}") from exc
        written.append("/".join(parts))
    if not written:
        raise ArchiveRefused("the archive holds no files")
    return written


_SKIP = {".git", "node_modules", "target", "build", "__pycache__"}


def pack(root: Path) -> bytes:
    """The tree as a tar.gz, leaving out VCS data, dependencies and build output."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if _SKIP & set(rel.parts) or not path.is_file() or path.is_symlink():
                continue
            if path.suffix == ".wasm":
                continue
            tar.add(path, arcname=str(rel), recursive=False)
    return buf.getvalue()
