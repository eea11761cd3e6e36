"""Artifact download: checksum, cache, resume, retries, offline mirror, progress bar.

Why not pooch for the download itself: pooch 1.9's ``stream_download`` (pooch/core.py) opens a fresh
``tempfile.NamedTemporaryFile`` in the cache folder for every attempt and deletes it in a ``finally``,
and its ``HTTPDownloader`` opens the output with mode ``"w+b"`` and never sends a ``Range`` header. So an
interrupted multi-GB dataset download starts again from byte zero, on a retry and in a new process
alike. Here the bytes go to ``<dest>.part``, which outlives both, and every retry asks the server for
the rest with ``Range: bytes=N-``.

Sources are tried in order: the mirror (a local directory or a base URL) first, then each of the
artifact's URLs. A file is moved to its final name only after its size and hash checked out, so a file
at ``dest`` is always complete; a cached file that no longer matches its hash is an error, never
silently replaced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests
import urllib3
from tqdm import tqdm

from common import __version__
from common.errors import ChecksumError, FetchError, InputError
from common.manifest import Artifact

log = logging.getLogger("zoo.fetch")

CHUNK = 1 << 20  # 1 MiB: large enough to keep syscalls cheap, small enough to keep the progress bar moving
MAX_BACKOFF = 30.0
LOCK_NAME = "zoo-lock.json"
_HEX_LEN = {"sha256": 64, "md5": 32}
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


class _Retry(Exception):
    """A transient failure: the same URL is worth another try after a pause."""


class _GiveUp(Exception):
    """A permanent failure for this source: move on to the next one."""


def default_cache_dir() -> Path:
    """Where artifacts are cached: ``$ZOO_CACHE``, else ``~/.cache/ascend-zoo``."""
    env = os.environ.get("ZOO_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ascend-zoo"


def _digests(path: Path, algorithms: Sequence[str]) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, reading the file once in 1 MiB chunks."""
    try:
        hashers = {a: hashlib.new(a) for a in algorithms}
    except ValueError as e:
        raise ValueError(f"unknown hash algorithm in {list(algorithms)}: {e}") from None
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                for h in hashers.values():
                    h.update(chunk)
    except OSError as e:
        raise InputError(path, f"cannot read file to hash it: {e.strerror or e}") from e
    return {a: h.hexdigest() for a, h in hashers.items()}


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, streamed in 1 MiB chunks (multi-GB archives never sit in memory)."""
    return _digests(Path(path), [algorithm])[algorithm]


def _check_hex(dest: Path, algorithm: str, value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    if len(v) != _HEX_LEN[algorithm] or any(c not in "0123456789abcdef" for c in v):
        raise InputError(
            dest, f"expected {algorithm} {value!r} is not a {_HEX_LEN[algorithm]}-character hex digest"
        )
    return v


def _mismatch(path: Path, size: int | None, sha256: str | None, md5: str | None) -> str | None:
    """What is wrong with ``path`` against the expected size and digests, or None when it matches."""
    actual_size = path.stat().st_size
    # Size first: it costs a stat, not a multi-GB read.
    if size is not None and actual_size != size:
        return f"expected size {size} bytes, got {actual_size} bytes"
    wanted = {a: v for a, v in (("sha256", sha256), ("md5", md5)) if v is not None}
    if not wanted:
        return None
    got = _digests(path, list(wanted))
    bad = [f"expected {a} {v}, got {got[a]}" for a, v in wanted.items() if got[a] != v]
    return "; ".join(bad) or None


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` from a Content-Range header; None for a part that is absent or ``*``."""
    m = _CONTENT_RANGE_RE.match(value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, total


def _progress_bar(label: str, total: int | None, initial: int, progress: bool) -> tqdm:
    stderr = sys.stderr
    # A bar written into a log file or CI capture is just noise: only draw it for a person at a terminal.
    enabled = progress and stderr is not None and stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        desc=label,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=stderr,
        disable=not enabled,
        leave=False,
    )


def _one_request(
    session: requests.Session,
    url: str,
    part: Path,
    *,
    size: int | None,
    sha256: str | None,
    md5: str | None,
    timeout: float,
    progress: bool,
) -> None:
    """One GET of ``url`` into ``part``, resuming from its current length; raises _Retry or _GiveUp."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        # Longer than the whole file can be: not a prefix of it, so nothing there is worth keeping.
        part.unlink()
        offset = 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        status = r.status_code
        if status == 416:
            # The server has nothing after byte `offset`: either the part is already complete or it is bogus.
            _, total = _parse_content_range(r.headers.get("Content-Range"))
            if offset and _part_complete(part, offset, total, size, sha256, md5):
                return
            part.unlink(missing_ok=True)
            raise _Retry(f"HTTP 416 for a resume at byte {offset}; the partial file was not the start of it")
        if status == 429 or status >= 500:
            raise _Retry(f"HTTP {status} {r.reason}")
        if status == 206:
            start, total = _parse_content_range(r.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retry(f"asked to resume at byte {offset}, server sent a range starting at {start}")
            mode = "ab"
        elif status == 200:
            # The server ignored Range (or none was sent): this body is the whole file, so start over.
            offset, total, mode = 0, None, "wb"
        else:
            raise _GiveUp(f"HTTP {status} {r.reason}")

        length = r.headers.get("Content-Length")
        expected_body = int(length) if length is not None and length.isdigit() else None
        if total is None and expected_body is not None:
            total = offset + expected_body
        received = 0
        with open(part, mode) as f, _progress_bar(part.name[: -len(".part")], total, offset, progress) as bar:
            # Raw bytes, undecoded: urllib3's decoding read keeps filling its buffer up to the chunk size
            # and drops what it holds when the connection breaks, so up to 1 MiB would never reach the
            # part. Undecoded is also what Range offsets count, and what the published hash is over.
            for chunk in r.raw.stream(CHUNK, decode_content=False):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            f.flush()
            # The rename to `dest` is only atomic in a useful sense if the bytes reached the disk first.
            os.fsync(f.fileno())
    if expected_body is not None and received < expected_body:
        raise _Retry(f"connection closed after {offset + received} of {offset + expected_body} bytes")


def _part_complete(
    part: Path, offset: int, total: int | None, size: int | None, sha256: str | None, md5: str | None
) -> bool:
    """After a 416: is the part the whole file? Only if something we know (size, hash, total) says so."""
    if total is not None and total != offset:
        return False
    if size is None and sha256 is None and md5 is None and total is None:
        return False  # nothing to judge by: safer to download again than to keep a guess
    return _mismatch(part, size, sha256, md5) is None


def _download_http(
    session: requests.Session,
    url: str,
    part: Path,
    *,
    size: int | None,
    sha256: str | None,
    md5: str | None,
    retries: int,
    backoff: float,
    timeout: float,
    progress: bool,
) -> None:
    """Download ``url`` into ``part`` with retries and resume; raises _GiveUp with the last error."""
    last = "no attempt made"
    for attempt in range(retries + 1):
        try:
            _one_request(
                session, url, part, size=size, sha256=sha256, md5=md5, timeout=timeout, progress=progress
            )
            return
        except _Retry as e:
            last = str(e)
        except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as e:
            # urllib3 errors come from reading the body through r.raw, which requests does not wrap.
            last = f"{type(e).__name__}: {e}"
        except requests.RequestException as e:
            # Invalid URL, too many redirects, ...: trying again will not change the answer.
            raise _GiveUp(f"{type(e).__name__}: {e}") from e
        if attempt < retries:
            delay = min(backoff * 2**attempt, MAX_BACKOFF)
            log.info("%s: %s; retry %d/%d in %.2f s", url, last, attempt + 1, retries, delay)
            time.sleep(delay)
    raise _GiveUp(f"{last} (gave up after {retries + 1} attempts)")


def _copy_from_dir(directory: Path, filename: str, part: Path) -> None:
    source = directory / filename
    if not directory.is_dir():
        raise _GiveUp(f"mirror directory {directory} does not exist")
    if not source.is_file():
        raise _GiveUp(f"{filename} is not in the mirror directory (no file {source})")
    try:
        shutil.copyfile(source, part)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise _GiveUp(f"cannot copy {source}: {e.strerror or e}") from e


def _mirror_source(mirror: str | Path, filename: str) -> tuple[str, str | Path]:
    """``("dir", path)`` or ``("url", url)`` for the mirror's copy of ``filename``."""
    text = str(mirror)
    if isinstance(mirror, str) and _URL_RE.match(text):
        if text.lower().startswith("file://"):
            return "dir", Path(urllib.request.url2pathname(urllib.parse.urlparse(text).path))
        return "url", text.rstrip("/") + "/" + urllib.parse.quote(filename)
    return "dir", Path(mirror).expanduser()


def fetch_file(
    urls: Sequence[str],
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    mirror: str | Path | None = None,
    offline: bool = False,
    retries: int = 5,
    backoff: float = 0.5,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Make ``dest`` hold the checked file, from cache, mirror or URLs in that order; return ``dest``."""
    dest = Path(dest)
    url_list = [urls] if isinstance(urls, str) else list(urls)
    sha256 = _check_hex(dest, "sha256", sha256)
    md5 = _check_hex(dest, "md5", md5)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")

    if dest.exists():
        problem = _mismatch(dest, size, sha256, md5)
        if problem:
            # A cached file that changed is a finding (disk corruption, a hand edit, a new upstream release):
            # replacing it silently would hide that from whoever reviews the run.
            raise ChecksumError(
                dest, f"cached file does not match: {problem}; inspect it, or delete it to download again"
            )
        return dest

    sources: list[tuple[str, str | Path]] = []
    if mirror is not None:
        sources.append(_mirror_source(mirror, dest.name))
    if offline:
        if mirror is None:
            raise FetchError(f"{dest.name}: offline mode needs a mirror, and none was given")
    else:
        sources += [("url", u) for u in url_list]
    if not sources:
        raise FetchError(f"{dest.name}: no URL or mirror to download it from")

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with requests.Session() as session:
        session.headers["User-Agent"] = f"ascend-zoo/{__version__}"
        # Byte offsets in Range must count the stored file, not a gzip-encoded transfer of it.
        session.headers["Accept-Encoding"] = "identity"
        for kind, where in sources:
            try:
                if kind == "dir":
                    assert isinstance(where, Path)
                    _copy_from_dir(where, dest.name, part)
                else:
                    _download_http(
                        session,
                        str(where),
                        part,
                        size=size,
                        sha256=sha256,
                        md5=md5,
                        retries=retries,
                        backoff=backoff,
                        timeout=timeout,
                        progress=progress,
                    )
            except _GiveUp as e:
                log.warning("%s: %s: %s", dest.name, where, e)
                errors.append(f"{where}: {e}")
                continue
            problem = _mismatch(part, size, sha256, md5)
            if problem:
                part.unlink(missing_ok=True)
                raise ChecksumError(
                    dest, f"download from {where} does not match: {problem} (partial file deleted)"
                )
            os.replace(part, dest)
            log.info("%s: fetched from %s", dest.name, where)
            return dest

    if offline:
        raise FetchError(f"{dest.name}: offline, and not available from mirror {mirror}: {errors[0]}")
    raise FetchError(f"{dest.name}: every source failed: " + "; ".join(errors))


def _read_lock(lock_file: Path) -> dict[str, Any]:
    if not lock_file.exists():
        return {}
    try:
        data = json.loads(lock_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(lock_file, f"cannot read lock file: {e}") from e
    if not isinstance(data, dict):
        raise InputError(lock_file, f"lock file must hold a JSON object, got {type(data).__name__}")
    return data


def _locked_sha256(lock_file: Path, entry: Any, filename: str) -> str:
    value = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise InputError(lock_file, f"entry {filename!r} has no valid 64-hex 'sha256': {entry!r}")
    return value


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # A crash mid-write must leave the old lock, not half a JSON document that blocks every later run.
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_or_check_lock(lock_file: Path, artifact: Artifact, path: Path) -> str:
    """Check ``path`` against the sha256 locked for ``artifact``, or record it there; return the sha256."""
    lock_file, path = Path(lock_file), Path(path)
    digest = file_digest(path)
    lock = _read_lock(lock_file)
    entry = lock.get(artifact.filename)
    if entry is not None:
        expected = _locked_sha256(lock_file, entry, artifact.filename)
        if digest != expected:
            raise ChecksumError(
                path,
                f"expected sha256 {expected} (recorded in {lock_file} on {entry.get('recorded', '?')}), "
                f"got {digest}",
            )
        return digest
    lock[artifact.filename] = {
        "sha256": digest,
        "size": path.stat().st_size,
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json_atomic(lock_file, lock)
    log.warning(
        "UNVERIFIED ARTIFACT: %s (%s) has no published hash; its sha256 %s was RECORDED ON FIRST "
        "DOWNLOAD into %s, not checked against anything the authors published. Later runs are held "
        "to it, but this first copy is trusted blindly.",
        artifact.filename,
        artifact.name or artifact.kind,
        digest,
        lock_file,
    )
    return digest


def _check_filename(artifact: Artifact) -> None:
    name = artifact.filename
    # The name becomes a path under the cache: a separator or '..' would let a manifest write anywhere.
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise InputError(None, f"artifact {artifact.name!r}: filename {name!r} must be a plain file name")


def fetch_artifact(
    artifact: Artifact,
    cache_dir: Path | None = None,
    *,
    mirror: str | Path | None = None,
    offline: bool = False,
    lock_file: Path | None = None,
    progress: bool = True,
) -> Path:
    """Fetch a manifest artifact into the cache and return its path, enforcing its (or its locked) hash."""
    _check_filename(artifact)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache / artifact.filename
    opts: dict[str, Any] = {"mirror": mirror, "offline": offline, "progress": progress}
    if artifact.sha256 is not None or artifact.md5 is not None:
        return fetch_file(
            artifact.urls, dest, sha256=artifact.sha256, md5=artifact.md5, size=artifact.size, **opts
        )

    lock = Path(lock_file) if lock_file is not None else cache / LOCK_NAME
    entry = _read_lock(lock).get(artifact.filename)
    if entry is None:
        path = fetch_file(artifact.urls, dest, size=artifact.size, **opts)
        record_or_check_lock(lock, artifact, path)
        return path

    expected = _locked_sha256(lock, entry, artifact.filename)
    size = artifact.size if artifact.size is not None else entry.get("size")
    try:
        return fetch_file(
            artifact.urls, dest, sha256=expected, size=size if isinstance(size, int) else None, **opts
        )
    except ChecksumError as e:
        raise ChecksumError(
            e.path, f"{e.problem} (the expected hash is the one recorded in {lock} on first download)"
        ) from e


def artifact_location(bundle: str, artifact: Artifact, cache_dir: Path) -> Path:
    """Where a fetched artifact is used from: the file itself, or `<cache>/<bundle>/<name>/` once unpacked."""
    return cache_dir / bundle / artifact.name if artifact.unpack else cache_dir / artifact.filename


def fetch_bundle_artifacts(
    bundle: str,
    artifacts: dict[str, Artifact],
    cache_dir: Path,
    *,
    mirror: str | Path | None = None,
    offline: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Fetch (checksummed) and safely unpack every artifact of a bundle; returns name -> usable path."""
    from common.archive import safe_extract

    out = {}
    for name, art in artifacts.items():
        path = fetch_artifact(art, cache_dir, mirror=mirror, offline=offline, progress=progress)
        out[name] = safe_extract(path, artifact_location(bundle, art, cache_dir)) if art.unpack else path
    return out
