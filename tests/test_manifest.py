"""The manifest schema: every bundle's manifest validates; malformed ones fail naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import ManifestError
from common.manifest import bundle_manifest, bundle_names, load_manifest

REFINEDET = Path(__file__).resolve().parents[1] / "bundles" / "refinedet" / "manifest.toml"


@pytest.mark.parametrize("name", bundle_names())
def test_every_bundle_manifest_is_valid(name):
    m = bundle_manifest(name)
    assert m.bundle.name == name
    assert len(m.sha256) == 64
    assert m.default_run.metrics, "a bundle must declare what it reproduces"
    for art in m.artifacts.values():
        # a dataset distributed on request (VeRi) has no URL; the note must then say how to obtain it
        assert art.urls or "obtain" in art.note.lower(), f"{name}: artifact {art.name} has no URL and no note"


def test_refinedet_published_numbers():
    m = bundle_manifest("refinedet")
    run = m.default_run
    assert (run.name, run.hardware, run.metrics[0].value, run.metrics[0].tolerance_rel) == (
        "310P3_bs1", "Ascend310P3", 79.60, 0.01)
    assert m.throughput[0].per_batch[16] == pytest.approx(445.783)
    assert m.artifacts["voc2007_test"].md5 == "b6e924de25625d8de591ea690078ad9f"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "manifest.toml"
    p.write_text(text)
    return p


def test_misspelled_key_is_named(tmp_path):
    text = REFINEDET.read_text().replace("[upstream]\nrepo", "[upstream]\nrepos")
    with pytest.raises(ManifestError, match=r"manifest.toml.*upstream\.(repos|repo)"):
        load_manifest(_write(tmp_path, text))


def test_short_commit_is_refused(tmp_path):
    text = REFINEDET.read_text().replace("0e4b24ce07245fcb8c48292326a731729cc5746a", "0e4b24c")
    with pytest.raises(ManifestError, match="upstream.commit"):
        load_manifest(_write(tmp_path, text))


def test_bad_toml_names_the_file(tmp_path):
    with pytest.raises(ManifestError, match="not valid TOML"):
        load_manifest(_write(tmp_path, "[bundle\nname = 1"))


def test_metric_without_tolerance_is_refused(tmp_path):
    text = REFINEDET.read_text().replace('unit = "%", tolerance_rel = 0.01 }]\n\n[[published]]\nname = "310P3_bs16"',
                                         'unit = "%" }]\n\n[[published]]\nname = "310P3_bs16"')
    with pytest.raises(ManifestError, match="tolerance"):
        load_manifest(_write(tmp_path, text))


def test_unknown_run_and_bundle(tmp_path):
    with pytest.raises(ManifestError, match="no published run"):
        bundle_manifest("refinedet").run("nope")
    with pytest.raises(ManifestError, match="no bundle"):
        bundle_manifest("nope")
