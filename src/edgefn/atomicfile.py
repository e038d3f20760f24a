"""Private, atomic files: what the node and the control plane keep on disk.

A write goes to a temporary file beside the target (`.part-*`, which a cleaner
may remove after a crash), is flushed to disk, and replaces the target by a
rename; the directory is synced so the rename itself survives a power cut.
Readers see the old content or the new, never half.

Everything written here is 0600 and every directory created here 0700: node
state, tokens, caches, compiled code and databases hold tenants' code and
credentials, and other users of the machine have no business reading them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Literal

PARTIAL_PREFIX = ".part-"
FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create `path` and any missing parents 0700; directories that exist keep their mode
    (the operator may have chosen it, e.g. a group-readable log directory)."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        # mkdir's mode is filtered by the umask; 0700 is what we mean, whatever it is.
        os.chmod(directory, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure `path` exists and is 0600 before a library (SQLite) opens it: a file
    it creates itself gets the umask's mode, and its journal files copy that mode."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def open_private(path: Path, mode: Literal["ab", "wb"] = "ab") -> IO[bytes]:
    """Open for writing (append or truncate), creating the file 0600 if needed."""
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "ab" else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, mode)


def write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    """Replace `path` with `chunks`, atomically; the file is 0600 (mkstemp's mode)."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_secret(path: Path, text: str) -> None:
    """A token or key on a line of its own, 0600, atomically."""
    write_atomic(path, [text.encode() + b"\n"])


def read_secret(path: Path) -> str:
    """What `write_secret` wrote (or an operator put in a file), without the newline."""
    return path.read_text().strip()
