"""A version's data archive: a tar.gz of the directories its WAGI volumes mount,
packed by `edgefn deploy`, checked by the control plane at upload and unpacked by
each node; all three through this module.

Unpacking is the build service's (`builder.archive.extract`): links, devices,
absolute names, `..` components, too many files and too many bytes unpacked are
refused, and nothing is written outside the directory it is given. Packing is
reproducible (names sorted, times and owners zeroed), so the same folders give
the same sha256 and an unchanged application is not uploaded again.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path

from edgefn.builder.archive import ArchiveLimits, extract
from edgefn.builder.errors import ArchiveRefused
from edgefn.contract.data import ARCHIVE_ROOT, mount_map

__all__ = ["ArchiveLimits", "ArchiveRefused", "host_dirs", "pack", "unpack"]

_GZIP_MAGIC = b"\x1f\x8b"


def unpack(data: bytes, dest: Path, mounts: Mapping[str, str],
           limits: ArchiveLimits | None = None) -> list[str]:
    """Unpack the tar.gz `data` into the empty directory `dest` and check that every
    directory `mounts` names is one; the files written. `ArchiveRefused` for anything
    hostile, malformed, too big, or a mount the archive does not hold."""
    if data[:2] != _GZIP_MAGIC:
        raise ArchiveRefused("a data archive is a tar.gz (gzip-compressed tar)")
    try:
        checked = mount_map(dict(mounts))
    except ValueError as exc:
        raise ArchiveRefused(f"mounts: {exc}") from exc
    written = extract(data, dest, limits or ArchiveLimits())
    host_dirs(dest, checked)
    return written


def host_dirs(root: Path, mounts: Mapping[str, str]) -> dict[str, str]:
    """Guest path -> the directory below `root` (an unpacked archive) it mounts.
    `ArchiveRefused` for a directory that is not there, or not below `root`."""
    base = root.resolve()
    out: dict[str, str] = {}
    for guest, source in mount_map(dict(mounts)).items():
        here = base if source == ARCHIVE_ROOT else base / source
        try:
            mode = os.lstat(here).st_mode
        except OSError:
            raise ArchiveRefused(f"mount {guest}: the archive has no directory {source!r}"
                                 ) from None
        # Unpacking makes no links; a directory swapped for one since is refused too.
        if not stat.S_ISDIR(mode) or not here.resolve().is_relative_to(base):
            raise ArchiveRefused(f"mount {guest}: {source!r} in the archive is not a directory")
        out[guest] = str(here)
    return out


def pack(volumes: Mapping[str, Path], *,
         skipped: Callable[[Path], None] | None = None) -> tuple[bytes, dict[str, str]]:
    """The directories `volumes` (guest path -> host directory) as one tar.gz, each
    under its own member directory (`volume-0`, `volume-1`, ... in guest path order),
    and the mount map naming them. Only directories and regular files go in: a
    symbolic link or special file is left out and passed to `skipped`."""
    buf = io.BytesIO()
    mounts: dict[str, str] = {}
    # mtime 0 in the gzip header too: the bytes depend on the files alone.
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for number, guest in enumerate(sorted(volumes)):
            member = f"volume-{number}"
            mounts[guest] = member
            _add_tree(tar, Path(volumes[guest]), member, skipped)
    return buf.getvalue(), mounts


def _add_tree(tar: tarfile.TarFile, root: Path, member: str,
              skipped: Callable[[Path], None] | None) -> None:
    tar.addfile(_info(member, tarfile.DIRTYPE, 0o755))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        rel = here.relative_to(root)
        for name in [*dirnames, *sorted(filenames)]:
            path = here / name
            arcname = "/".join((member, *rel.parts, name))
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                tar.addfile(_info(arcname, tarfile.DIRTYPE, 0o755))
            elif stat.S_ISREG(st.st_mode):
                info = _info(arcname, tarfile.REGTYPE, 0o755 if st.st_mode & 0o111 else 0o644)
                info.size = st.st_size
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            elif skipped is not None:
                skipped(path)
        # os.walk does not descend into links to directories: they were skipped above.


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
