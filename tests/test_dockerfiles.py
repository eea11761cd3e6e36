"""Every bundle with a manifest has its own Dockerfile (cpu + ascend targets, non-root USER, its own pins and
files); the steps they share are exact copies of docker/shared-steps.Dockerfile. No Docker needed: the images
themselves are built and run in tests/test_images.py."""

from __future__ import annotations

import re

import pytest

from common import dockerfiles, images
from common.images import ImageError

BUNDLES = sorted(p.parent.name for p in images.BUNDLES_DIR.glob("*/manifest.toml"))
REFINEDET = images.dockerfile_path("refinedet")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_dockerfile_meets_the_contract(bundle):
    problems = dockerfiles.check_dockerfile(bundle)
    assert problems == [], "\n".join(problems)


def test_every_shared_block_is_used_and_every_dockerfile_belongs_to_a_bundle():
    used = {b.name for p in images.BUNDLES_DIR.glob("*/Dockerfile") for b in dockerfiles.blocks(p.read_text(), p)}
    assert set(dockerfiles.shared_steps()) <= used, "a template block no bundle copies"
    for path in images.BUNDLES_DIR.glob("*/Dockerfile"):
        assert (path.parent / "manifest.toml").is_file(), f"{path}: a Dockerfile without a bundle manifest"


def test_a_bundle_folder_without_a_manifest_is_not_a_bundle(tmp_path, monkeypatch):
    (tmp_path / "half-made").mkdir()
    (tmp_path / "half-made" / "model.py").write_text("")
    monkeypatch.setattr(dockerfiles, "BUNDLES_DIR", tmp_path)
    assert dockerfiles.check_all() == {}


def _variant(tmp_path, old: str, new: str, count: int = 1):
    text = REFINEDET.read_text()
    assert old in text, old
    path = tmp_path / "Dockerfile"
    path.write_text(text.replace(old, new, count))
    return path, dockerfiles.check_dockerfile("refinedet", path=path)


def test_a_drifted_shared_block_is_caught_and_sync_repairs_it(tmp_path):
    path, problems = _variant(tmp_path, "pip install --find-links /wheels", "pip install --pre --find-links /wheels")
    assert any("shared block 'pip-wheelhouse' differs" in p and "nox -s dockerfiles" in p for p in problems)
    assert dockerfiles.sync_dockerfile(path) is True
    assert path.read_text() == REFINEDET.read_text()
    assert dockerfiles.check_dockerfile("refinedet", path=path) == []
    assert dockerfiles.sync_dockerfile(path) is False


@pytest.mark.parametrize(
    ("old", "new", "count", "expected"),
    [
        ("USER 1000\nWORKDIR", "USER root\nWORKDIR", 1, "target cpu must end with a non-root USER"),
        ('USER 1000\nENTRYPOINT ["/usr/local/bin/zoo-entrypoint"]\nCMD ["eval", "--backend"',
         'USER 0:0\nENTRYPOINT ["/usr/local/bin/zoo-entrypoint"]\nCMD ["eval", "--backend"', 1,
         "target ascend must end with a non-root USER"),
        (" AS ascend\n", " AS npu\n", 1, "no `FROM ... AS ascend` stage"),
        ("shared: check-pins\n", "shared: pins\n", 2, "unknown shared block 'pins'"),
        ("ARG TORCH_VERSION=2.13.0", "ARG TORCH_VERSION=2.12.0", 1,
         "ARG TORCH_VERSION=2.12.0 but the bundle's manifest/requirements say 2.13.0"),
        ("ARG ASCEND_BASE_IMAGE=ascendai/cann:8.2.rc1-310p", "ARG ASCEND_BASE_IMAGE=ascendai/cann:8.1.rc1-310p", 1,
         "ARG ASCEND_BASE_IMAGE=ascendai/cann:8.1.rc1-310p-ubuntu22.04-py3.11 but"),
        ("ARG UPSTREAM_COMMIT=0e4b24ce", "ARG UPSTREAM_COMMIT=1e4b24ce", 1, "ARG UPSTREAM_COMMIT=1e4b24ce"),
        ("ARG AIS_BENCH_SHA256=\n", "", 1, "no global `ARG AIS_BENCH_SHA256=`"),
        ("ARG TORCH_NPU_VERSION=\n", "ARG TORCH_NPU_VERSION=2.1.0.post3\n", 1,
         "TORCH_NPU_VERSION=2.1.0.post3 does not match TORCH_VERSION=2.13.0"),
        ("ARG CANN_VERSION=8.2.RC1\n", "", 1, "no global `ARG CANN_VERSION=...`"),
        ("COPY bundles/refinedet/requirements.txt", "COPY bundles/pamtri/requirements.txt", 1,
         "refers to bundles/pamtri/"),
        ("ENV ZOO_BUNDLE=refinedet", "ENV ZOO_BUNDLE=pamtri", 2, "must set ENV ZOO_BUNDLE=refinedet (got 'pamtri')"),
        ('ENTRYPOINT ["/usr/local/bin/zoo-entrypoint"]\nCMD ["eval"]', 'CMD ["eval"]', 1,
         "target cpu must say what it runs"),
    ],
    ids=["root-cpu", "root-ascend", "no-ascend", "unknown-block", "torch", "ascend-base", "upstream", "ais-sha",
         "torch-npu", "cann-arg", "other-bundle", "zoo-bundle", "entrypoint"],
)
def test_each_broken_contract_is_named(tmp_path, old, new, count, expected):
    _, problems = _variant(tmp_path, old, new, count)
    assert any(expected in p for p in problems), problems


def test_a_missing_required_block_is_named(tmp_path):
    text = REFINEDET.read_text()
    body = re.search(r"# >>> shared: labels\n.*?# <<< shared: labels\n", text, re.S)[0]
    path = tmp_path / "Dockerfile"
    path.write_text(text.replace(body, "", 1))  # the first copy: the cpu target's
    problems = dockerfiles.check_dockerfile("refinedet", path=path)
    assert any("target cpu lacks the shared block 'labels'" in p for p in problems), problems


def test_unbalanced_markers_are_one_clear_error(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text("FROM x AS cpu\n# >>> shared: labels\nUSER 1000\n")
    assert dockerfiles.check_dockerfile("refinedet", path=path) == [f"{path}:2: block 'labels' is never closed"]
    with pytest.raises(ImageError, match="closes no open block"):
        dockerfiles.blocks("# <<< shared: labels\n", path)


def test_torch_npu_must_carry_torchs_version():
    assert dockerfiles._torch_npu_matches("2.1.0.post3", "2.1.0")
    assert dockerfiles._torch_npu_matches("2.13.0", "2.13.0")
    assert not dockerfiles._torch_npu_matches("2.1.0.post3", "2.1.1")
    assert not dockerfiles._torch_npu_matches("2.10.0", "2.1.0")


def test_a_bundle_without_its_dockerfile_cannot_be_built(monkeypatch, tmp_path):
    (tmp_path / "nodocker").mkdir()
    (tmp_path / "nodocker" / "manifest.toml").write_text('[pinned_env]\nrequirements = "requirements.txt"\n')
    (tmp_path / "nodocker" / "requirements.txt").write_text("torch==2.13.0\n")
    monkeypatch.setattr(images, "BUNDLES_DIR", tmp_path)
    with pytest.raises(ImageError, match=r"nodocker/Dockerfile is missing: every bundle builds .* its own Dockerfile"):
        images.build_image("nodocker")
