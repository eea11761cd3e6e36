"""Image inputs that need no Docker: wheelhouse checks, exact pins, the build context (the bundle Dockerfiles' own
contract: tests/test_dockerfiles.py)."""

from __future__ import annotations

import fnmatch
import os
import re

import pytest
import tomllib

from common import images
from common.images import ImageError, check_wheelhouse, collect_wheelhouse, read_pins

ROOT = images.REPO_ROOT
IMAGE_BUNDLES = sorted(p.parent.name for p in images.BUNDLES_DIR.glob("*/manifest.toml"))


def _wheel(directory, name, version, tag="py3-none-any"):
    (directory / f"{name}-{version}-{tag}.whl").write_bytes(b"")


def test_missing_wheels_are_named_in_one_line(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# pins\ntorch==2.13.0\nnumpy==2.4.6  # comment\nPyYAML==6.0.2\n\ntqdm==4.70.1\n")
    wh = tmp_path / "wheelhouse"
    wh.mkdir()
    _wheel(wh, "torch", "2.13.0+cpu", "cp311-cp311-manylinux_2_28_x86_64")  # local build satisfies ==2.13.0
    _wheel(wh, "numpy", "2.4.5", "cp311-cp311-manylinux_2_28_x86_64")  # wrong version
    _wheel(wh, "tqdm", "4.70.1")
    with pytest.raises(ImageError) as e:
        check_wheelhouse(req, wh)
    msg = str(e.value)
    assert "\n" not in msg
    assert "numpy==2.4.6" in msg and "pyyaml==6.0.2" in msg
    assert "torch" not in msg and "tqdm" not in msg
    assert "run `nox -s wheelhouse`" in msg


def test_complete_wheelhouse_passes(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("typing-extensions==4.15.0\nml_dtypes==0.6.0\n")
    _wheel(tmp_path, "typing_extensions", "4.15.0")
    _wheel(tmp_path, "ml_dtypes", "0.6.0", "cp311-cp311-manylinux_2_28_x86_64")
    check_wheelhouse(req, tmp_path)


@pytest.mark.parametrize("line", ["numpy>=1.24", "numpy", "git+https://example.org/x.git", "-e ."])
def test_requirements_must_be_exact_pins(tmp_path, line):
    req = tmp_path / "requirements.txt"
    req.write_text(f"tqdm==4.70.1\n{line}\n")
    with pytest.raises(ImageError, match=r"requirements.txt:2: .* not an exact pin"):
        read_pins(req)


def test_collect_is_idempotent_without_pip(tmp_path, monkeypatch):
    """Every pin already has a wheel: nothing is downloaded (no pip call, no network)."""
    monkeypatch.setenv("ZOO_WHEEL_CACHE", str(tmp_path / "cache"))
    dest = tmp_path / "wheelhouse"
    dest.mkdir()
    for name, version in read_pins(images.requirements_path("refinedet")).items():
        _wheel(dest, name.replace("-", "_"), version + ("+cpu" if name == "torch" else ""))

    def no_pip(*a, **k):
        raise AssertionError(f"pip was called: {a}")

    monkeypatch.setattr(images.subprocess, "run", no_pip)
    assert collect_wheelhouse("refinedet", dest) == dest
    assert len(list((tmp_path / "cache").glob("*.whl"))) == len(list(dest.glob("*.whl")))


@pytest.mark.parametrize("bundle", IMAGE_BUNDLES)
def test_image_pins_cover_the_project_and_its_build_backend(bundle):
    pins = read_pins(images.requirements_path(bundle))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for dep in project["project"]["dependencies"]:
        name = re.split(r"[<>=!~ ;\[]", dep, maxsplit=1)[0]
        assert images._norm(name) in pins, f"{bundle}: requirements.txt does not pin {name}"
    # The Dockerfile installs the zoo with --no-build-isolation: the pinned setuptools is its build backend.
    (backend,) = project["build-system"]["requires"]
    assert backend.startswith("setuptools>=")
    minimum = int(backend.split(">=")[1].split(".")[0])
    assert int(pins["setuptools"].split(".")[0]) >= minimum


def test_dockerignore_keeps_what_the_images_need():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("!")
    ]
    needed_files = ("wheelhouse", "common", "bundles", "docker", "pyproject.toml", "docker/entrypoint.sh",
                    "bundles/refinedet/upstream_keys.json", "bundles/refinedet/manifest.toml")
    for needed in needed_files:
        assert not any(fnmatch.fnmatch(needed, p) for p in patterns), f".dockerignore excludes {needed}"
    for excluded in ("runs", ".git", "tests"):
        assert any(fnmatch.fnmatch(excluded, p) for p in patterns), f".dockerignore keeps {excluded}"


def test_scripts_are_executable():
    for script in ("docker/entrypoint.sh", "docker/make-base-image.sh", ".ci/run"):
        assert os.access(ROOT / script, os.X_OK), f"{script} is not executable (git update-index --chmod=+x)"
