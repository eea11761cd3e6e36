"""Every bundle ships its upstream state_dict (bundles/<b>/upstream_keys.json): the model matches it key for key,
and a strict load of a checkpoint that lacks one upstream key fails naming that key and the file."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import tomllib
import torch

from common.bundle import load_bundle
from common.errors import CheckpointError, InputError
from common.upstream import BUNDLES_DIR, UPSTREAM_KEYS_FILE, UpstreamKeys, bundle_upstream_keys, read_upstream_keys

pytestmark = pytest.mark.timeout(600)

BUNDLES = sorted(p.parent.name for p in BUNDLES_DIR.glob("*/manifest.toml"))
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def _checkpoint(keys: UpstreamKeys, drop: str | None = None) -> dict[str, torch.Tensor]:
    """A state_dict built from the key list alone (not from our model), optionally without `drop`."""
    return {k: torch.zeros(shape, dtype=DTYPES[keys.dtypes[k]]) for k, shape in keys.shapes.items() if k != drop}


@pytest.mark.parametrize("bundle", BUNDLES)
def test_key_list_ships_with_the_bundle_and_names_the_manifest_upstream(bundle):
    keys = bundle_upstream_keys(bundle)
    manifest = tomllib.loads((BUNDLES_DIR / bundle / "manifest.toml").read_text())
    assert (keys.repo, keys.commit) == (manifest["upstream"]["repo"], manifest["upstream"]["commit"])
    assert keys.path == BUNDLES_DIR / bundle / UPSTREAM_KEYS_FILE and keys.built_with


@pytest.mark.parametrize("bundle", BUNDLES)
def test_model_state_dict_is_the_upstream_one(bundle):
    keys = bundle_upstream_keys(bundle)
    sd = load_bundle(bundle).build_model(None).state_dict()
    assert list(sd) == keys.keys  # same keys, upstream registration order
    assert {k: tuple(v.shape) for k, v in sd.items()} == keys.shapes
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in sd.items()} == keys.dtypes


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_strict_load_names_the_upstream_key_a_checkpoint_lacks(bundle, tmp_path):
    keys = bundle_upstream_keys(bundle)
    # BatchNorm counters are optional by design (pre-0.4.1 checkpoints lack them); any other key is required
    required = [k for k in keys.keys if not k.endswith("num_batches_tracked")]
    drop = random.Random(bundle).choice(required)
    path = tmp_path / "lacks-one-key.pth"
    torch.save(_checkpoint(keys, drop), path)
    with pytest.raises(CheckpointError) as e:
        load_bundle(bundle).build_model(path)
    msg = str(e.value)
    assert f"1 missing: {drop} {keys.shapes[drop]}" in msg, msg
    assert str(path) in msg and "unexpected" not in msg and "wrong shape" not in msg
    # the list the loader checked against (a training bundle may load the inference bundle's model): same commit
    assert "upstream keys: " in msg and f"@{keys.commit[:12]} (bundles/" in msg


def test_reader_names_the_file_and_the_problem(tmp_path):
    good = json.loads((BUNDLES_DIR / "refinedet" / UPSTREAM_KEYS_FILE).read_text())
    cases = {
        "missing.json": None,
        "not-json.json": "{",
        "short-commit.json": {**good, "upstream": {**good["upstream"], "commit": "0e4b24c"}},
        "twice.json": {**good, "keys": [good["keys"][0], good["keys"][0]], "num_keys": 2},
        "bad-shape.json": {**good, "keys": [["vgg.0.weight", [64, -3]]], "num_keys": 1},
        "bad-dtype.json": {**good, "keys": [["vgg.0.weight", [64], "float16"]], "num_keys": 1},
        "count.json": {**good, "num_keys": 97},
    }
    problems = {
        "missing.json": "file not found",
        "not-json.json": "not readable JSON",
        "short-commit.json": "not a full 40-hex commit",
        "twice.json": "listed twice",
        "bad-shape.json": "is not [name, [positive dims]]",
        "bad-dtype.json": "is not [name, [positive dims]]",
        "count.json": "num_keys is 97 but 98 keys are listed",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(InputError) as e:
            read_upstream_keys(path)
        assert e.value.path == path and "upstream key list: " in str(e.value)
        assert problems[name] in str(e.value), name


def test_key_lists_are_package_data():
    """The strict loaders read the lists at run time, so an installed zoo (the images: `pip install /src`) must
    carry them."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert f"*/{UPSTREAM_KEYS_FILE}" in pyproject["tool"]["setuptools"]["package-data"]["bundles"]
