"""The bundle CPU images, each built from its own bundles/<b>/Dockerfile with the wheelhouse and run with Docker
(marker ``docker``): refinedet in depth, every other bundle with a manifest built, its user and labels checked and
its demo evaluation run.

Without a Docker engine these tests skip, except under CI=true, where they fail: CI must test the images.
The image is built once per module (base image via docker/make-base-image.sh when no registry is reachable),
with a fake CA bundle as the BuildKit secret ``ca`` that must never reach a layer.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
import uuid

import pytest
import tomllib

from common import images

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BUNDLE = "refinedet"
OTHER_BUNDLES = [b for b in sorted(p.parent.name for p in images.BUNDLES_DIR.glob("*/manifest.toml")) if b != BUNDLE]
MARKER = f"ZOO-FAKE-CA-{uuid.uuid4().hex}".encode()
BUILD_TIMEOUT_S = 900  # cold: base image + wheelhouse + torch layer; cached: seconds


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    if not images.docker_available():
        why = f"no Docker engine answers `{images.docker_bin()} info` (start dockerd)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}: CI must run the image tests")
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("image")
    lock = tmp / "base-images.lock"  # keep the repository's lock untouched by test runs
    ca = tmp / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n" + MARKER + b"\n-----END CERTIFICATE-----\n")
    images.collect_wheelhouse(BUNDLE)
    base = images.ensure_base_image(BUNDLE, lock=lock)
    tag = images.build_image(BUNDLE, base_image=base, ca_bundle=ca, lock=lock, quiet=True)
    assert json.loads(lock.read_text()), "the build records what its base image resolved to"
    return tag


def _docker(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([images.docker_bin(), *args], capture_output=True, text=True, timeout=300, **kw)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {stderr!r}"
    return lines[0]


@pytest.mark.timeout(BUILD_TIMEOUT_S + 300)
def test_ca_secret_reaches_no_layer(image):
    """`docker save` the image and scan every member (layers, config, history) for the fake CA's marker."""
    proc = subprocess.Popen([images.docker_bin(), "save", image], stdout=subprocess.PIPE)
    scanned = 0
    with tarfile.open(fileobj=proc.stdout, mode="r|") as outer:
        for member in outer:
            if not member.isfile():
                continue
            f = outer.extractfile(member)
            tail = b""
            while chunk := f.read(1 << 20):
                assert MARKER not in tail + chunk, f"the CA bundle leaked into {member.name}"
                tail = chunk[-len(MARKER) :]
                scanned += len(chunk)
    assert proc.wait() == 0
    assert scanned > 100 << 20, "the saved image is implausibly small"


def test_runs_as_non_root(image):
    r = _docker("run", "--rm", image, "id", "-u")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() != "0"


def test_labels_name_manifest_and_upstream(image):
    r = _docker("image", "inspect", "--format", "{{json .Config.Labels}}", image)
    labels = json.loads(r.stdout)
    raw = (images.BUNDLES_DIR / BUNDLE / "manifest.toml").read_bytes()
    manifest = tomllib.loads(raw.decode())
    assert labels["zoo.bundle"] == BUNDLE
    assert labels["zoo.manifest.sha256"] == hashlib.sha256(raw).hexdigest()
    assert labels["zoo.upstream.commit"] == manifest["upstream"]["commit"]
    assert labels["org.opencontainers.image.title"] == f"zoo/{BUNDLE}"
    assert labels["org.opencontainers.image.revision"]
    assert "org.opencontainers.image.source" in labels


def test_eval_writes_a_demo_report_on_the_host(image, tmp_path):
    out = tmp_path / "out"
    r = images.run_image(image, ["eval"], out_dir=out, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = images.latest_run_dir(out)
    assert run_dir is not None, f"no report.json under {out}: {r.stdout}{r.stderr}"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["mode"] == "demo" and report["bundle"] == BUNDLE
    assert report["verdict"] == "DEMO-PASS"
    revision = json.loads(_docker("image", "inspect", "--format", "{{json .Config.Labels}}", image).stdout)[
        "org.opencontainers.image.revision"]
    assert report["provenance"]["zoo_commit"] == revision != "unknown", "the report names the zoo commit"
    assert (run_dir / "report.md").is_file()
    assert (run_dir / "report.json").stat().st_uid == os.getuid(), "files on the host belong to the caller"


@pytest.mark.timeout(BUILD_TIMEOUT_S + 900)
@pytest.mark.parametrize("bundle", OTHER_BUNDLES)
def test_every_bundle_image_builds_and_its_eval_writes_a_demo_report(image, bundle, tmp_path):
    """Its own Dockerfile, the same shared steps and pins as refinedet: only the last layers rebuild; the image
    runs as a non-root user, names its bundle and upstream commit, and its demo must pass."""
    lock = tmp_path / "base-images.lock"
    images.collect_wheelhouse(bundle)
    tag = images.build_image(bundle, base_image=images.ensure_base_image(bundle, lock=lock), lock=lock, quiet=True)
    r = _docker("run", "--rm", tag, "id", "-u")
    assert r.returncode == 0 and r.stdout.strip() != "0", r.stdout + r.stderr
    out = tmp_path / "out"
    r = images.run_image(tag, ["eval"], out_dir=out, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((images.latest_run_dir(out) / "report.json").read_text())
    assert (report["bundle"], report["mode"], report["verdict"]) == (bundle, "demo", "DEMO-PASS")
    labels = json.loads(_docker("image", "inspect", "--format", "{{json .Config.Labels}}", tag).stdout)
    manifest = tomllib.loads((images.BUNDLES_DIR / bundle / "manifest.toml").read_text())
    assert labels["zoo.bundle"] == bundle
    assert labels["zoo.upstream.commit"] == manifest["upstream"]["commit"]


def test_read_only_out_is_one_clear_line(image, tmp_path):
    r = images.run_image(image, ["eval"], out_dir=tmp_path, out_readonly=True, timeout=120)
    assert r.returncode != 0
    line = _one_line(r.stderr)
    assert "/out is not writable" in line and '-v "$PWD/runs:/out"' in line


@pytest.mark.parametrize("mount_empty", [False, True], ids=["not-mounted", "empty"])
def test_data_not_mounted_is_one_clear_line(image, tmp_path, mount_empty):
    data = tmp_path / "data"
    data.mkdir()
    r = images.run_image(
        image, ["eval", "--data", "/data"], out_dir=tmp_path / "out", data_dir=data if mount_empty else None
    )
    assert r.returncode != 0
    line = _one_line(r.stderr)
    assert "--data /data" in line and ":/data:ro" in line
    assert not any((tmp_path / "out").iterdir()), "nothing runs before the check"


def test_doctor_lists_devices_and_prints_a_docker_run_line(image):
    r = images.run_image(image, ["doctor"], out_dir=None, timeout=120)
    assert r.returncode != 0, "no NPU here: doctor must say so with its exit status"
    for item in (
        "/dev/davinci_manager",
        "/dev/devmm_svm",
        "/dev/hisi_hdc",
        "davinciN",
        "npu-smi",
        "aclruntime",
    ):
        assert item in r.stdout
    (line,) = [x.strip() for x in r.stdout.splitlines() if x.strip().startswith("docker run ")]
    assert "--device /dev/davinci0" in line and f"zoo/{BUNDLE}:ascend" in line
    assert "/usr/local/Ascend/driver/lib64:ro" in line and ":/data:ro" in line and ":/out" in line
