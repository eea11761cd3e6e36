"""common.fetch against a real HTTP server on 127.0.0.1 whose behaviour each test sets."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from common.errors import ChecksumError, FetchError, InputError
from common.fetch import default_cache_dir, fetch_artifact, fetch_file, file_digest, record_or_check_lock
from common.manifest import Artifact

pytestmark = pytest.mark.timeout(30)

# Not a repeating pattern, so a resume at the wrong offset produces a different hash.
DATA = hashlib.sha256(b"seed").digest() * 9000 + b"tail"
SHA = hashlib.sha256(DATA).hexdigest()
MD5 = hashlib.md5(DATA).hexdigest()
FAST = {"backoff": 0.01, "timeout": 3.0, "progress": False}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # so that Content-Length, not the closed socket, marks the end of a body
    timeout = 5  # a stuck client cannot hold a server thread for longer

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        self.server.app(self)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


App = Callable[[BaseHTTPRequestHandler], None]


class Server:
    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.seen = []  # type: ignore[attr-defined]
        self.httpd.app = lambda h: h.send_error(404)  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    @property
    def seen(self) -> list[tuple[str, str | None]]:
        return self.httpd.seen  # type: ignore[attr-defined]

    def serve(self, app: App) -> None:
        self.httpd.app = app  # type: ignore[attr-defined]


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(5)


def send(
    h: BaseHTTPRequestHandler, data: bytes, *, honour_range: bool = True, cut_at: int | None = None
) -> None:
    """Answer with ``data``, as a 206/416 when asked for a range; ``cut_at`` closes the connection early."""
    rng = h.headers.get("Range")
    start = int(rng.removeprefix("bytes=").rstrip("-")) if rng and honour_range else None
    if start is not None and start >= len(data):
        h.send_response(416)
        h.send_header("Content-Range", f"bytes */{len(data)}")
        h.send_header("Content-Length", "0")
        h.end_headers()
        return
    if start is not None:
        body = data[start:]
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    else:
        body = data
        h.send_response(200)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if cut_at is not None:
        h.wfile.write(body[:cut_at])
        h.close_connection = True
        return
    h.wfile.write(body)


def status(h: BaseHTTPRequestHandler, code: int) -> None:
    h.send_response(code)
    h.send_header("Content-Length", "0")
    h.end_headers()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_download_ok_and_cached(server: Server, tmp_path: Path) -> None:
    server.serve(lambda h: send(h, DATA))
    dest = tmp_path / "c" / "w.bin"
    got = fetch_file([server.url("/w.bin")], dest, sha256=SHA, md5=MD5, size=len(DATA), **FAST)
    assert got == dest and dest.read_bytes() == DATA
    assert not dest.with_name("w.bin.part").exists()
    assert server.seen == [("/w.bin", None)]
    assert file_digest(dest) == SHA and file_digest(dest, "md5") == MD5
    # A second call finds the checked file in the cache and asks nobody.
    fetch_file([server.url("/w.bin")], dest, sha256=SHA, **FAST)
    assert len(server.seen) == 1


def test_wrong_hash_leaves_nothing(server: Server, tmp_path: Path) -> None:
    server.serve(lambda h: send(h, DATA))
    dest = tmp_path / "w.bin"
    wrong = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(ChecksumError) as e:
        fetch_file([server.url("/w.bin")], dest, sha256=wrong, **FAST)
    assert wrong in str(e.value) and SHA in str(e.value) and str(dest) in str(e.value)
    assert not dest.exists() and not dest.with_name("w.bin.part").exists()


def test_wrong_size_is_checksum_error(server: Server, tmp_path: Path) -> None:
    server.serve(lambda h: send(h, DATA))
    with pytest.raises(ChecksumError, match=f"expected size {len(DATA) + 1} bytes, got {len(DATA)}"):
        fetch_file([server.url("/w.bin")], tmp_path / "w.bin", size=len(DATA) + 1, **FAST)


def test_truncated_download_is_resumed_with_range(server: Server, tmp_path: Path) -> None:
    cut = 100_003

    def app(h: BaseHTTPRequestHandler) -> None:
        send(h, DATA, cut_at=cut if len(server.seen) == 1 else None)

    server.serve(app)
    dest = tmp_path / "w.bin"
    fetch_file([server.url("/w.bin")], dest, sha256=SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert server.seen == [("/w.bin", None), ("/w.bin", f"bytes={cut}-")]


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    def app(h: BaseHTTPRequestHandler) -> None:
        send(h, DATA, honour_range=False, cut_at=5000 if len(server.seen) == 1 else None)

    server.serve(app)
    dest = tmp_path / "w.bin"
    fetch_file([server.url("/w.bin")], dest, sha256=SHA, **FAST)
    # Appending the full 200 body to the 5000-byte part would have failed the hash.
    assert dest.read_bytes() == DATA
    assert server.seen[1] == ("/w.bin", "bytes=5000-")


def test_complete_part_from_earlier_run_is_kept_on_416(server: Server, tmp_path: Path) -> None:
    server.serve(lambda h: send(h, DATA))
    dest = tmp_path / "w.bin"
    dest.with_name("w.bin.part").write_bytes(DATA)
    fetch_file([server.url("/w.bin")], dest, sha256=SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert server.seen == [("/w.bin", f"bytes={len(DATA)}-")]


def test_503_twice_then_ok(server: Server, tmp_path: Path) -> None:
    def app(h: BaseHTTPRequestHandler) -> None:
        status(h, 503) if len(server.seen) <= 2 else send(h, DATA)

    server.serve(app)
    dest = tmp_path / "w.bin"
    fetch_file([server.url("/w.bin")], dest, sha256=SHA, **FAST)
    assert dest.read_bytes() == DATA and len(server.seen) == 3


def test_retries_exhausted_lists_every_url(server: Server, tmp_path: Path) -> None:
    server.serve(lambda h: status(h, 500 if h.path == "/a" else 403))
    urls = [server.url("/a"), server.url("/b")]
    with pytest.raises(FetchError) as e:
        fetch_file(urls, tmp_path / "w.bin", retries=2, **FAST)
    msg = str(e.value)
    assert "w.bin" in msg and f"{urls[0]}: HTTP 500" in msg and f"{urls[1]}: HTTP 403" in msg
    # 500 is retried (1 + 2 attempts); 403 is final at once.
    assert [p for p, _ in server.seen] == ["/a", "/a", "/a", "/b"]


def test_404_falls_through_to_second_url(server: Server, tmp_path: Path) -> None:
    server.serve(lambda h: send(h, DATA) if h.path == "/good" else status(h, 404))
    dest = tmp_path / "w.bin"
    fetch_file([server.url("/gone"), server.url("/good")], dest, sha256=SHA, **FAST)
    assert dest.read_bytes() == DATA
    assert [p for p, _ in server.seen] == ["/gone", "/good"]


def test_offline_uses_mirror_directory_only(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "w.bin").write_bytes(DATA)
    # A listening socket nobody accepts on: a connection attempt would sit in its backlog, where we see it.
    sentinel = socket.socket()
    sentinel.bind(("127.0.0.1", 0))
    sentinel.listen(8)
    sentinel.setblocking(False)
    try:
        urls = [
            f"http://127.0.0.1:{closed_port()}/w.bin",
            f"http://127.0.0.1:{sentinel.getsockname()[1]}/w.bin",
        ]
        dest = tmp_path / "cache" / "w.bin"
        fetch_file(urls, dest, sha256=SHA, mirror=mirror, offline=True, **FAST)
        assert dest.read_bytes() == DATA
        with pytest.raises(FetchError) as e:
            fetch_file(urls, tmp_path / "cache" / "missing.bin", mirror=mirror, offline=True, **FAST)
        assert "missing.bin" in str(e.value) and str(mirror) in str(e.value)
        with pytest.raises(BlockingIOError):
            sentinel.accept()
    finally:
        sentinel.close()


def test_offline_without_mirror_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="w.bin: offline mode needs a mirror"):
        fetch_file(["http://127.0.0.1:9/w.bin"], tmp_path / "w.bin", offline=True, **FAST)


def test_mirror_url_is_tried_first(server: Server, tmp_path: Path) -> None:
    server.serve(lambda h: send(h, DATA) if h.path == "/mirror/w.bin" else status(h, 500))
    dest = tmp_path / "w.bin"
    fetch_file([server.url("/orig/w.bin")], dest, sha256=SHA, mirror=server.url("/mirror/"), **FAST)
    assert dest.read_bytes() == DATA
    assert [p for p, _ in server.seen] == ["/mirror/w.bin"]


def test_changed_cached_file_is_reported_not_replaced(server: Server, tmp_path: Path) -> None:
    server.serve(lambda h: send(h, DATA))
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"corrupted")
    with pytest.raises(ChecksumError) as e:
        fetch_file([server.url("/w.bin")], dest, sha256=SHA, **FAST)
    msg = str(e.value)
    assert str(dest) in msg and SHA in msg and hashlib.sha256(b"corrupted").hexdigest() in msg
    assert dest.read_bytes() == b"corrupted" and server.seen == []


def test_lock_recorded_then_enforced(
    server: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"data": DATA}
    server.serve(lambda h: send(h, body["data"]))
    art = Artifact(name="w", kind="weights", filename="w.bin", urls=(server.url("/w.bin"),))
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="zoo.fetch"):
        path = fetch_artifact(art, cache, progress=False)
    assert path == cache / "w.bin" and path.read_bytes() == DATA
    lock = json.loads((cache / "zoo-lock.json").read_text())
    assert lock["w.bin"]["sha256"] == SHA and lock["w.bin"]["size"] == len(DATA)
    assert lock["w.bin"]["recorded"].startswith("20")
    assert any(
        r.levelno == logging.WARNING and "RECORDED ON FIRST DOWNLOAD" in r.getMessage()
        for r in caplog.records
    )

    assert fetch_artifact(art, cache, progress=False) == path  # unchanged: passes
    path.write_bytes(DATA[:-1] + b"X")  # tampered cache
    with pytest.raises(ChecksumError, match="w.bin") as e:
        fetch_artifact(art, cache, progress=False)
    assert SHA in str(e.value)

    # The lock also holds a fresh download to the first one: upstream changed the file.
    path.unlink()
    body["data"] = DATA + b"v2"
    with pytest.raises(ChecksumError):
        fetch_artifact(art, cache, progress=False)
    assert not path.exists()


def test_record_or_check_lock_directly(tmp_path: Path) -> None:
    art = Artifact(kind="other", filename="f.bin")
    f = tmp_path / "f.bin"
    f.write_bytes(DATA)
    lock = tmp_path / "lock.json"
    assert record_or_check_lock(lock, art, f) == SHA
    assert record_or_check_lock(lock, art, f) == SHA
    f.write_bytes(b"swapped")
    with pytest.raises(ChecksumError) as e:
        record_or_check_lock(lock, art, f)
    assert str(f) in str(e.value) and str(lock) in str(e.value) and SHA in str(e.value)
    lock.write_text("{not json")
    with pytest.raises(InputError, match="lock.json: cannot read lock file"):
        record_or_check_lock(lock, art, f)


def test_published_hash_wins_over_lock_and_custom_lock_path(server: Server, tmp_path: Path) -> None:
    server.serve(lambda h: send(h, DATA))
    art = Artifact(kind="dataset", filename="d.bin", urls=(server.url("/d.bin"),), md5=MD5)
    lock = tmp_path / "elsewhere" / "lock.json"
    fetch_artifact(art, tmp_path / "cache", lock_file=lock, progress=False)
    assert not lock.exists()  # a published hash needs no recording


def test_artifact_filename_must_stay_in_cache(tmp_path: Path) -> None:
    art = Artifact(kind="other", filename="../evil.bin", urls=("http://127.0.0.1:9/x",))
    with pytest.raises(Exception, match="must be a plain file name"):
        fetch_artifact(art, tmp_path, progress=False)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "zc"))
    assert default_cache_dir() == tmp_path / "zc"
    monkeypatch.delenv("ZOO_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "ascend-zoo"


def test_bundle_artifacts_fetched_from_a_mirror_unpack_and_are_located(tmp_path):
    """fetch -> safe unpack -> locate: what `zoo fetch refinedet --mirror DIR --offline` then `zoo eval` rely on."""
    import io
    import tarfile

    from bundles.refinedet.bundle import BUNDLE
    from common.fetch import fetch_bundle_artifacts
    from common.manifest import Artifact

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "w.pth").write_bytes(b"weights")
    with tarfile.open(mirror / "voc.tar", "w") as tf:
        payload = b"000001\n"
        info = tarfile.TarInfo("VOCdevkit/VOC2007/ImageSets/Main/test.txt")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    arts = {"weights": Artifact(name="weights", kind="weights", filename="w.pth", urls=("http://127.0.0.1:9/w",)),
            "voc": Artifact(name="voc", kind="dataset", filename="voc.tar", urls=("http://127.0.0.1:9/v",),
                            unpack=True)}
    cache = tmp_path / "cache"
    paths = fetch_bundle_artifacts("refinedet", arts, cache, mirror=mirror, offline=True, progress=False)
    assert (paths["voc"] / "VOCdevkit/VOC2007/ImageSets/Main/test.txt").read_bytes() == b"000001\n"
    assert json.loads((cache / "zoo-lock.json").read_text())["w.pth"]["sha256"]  # unhashed: recorded
    monkey_manifest = BUNDLE.manifest.model_copy(update={"artifacts": arts})
    original = BUNDLE.manifest
    try:
        BUNDLE.manifest = monkey_manifest
        assert BUNDLE.locate(None, None, cache) == (paths["voc"], paths["weights"])
        assert BUNDLE.locate(None, None, tmp_path / "empty") is None
    finally:
        BUNDLE.manifest = original
