"""Hostile archives are refused without a byte written outside the scratch tree."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from edgefn.builder.archive import ArchiveLimits, extract
from edgefn.builder.errors import ArchiveRefused
from tests.builder.sources import tgz, tgz_with, zipped


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 4
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = size if kind == tarfile.REGTYPE else 0
    return info


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    """A scratch directory inside `tmp_path`, which must stay as it is apart from it."""
    dest = tmp_path / "scratch" / "src"
    dest.mkdir(parents=True)
    return tmp_path, dest


def _outside(root: Path, dest: Path) -> list[Path]:
    return [p for p in root.rglob("*") if dest not in p.parents and p != dest and p != dest.parent]


def test_a_plain_tree_unpacks(box: tuple[Path, Path]) -> None:
    _, dest = box
    names = extract(tgz({"a/b.c": b"int x;", "top.txt": b"hi"}), dest)
    assert sorted(names) == ["a/b.c", "top.txt"]
    assert (dest / "a" / "b.c").read_bytes() == b"int x;"
    assert extract(zipped({"z/y.wat": b"(module)"}), dest / "a") == ["z/y.wat"]


@pytest.mark.parametrize(
    "archive",
    [
        pytest.param(tgz_with(_member("../escape.txt"), data=b"evil"), id="tar-dotdot"),
        pytest.param(tgz_with(_member("a/../../escape.txt"), data=b"evil"), id="tar-inner-dotdot"),
        pytest.param(tgz_with(_member("/tmp/escape.txt"), data=b"evil"), id="tar-absolute"),
        pytest.param(tgz_with(_member("link", tarfile.SYMTYPE, "/etc")), id="tar-symlink-out"),
        pytest.param(
            tgz_with(
                _member("link", tarfile.SYMTYPE, ".."), _member("link/escape.txt"), data=b"evil"
            ),
            id="tar-symlink-then-file",
        ),
        pytest.param(tgz_with(_member("hard", tarfile.LNKTYPE, "/etc/passwd")), id="tar-hardlink"),
        pytest.param(tgz_with(_member("dev", tarfile.CHRTYPE)), id="tar-device"),
        pytest.param(zipped({"../escape.txt": b"evil"}), id="zip-dotdot"),
        pytest.param(zipped({"/abs/escape.txt": b"evil"}), id="zip-absolute"),
        pytest.param(b"neither tar nor zip", id="garbage"),
    ],
)
def test_hostile_archives_are_refused(box: tuple[Path, Path], archive: bytes) -> None:
    root, dest = box
    with pytest.raises(ArchiveRefused):
        extract(archive, dest)
    assert _outside(root, dest) == []
    assert not Path("/tmp/escape.txt").exists()


def test_a_zip_symlink_is_refused(box: tuple[Path, Path]) -> None:
    _, dest = box
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveRefused, match="link"):
        extract(buf.getvalue(), dest)
    assert list(dest.iterdir()) == []


def test_a_zip_bomb_stops_at_the_limit(box: tuple[Path, Path]) -> None:
    _, dest = box
    bomb = zipped({"zeros.bin": bytes(50 * 1024 * 1024)})
    assert len(bomb) < 100 * 1024
    with pytest.raises(ArchiveRefused, match="more than"):
        extract(bomb, dest, ArchiveLimits(max_bytes=1024 * 1024))
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= 1024 * 1024


def test_a_tar_bomb_stops_at_the_limit(box: tuple[Path, Path]) -> None:
    _, dest = box
    with pytest.raises(ArchiveRefused, match="more than"):
        extract(tgz({"zeros.bin": bytes(8 * 1024 * 1024)}), dest, ArchiveLimits(max_bytes=1 << 20))


def test_too_many_files_are_refused(box: tuple[Path, Path]) -> None:
    _, dest = box
    files = {f"f{i}.c": b"" for i in range(11)}
    with pytest.raises(ArchiveRefused, match="more than 10 files"):
        extract(tgz(files), dest, ArchiveLimits(max_files=10))
