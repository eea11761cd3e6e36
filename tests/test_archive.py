"""safe_extract on archives built here: hostile members refused up front, good ones extracted."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from common.archive import MARKER, safe_extract
from common.errors import InputError, UnsafeArchiveError

pytestmark = pytest.mark.timeout(30)


def _info(name: str, type_: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b"") -> tuple:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.linkname = linkname
    ti.size = len(data) if type_ == tarfile.REGTYPE else 0
    ti.mode = 0o755 if type_ == tarfile.DIRTYPE else 0o644
    return ti, data


def make_tar(path: Path, entries: list[tuple], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() else None)
    return path


def make_zip(path: Path, entries: list[tuple[str, bytes, int | None]]) -> Path:
    """``(name, data, unix_mode)``; a mode with S_IFLNK makes ``data`` the link target."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            zi = zipfile.ZipInfo(name)
            if mode is not None:
                zi.create_system = 3
                zi.external_attr = mode << 16
            zf.writestr(zi, data)
    return path


GOOD = _info("good.txt", data=b"fine")  # listed first: a refused archive must not leave even this behind

BAD_TAR = [
    ("../x", _info("../x", data=b"x"), "traversal"),
    ("/etc/x", _info("/etc/x", data=b"x"), "absolute path"),
    ("a/../../x", _info("a/../../x", data=b"x"), "traversal"),
    ("out", _info("out", tarfile.SYMTYPE, "../outside"), "resolves outside"),
    ("d/e/out", _info("d/e/out", tarfile.SYMTYPE, "../../../x"), "resolves outside"),
    ("abs", _info("abs", tarfile.SYMTYPE, "/etc/passwd"), "symlink to absolute path"),
    ("hard", _info("hard", tarfile.LNKTYPE, "../x"), "outside the archive tree"),
    ("hardabs", _info("hardabs", tarfile.LNKTYPE, "/etc/passwd"), "absolute"),
    ("hardmissing", _info("hardmissing", tarfile.LNKTYPE, "nope.txt"), "not a regular file in the archive"),
    ("dev", _info("dev", tarfile.CHRTYPE), "character device"),
    ("disk", _info("disk", tarfile.BLKTYPE), "block device"),
    ("pipe", _info("pipe", tarfile.FIFOTYPE), "FIFO"),
]


def _leftovers(tmp_path: Path, archive: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p != archive)


@pytest.mark.parametrize("member,entry,reason", BAD_TAR, ids=[b[0] for b in BAD_TAR])
def test_bad_tar_member_refused_before_anything_is_written(
    tmp_path: Path, member: str, entry: tuple, reason: str
) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", [GOOD, entry])
    with pytest.raises(UnsafeArchiveError) as e:
        safe_extract(archive, tmp_path / "out")
    msg = str(e.value)
    assert str(archive) in msg and f"member {member!r}" in msg and reason in msg
    assert _leftovers(tmp_path, archive) == []


def test_nested_symlinks_cannot_climb(tmp_path: Path) -> None:
    # 'l -> .' makes 'l/l/l' the root, so 'l/l/l/x -> ../..' would leave dest though it spells an inside path.
    entries = [_info("l", tarfile.SYMTYPE, "."), _info("l/l/l/x", tarfile.SYMTYPE, "../..")]
    archive = make_tar(tmp_path / "bad.tar", entries, mode="w")
    with pytest.raises(UnsafeArchiveError, match="member 'l/l/l/x': path goes through symlink 'l'"):
        safe_extract(archive, tmp_path / "out")
    assert _leftovers(tmp_path, archive) == []


def test_file_replacing_a_symlink_refused(tmp_path: Path) -> None:
    entries = [GOOD, _info("ln", tarfile.SYMTYPE, "good.txt"), _info("ln", data=b"overwrite")]
    archive = make_tar(tmp_path / "bad.tar", entries, mode="w")
    with pytest.raises(UnsafeArchiveError, match="member 'ln': would replace a symlink"):
        safe_extract(archive, tmp_path / "out")


@pytest.mark.parametrize(
    "name,data,mode,reason",
    [
        ("../x", b"x", None, "traversal"),
        ("/etc/x", b"x", None, "absolute path"),
        ("a/../../x", b"x", None, "traversal"),
        ("C:/x", b"x", None, "absolute path"),
        ("link", b"../../etc/passwd", stat.S_IFLNK | 0o777, "resolves outside"),
        ("link", b"/etc/passwd", stat.S_IFLNK | 0o777, "symlink to absolute path"),
        ("fifo", b"", stat.S_IFIFO | 0o644, "FIFO"),
    ],
)
def test_bad_zip_member_refused(
    tmp_path: Path, name: str, data: bytes, mode: int | None, reason: str
) -> None:
    archive = make_zip(tmp_path / "bad.zip", [("good.txt", b"fine", None), (name, data, mode)])
    with pytest.raises(UnsafeArchiveError) as e:
        safe_extract(archive, tmp_path / "out")
    assert f"member {name!r}" in str(e.value) and reason in str(e.value)
    assert _leftovers(tmp_path, archive) == []


def test_good_tar_gz_extracts_with_internal_links(tmp_path: Path) -> None:
    entries = [
        _info("pkg", tarfile.DIRTYPE),
        _info("pkg/a.txt", data=b"alpha"),
        _info("pkg/sub/b.bin", data=bytes(range(256))),
        _info("pkg/sub/up", tarfile.SYMTYPE, "../a.txt"),
        _info("pkg/hard", tarfile.LNKTYPE, "pkg/a.txt"),
    ]
    archive = make_tar(tmp_path / "good.tar.gz", entries)
    dest = tmp_path / "data" / "good"
    assert safe_extract(archive, dest) == dest
    assert (dest / "pkg/a.txt").read_bytes() == b"alpha"
    assert (dest / "pkg/sub/b.bin").read_bytes() == bytes(range(256))
    assert os.readlink(dest / "pkg/sub/up") == "../a.txt" and (dest / "pkg/sub/up").read_bytes() == b"alpha"
    assert (dest / "pkg/hard").read_bytes() == b"alpha" and (dest / "pkg/hard").stat().st_nlink == 2
    assert (dest / MARKER).is_file()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["good"]  # no temporary sibling left


def test_good_zip_extracts_with_internal_symlink(tmp_path: Path) -> None:
    archive = make_zip(
        tmp_path / "good.zip",
        [
            ("d/", b"", None),
            ("d/x.txt", b"ex", None),
            ("d/run.sh", b"#!/bin/sh\n", stat.S_IFREG | 0o755),
            ("d/ln", b"x.txt", stat.S_IFLNK | 0o777),
        ],
    )
    dest = safe_extract(archive, tmp_path / "z")
    assert (dest / "d/x.txt").read_bytes() == b"ex"
    assert (dest / "d/ln").is_symlink() and os.readlink(dest / "d/ln") == "x.txt"
    assert (dest / "d/ln").read_bytes() == b"ex"
    assert os.stat(dest / "d/run.sh").st_mode & 0o777 == 0o755


def test_second_call_is_a_noop_until_archive_changes(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar.gz", [_info("f.txt", data=b"original")])
    dest = tmp_path / "a"
    safe_extract(archive, dest)
    (dest / "f.txt").write_bytes(b"edited")
    safe_extract(archive, dest)
    assert (dest / "f.txt").read_bytes() == b"edited"  # not extracted again
    st = archive.stat()
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    safe_extract(archive, dest)
    assert (dest / "f.txt").read_bytes() == b"original"  # a changed archive is extracted afresh
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "a.tar.gz"]


def test_foreign_dest_is_not_overwritten(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar", [_info("f.txt", data=b"x")], mode="w")
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="no .zoo-extracted"):
        safe_extract(archive, dest)
    assert (dest / "keep.txt").read_text() == "precious"


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"definitely not an archive" * 40)
    with pytest.raises(InputError, match="junk.tar.gz: not a tar or zip archive"):
        safe_extract(junk, tmp_path / "out")
    with pytest.raises(InputError, match="archive not found"):
        safe_extract(tmp_path / "missing.zip", tmp_path / "out")
