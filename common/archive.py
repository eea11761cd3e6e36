"""Safe extraction of downloaded tar and zip archives.

Archives come from third-party mirrors, so every member is checked before anything is written: no
absolute paths, no ``..`` escapes, no links that point out of the destination, no device files or FIFOs.
Extraction goes into a temporary sibling directory that is renamed into place only once complete, so
``dest`` is either absent or whole; a marker file inside it records which archive (size and mtime)
produced it, making a second call a no-op.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from common.errors import InputError, UnsafeArchiveError

MARKER = ".zoo-extracted"
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_ZIP_UNIX = (
    3  # ZipInfo.create_system of archives made on Unix: only then do the high external_attr bits hold a mode
)

Kind = Literal["file", "dir", "symlink", "hardlink"]


@dataclass(frozen=True)
class _Member:
    name: str  # as stored in the archive, for messages
    path: str  # normalised, relative, '/'-separated
    kind: Kind
    target: str = (
        ""  # link target as stored (symlink: relative to its directory; hardlink: to the archive root)
    )


def _refuse(archive: Path, name: str, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(archive, f"member {name!r}: {reason}")


def _escapes(norm: str) -> bool:
    return norm == ".." or norm.startswith("../")


def _normalise(archive: Path, name: str) -> str:
    """The member's path relative to the destination, or an error when it would land outside it."""
    if not name or "\0" in name:
        raise _refuse(archive, name, "empty name or NUL byte in name")
    # Treat backslashes as separators too: a zip made on Windows may use them, and refusing a file literally
    # named 'a\..\x' on Linux costs nothing.
    unified = name.replace("\\", "/")
    if unified.startswith("/") or _DRIVE_RE.match(unified):
        raise _refuse(archive, name, "absolute path")
    norm = posixpath.normpath(unified)
    if _escapes(norm):
        raise _refuse(archive, name, "'..' traversal leaves the destination directory")
    return norm


def _validate(archive: Path, members: list[_Member]) -> None:
    """Check links between members; each member's own name and type were checked when it was listed."""
    symlinks = {m.path for m in members if m.kind == "symlink"}
    files = {m.path for m in members if m.kind == "file"}
    seen_links: set[str] = set()
    for m in members:
        parts = m.path.split("/")
        # Lexical checks of link targets assume no directory on the way is itself a link: through a link to a
        # shallower directory, 'l/l/x -> ../..' would climb further than its spelling suggests.
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in symlinks:
                raise _refuse(archive, m.name, f"path goes through symlink {prefix!r}")
        if m.path in symlinks and (m.kind != "symlink" or m.path in seen_links):
            raise _refuse(archive, m.name, "would replace a symlink of the same name (and write through it)")
        if m.kind == "symlink":
            seen_links.add(m.path)
            target = m.target.replace("\\", "/")
            if not target:
                raise _refuse(archive, m.name, "symlink with an empty target")
            if target.startswith("/") or _DRIVE_RE.match(target):
                raise _refuse(archive, m.name, f"symlink to absolute path {m.target!r}")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(m.path), target))
            if _escapes(resolved):
                raise _refuse(
                    archive, m.name, f"symlink target {m.target!r} resolves outside the destination"
                )
        elif m.kind == "hardlink":
            target = m.target.replace("\\", "/")
            if not target or target.startswith("/") or _DRIVE_RE.match(target):
                raise _refuse(archive, m.name, f"hardlink to absolute or empty path {m.target!r}")
            resolved = posixpath.normpath(target)
            if _escapes(resolved):
                raise _refuse(archive, m.name, f"hardlink target {m.target!r} is outside the archive tree")
            if resolved not in files:
                raise _refuse(
                    archive, m.name, f"hardlink target {m.target!r} is not a regular file in the archive"
                )


def _tar_members(archive: Path, tf: tarfile.TarFile) -> tuple[list[tarfile.TarInfo], list[_Member]]:
    infos = tf.getmembers()
    out: list[_Member] = []
    for ti in infos:
        norm = _normalise(archive, ti.name)
        if ti.ischr():
            raise _refuse(archive, ti.name, "character device")
        if ti.isblk():
            raise _refuse(archive, ti.name, "block device")
        if ti.isfifo():
            raise _refuse(archive, ti.name, "FIFO")
        if ti.issym():
            out.append(_Member(ti.name, norm, "symlink", ti.linkname))
        elif ti.islnk():
            out.append(_Member(ti.name, norm, "hardlink", ti.linkname))
        elif ti.isdir():
            out.append(_Member(ti.name, norm, "dir"))
        elif ti.isreg():
            out.append(_Member(ti.name, norm, "file"))
        else:
            raise _refuse(archive, ti.name, f"unsupported tar member type {ti.type!r}")
    return infos, out


def _zip_mode(info: zipfile.ZipInfo) -> int:
    return (info.external_attr >> 16) if info.create_system == _ZIP_UNIX else 0


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[_Member]:
    out: list[_Member] = []
    for info in zf.infolist():
        norm = _normalise(archive, info.filename)
        mode = _zip_mode(info)
        if stat.S_ISCHR(mode):
            raise _refuse(archive, info.filename, "character device")
        if stat.S_ISBLK(mode):
            raise _refuse(archive, info.filename, "block device")
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            raise _refuse(archive, info.filename, "FIFO or socket")
        if stat.S_ISLNK(mode):
            # zipfile would write the link as a small text file; we create a real link once it is checked.
            target = zf.read(info).decode("utf-8", errors="surrogateescape")
            out.append(_Member(info.filename, norm, "symlink", target))
        elif info.is_dir():
            out.append(_Member(info.filename, norm, "dir"))
        else:
            out.append(_Member(info.filename, norm, "file"))
    return out


def _extract_zip(zf: zipfile.ZipFile, members: Iterable[_Member], root: Path) -> None:
    infos = {i.filename: i for i in zf.infolist()}
    for m in members:
        path = root / m.path
        if m.path == ".":
            continue
        if m.kind == "dir":
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if m.kind == "symlink":
            os.symlink(m.target, path)
            continue
        info = infos[m.name]
        with zf.open(info) as src, open(path, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        mode = _zip_mode(info) & 0o777
        if mode:
            # Keep exec bits, but as tarfile's data filter does: owner may read/write, nobody else writes.
            os.chmod(path, (mode & 0o755) | 0o600)


def _stamp(archive: Path) -> dict[str, Any]:
    st = archive.stat()
    return {"archive": archive.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a tar (any compression) or zip ``archive`` to ``dest``, every member checked first."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise InputError(archive, "archive not found")
    stamp = _stamp(archive)
    if dest.exists():
        marker = _read_marker(dest) if dest.is_dir() else None
        if marker == stamp:
            return dest
        if marker is None and (not dest.is_dir() or any(dest.iterdir())):
            # Without our marker this may be someone's data: never delete it to make room.
            raise InputError(
                dest, f"exists and was not extracted from {archive.name} by us (no {MARKER}); move it away"
            )

    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive, "r:*") as tf:
                infos, members = _tar_members(archive, tf)
                _validate(archive, members)
                tmp = _extract_to_temp(dest, stamp, lambda root: _extract_tar(archive, tf, infos, root))
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = _zip_members(archive, zf)
                _validate(archive, members)
                tmp = _extract_to_temp(dest, stamp, lambda root: _extract_zip(zf, members, root))
        else:
            raise InputError(archive, "not a tar or zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise InputError(archive, f"corrupt or truncated archive: {e}") from e

    if dest.exists():
        # A stale extraction of ours (the archive changed): swap, then delete the old tree.
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.replace(dest, old / "tree")
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    return dest


def _extract_tar(archive: Path, tf: tarfile.TarFile, infos: list[tarfile.TarInfo], root: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        # Second line of defence: our checks ran on names and types only; the 'data' filter re-checks each
        # path against the real filesystem while writing, and drops setuid bits and ownership, which we
        # never look at.
        try:
            tf.extractall(root, members=infos, filter="data")
        except tarfile.FilterError as e:
            raise _refuse(archive, e.tarinfo.name, str(e)) from e
    else:  # Python < 3.10.12 / 3.11.4 has no filters: our own validation above is all there is.
        tf.extractall(root, members=infos)


def _extract_to_temp(dest: Path, stamp: dict[str, Any], extract: Callable[[Path], None]) -> Path:
    """Run ``extract(root)`` into a fresh sibling of ``dest`` and mark it complete; on failure remove it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A sibling, so the final rename stays on one filesystem and is atomic.
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        extract(tmp)
        (tmp / MARKER).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp
