"""Data archives: every hostile archive is refused without a byte written outside the
scratch directory, a mount must name a directory the archive holds, and packing is
reproducible."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from edgefn.data_archive import ArchiveLimits, ArchiveRefused, host_dirs, pack, unpack
from tests.builder.sources import tgz, tgz_with, zipped

MOUNTS = {"/": "site"}


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "",
           size: int = 4) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = size if kind == tarfile.REGTYPE else 0
    return info


def plain_tar(files: dict[str, bytes]) -> bytes:
    return tgz(files, mode="w")


# Each hostile archive, as the control plane's tests send them too.
HOSTILE = {
    "dotdot": tgz_with(member("site/../../escape.txt"), data=b"evil"),
    "leading-dotdot": tgz_with(member("../escape.txt"), data=b"evil"),
    "absolute": tgz_with(member("/tmp/escape.txt"), data=b"evil"),
    "symlink": tgz_with(member("site", tarfile.DIRTYPE), member("site/l", tarfile.SYMTYPE, "/etc")),
    "symlink-then-file": tgz_with(member("site", tarfile.SYMTYPE, ".."),
                                  member("site/escape.txt"), data=b"evil"),
    "hardlink": tgz_with(member("site", tarfile.DIRTYPE),
                         member("site/h", tarfile.LNKTYPE, "/etc/passwd")),
    "device": tgz_with(member("site", tarfile.DIRTYPE), member("site/d", tarfile.CHRTYPE)),
    "fifo": tgz_with(member("site", tarfile.DIRTYPE), member("site/f", tarfile.FIFOTYPE)),
    "zip": zipped({"site/a.txt": b"a"}),
    "plain-tar": plain_tar({"site/a.txt": b"a"}),
    "garbage": b"\x1f\x8bnot gzip at all",
}


def outside(root: Path, dest: Path) -> list[Path]:
    """What exists under `root` other than the scratch directory and its contents."""
    return [p for p in root.rglob("*") if p != dest and dest not in p.parents]


@pytest.fixture
def box(tmp_path: Path) -> tuple[Path, Path]:
    dest = tmp_path / "scratch"
    dest.mkdir()
    (tmp_path / "neighbour.txt").write_text("untouched")
    return tmp_path, dest


def test_a_tree_unpacks_and_its_mounts_resolve_below_it(box: tuple[Path, Path]) -> None:
    _, dest = box
    data = tgz({"site/index.html": b"<p>hi</p>", "site/css/a.css": b"p{}", "top.txt": b"t"})
    names = unpack(data, dest, {"/": ".", "/static": "site/", "/c": "./site/css"})
    assert sorted(names) == ["site/css/a.css", "site/index.html", "top.txt"]
    dirs = host_dirs(dest, {"/static": "site", "/": "."})
    assert dirs == {"/static": str(dest.resolve() / "site"), "/": str(dest.resolve())}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_archives_are_refused(box: tuple[Path, Path], name: str) -> None:
    root, dest = box
    with pytest.raises(ArchiveRefused):
        unpack(HOSTILE[name], dest, MOUNTS)
    assert [p.name for p in outside(root, dest)] == ["neighbour.txt"]
    assert not Path("/tmp/escape.txt").exists()
    assert not (root / "escape.txt").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_too_many_files_are_refused(box: tuple[Path, Path]) -> None:
    root, dest = box
    files = {f"site/f{i}.txt": b"x" for i in range(11)}
    with pytest.raises(ArchiveRefused, match="more than 10 files"):
        unpack(tgz(files), dest, MOUNTS, ArchiveLimits(max_files=10))
    assert [p.name for p in outside(root, dest)] == ["neighbour.txt"]


def test_a_bomb_stops_at_the_unpacked_limit(box: tuple[Path, Path]) -> None:
    root, dest = box
    bomb = tgz({"site/zeros.bin": bytes(16 * 1024 * 1024)})
    assert len(bomb) < 100 * 1024
    with pytest.raises(ArchiveRefused, match="more than"):
        unpack(bomb, dest, MOUNTS, ArchiveLimits(max_bytes=1 << 20))
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= 1 << 20
    assert [p.name for p in outside(root, dest)] == ["neighbour.txt"]


@pytest.mark.parametrize(("mounts", "why"), [
    ({"/": "missing"}, "no directory 'missing'"),
    ({"/": "site/a.txt"}, "not a directory"),
    ({"/": "../.."}, "leads out of the archive"),
    ({"/": "/etc"}, "absolute"),
    ({"relative": "site"}, "not an absolute path"),
    ({"/a/../b": "site"}, "not an absolute path"),
    ({}, "at least one"),
])
def test_a_mount_must_name_a_directory_inside_the_archive(
    box: tuple[Path, Path], mounts: dict[str, str], why: str,
) -> None:
    _, dest = box
    with pytest.raises(ArchiveRefused, match=why):
        unpack(tgz({"site/a.txt": b"a"}), dest, mounts)


def test_a_directory_swapped_for_a_link_after_unpacking_is_not_mounted(
    box: tuple[Path, Path],
) -> None:
    root, dest = box
    unpack(tgz({"site/a.txt": b"a"}), dest, MOUNTS)
    (dest / "site" / "a.txt").unlink()
    (dest / "site").rmdir()
    os.symlink(root, dest / "site")
    with pytest.raises(ArchiveRefused, match="not a directory"):
        host_dirs(dest, MOUNTS)


def test_packing_is_reproducible_and_leaves_links_out(tmp_path: Path) -> None:
    static = tmp_path / "static"
    (static / "sub").mkdir(parents=True)
    (static / "a.txt").write_text("a")
    (static / "sub" / "b.txt").write_text("b")
    os.symlink("/etc/passwd", static / "passwd")
    os.symlink(tmp_path, static / "up")
    other = tmp_path / "other"
    other.mkdir()
    (other / "c.txt").write_text("c")
    skipped: list[Path] = []
    archive, mounts = pack({"/static": static, "/": other}, skipped=skipped.append)
    assert mounts == {"/": "volume-0", "/static": "volume-1"}
    assert sorted(p.name for p in skipped) == ["passwd", "up"]
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert tar.getnames() == ["volume-0", "volume-0/c.txt", "volume-1", "volume-1/sub",
                                  "volume-1/a.txt", "volume-1/sub/b.txt"]
        assert {m.mtime for m in tar.getmembers()} == {0}
    os.utime(static / "a.txt", (1, 1))  # times are not part of the archive
    assert pack({"/static": static, "/": other})[0] == archive
    dest = tmp_path / "unpacked"
    dest.mkdir()
    unpack(archive, dest, mounts)
    assert (dest / "volume-1" / "sub" / "b.txt").read_text() == "b"
