"""PAMTRI bundle: the key list and architecture (shared/specs/pamtri.md §1, §7), strict and safe checkpoint loading,
ONNX export, pre-processing vector (§2), VeRi reading errors (§3) and the demo pipeline end to end."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import upstream_keys

from bundles.pamtri import data
from bundles.pamtri.bundle import BUNDLE, FEATURES, GROUND_TRUTH
from bundles.pamtri.model import (
    OUTPUT_NAMES,
    MultiTaskDenseNet121,
    checkpoint_filter_fn,
    load_pamtri_checkpoint,
    pamtri_densenet121,
)
from common.checkpoint import random_state_dict
from common.errors import CheckpointError, InputError
from common.imageio import load_image_bgr
from common.upstream import UpstreamKeys

pytestmark = pytest.mark.timeout(600)

NUM_PARAMS = 9_652_178
SPEC_PIXEL_BGR = (10, 20, 30)
SPEC_PIXEL_NORMALISED = (-1.6041614, -1.6855742, -1.6301525)  # spec §2 test vector, RGB order


@pytest.fixture(scope="module")
def spec() -> UpstreamKeys:
    """The upstream key list shipped with the bundle (bundles/pamtri/upstream_keys.json)."""
    return upstream_keys("pamtri")


@pytest.fixture(scope="module")
def spec_state_dict(spec) -> dict[str, torch.Tensor]:
    """Random tensors built from the spec's key list (not from our model), like the released file."""
    gen = torch.Generator().manual_seed(1)
    out = {}
    for k, shape in spec.shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7, dtype=torch.long)
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(shape, generator=gen)
        else:
            out[k] = torch.randn(shape, generator=gen) * 0.02
    return out


@pytest.fixture(scope="module")
def container_checkpoint(tmp_path_factory, spec_state_dict) -> Path:
    """The released file's container: {'state_dict', 'rank1' (numpy float32 scalar), 'epoch'}."""
    path = tmp_path_factory.mktemp("ckpt") / "model_best.pth.tar"
    torch.save({"state_dict": spec_state_dict, "rank1": np.float32(0.8927), "epoch": 59}, path)
    return path


@pytest.fixture(scope="module")
def model(container_checkpoint) -> MultiTaskDenseNet121:
    sd, _ = load_pamtri_checkpoint(container_checkpoint)
    return pamtri_densenet121(sd)


@pytest.fixture(scope="module")
def veri(tmp_path_factory) -> Path:
    return data.make_synthetic_veri(tmp_path_factory.mktemp("veri") / "VeRi")


def _copy_veri(veri: Path, dst: Path) -> Path:
    shutil.copytree(veri, dst)
    return dst


# -- model -----------------------------------------------------------------------------------------------------
def test_state_dict_matches_the_spec_key_list_in_order(spec):
    sd = MultiTaskDenseNet121().state_dict()
    assert list(sd) == spec.keys and len(sd) == 737
    assert {k: tuple(v.shape) for k, v in sd.items()} == spec.shapes
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in sd.items()} == spec.dtypes
    assert [k for k in sd if k.endswith("num_batches_tracked")] == spec.num_batches_tracked
    assert sum(p.numel() for p in MultiTaskDenseNet121().parameters()) == NUM_PARAMS
    assert tuple(OUTPUT_NAMES) == spec.outputs


def test_outputs_order_shapes_and_the_embedding_definition(model):
    x = torch.from_numpy(BUNDLE.example_inputs(2)["input"])
    with torch.no_grad():
        y_id, y_color, y_type, f_vid = model(x)
        base = model.base(x)
    assert [tuple(t.shape) for t in (y_id, y_color, y_type, f_vid)] == [(2, 575), (2, 10), (2, 9), (2, 1024)]
    assert tuple(base.shape) == (2, 1024, 8, 8)
    assert (base < 0).any()  # norm5 is the last op: no ReLU before pooling
    expected = F.leaky_relu(model.fc_vid(base.mean(dim=(2, 3))), negative_slope=0.01)
    torch.testing.assert_close(f_vid, expected, rtol=1e-5, atol=1e-5)
    assert (f_vid < 0).any() and not torch.allclose(f_vid.norm(dim=1), torch.ones(2))  # leaky, not normalised
    torch.testing.assert_close(y_id, model.classifier_vid(f_vid))


def test_construction_never_downloads(monkeypatch):
    import urllib.request

    def refuse(*a, **k):
        raise AssertionError("network access while building the model")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    pamtri_densenet121()


# -- checkpoint loading ----------------------------------------------------------------------------------------
def test_strict_load_of_the_container_with_numpy_scalar_metadata(container_checkpoint, spec_state_dict, model):
    sd, meta = load_pamtri_checkpoint(container_checkpoint)
    assert meta == {"rank1": pytest.approx(0.8927), "epoch": 59, "legacy_keys_renamed": 0}
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in spec_state_dict.items())


def test_legacy_pickle_naming_numpy_core_scalar_loads(tmp_path, spec_state_dict):
    # Checkpoints pickled under numpy 1.x name the scalar reconstructor `numpy.core.multiarray.scalar`; the legacy
    # (pre-1.6, non-zip) format keeps the pickle as plain bytes, so the global can be renamed in place.
    path = tmp_path / "legacy.pth.tar"
    torch.save({"state_dict": spec_state_dict, "rank1": np.float32(0.5), "epoch": 3}, path,
               _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    assert raw.count(b"numpy._core.multiarray\nscalar") == 1
    path.write_bytes(raw.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    sd, meta = load_pamtri_checkpoint(path)
    assert meta["rank1"] == 0.5 and meta["epoch"] == 3
    pamtri_densenet121(sd)


def test_arbitrary_pickled_object_is_refused(tmp_path, spec_state_dict):
    path = tmp_path / "args.pth.tar"
    torch.save({"state_dict": spec_state_dict, "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match="refused by the safe") as e:
        load_pamtri_checkpoint(path)
    assert str(path) in str(e.value) and "argparse.Namespace" in str(e.value)


def test_missing_and_extra_keys_are_refused_and_listed(spec_state_dict):
    sd = dict(spec_state_dict)
    del sd["base.denseblock3.denselayer7.conv2.weight"]
    sd["fc_extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as e:
        pamtri_densenet121({"state_dict": sd})
    msg = str(e.value)
    assert "1 missing: base.denseblock3.denselayer7.conv2.weight" in msg and "1 unexpected: fc_extra.weight" in msg


def test_wrong_head_size_is_refused_and_named(spec_state_dict):
    sd = dict(spec_state_dict, **{"classifier_vid.weight": torch.zeros(576, 1024)})
    with pytest.raises(CheckpointError, match=r"classifier_vid.weight: checkpoint \(576, 1024\) vs model \(575, "):
        pamtri_densenet121(sd)


def test_wrong_prefix_is_refused_not_silently_dropped(spec_state_dict):
    # upstream's filtered load would keep nothing here and still "work" with random weights
    with pytest.raises(CheckpointError, match="737 missing"):
        pamtri_densenet121({f"backbone.{k}": v for k, v in spec_state_dict.items()})


def test_legacy_dense_layer_names_and_ddp_prefix_are_remapped(spec_state_dict, tmp_path):
    legacy = {}
    for k, v in spec_state_dict.items():
        for old, new in (("norm1", "norm.1"), ("conv1", "conv.1"), ("norm2", "norm.2"), ("conv2", "conv.2")):
            if ".denselayer" in k:
                k = k.replace(f".{old}.", f".{new}.")
        legacy[f"module.{k}"] = v
    assert "module.base.denseblock1.denselayer1.norm.1.weight" in legacy
    before = dict(legacy)
    filtered = checkpoint_filter_fn({"state_dict": legacy})
    assert legacy == before  # pure: the argument is untouched
    assert list(filtered) == list(spec_state_dict)
    path = tmp_path / "legacy_keys.pth.tar"
    torch.save({"state_dict": legacy, "rank1": np.float32(0.1), "epoch": 1}, path)
    sd, meta = load_pamtri_checkpoint(path)
    assert meta["legacy_keys_renamed"] == 58 * (2 * 5 + 2)  # 58 dense layers x (2 BN x 5 keys + 2 convs)
    pamtri_densenet121(sd)


def test_transition_keys_are_not_touched_by_the_legacy_rename():
    sd = {"base.transition1.norm.weight": torch.zeros(1), "base.denseblock1.denselayer10.conv.2.weight": torch.zeros(1)}
    renamed = ["base.transition1.norm.weight", "base.denseblock1.denselayer10.conv2.weight"]
    assert list(checkpoint_filter_fn(sd)) == renamed


def test_only_missing_batchnorm_counters_are_tolerated(spec_state_dict):
    sd = {k: v for k, v in spec_state_dict.items() if not k.endswith("num_batches_tracked")}
    pamtri_densenet121(sd)  # pre-0.4.1 checkpoints lack them; unused in eval (spec 1.5)


def test_bundle_build_model_names_a_bad_checkpoint(tmp_path):
    path = tmp_path / "garbage.pth.tar"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth.tar"):
        BUNDLE.build_model(path)


# -- export ----------------------------------------------------------------------------------------------------
def test_onnx_names_shapes_dynamic_batch_and_parity_with_torch(tmp_path, model):
    import onnx

    from common.backends.onnxruntime import OrtBackend
    from common.backends.torch_backend import TorchBackend
    from common.export import export_onnx

    io = BUNDLE.manifest.model
    path = export_onnx(model, io, tmp_path / "pamtri.onnx")
    graph = onnx.load(str(path)).graph
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [(i.name, dims(i)) for i in graph.input] == [("input", ["batch", 3, 256, 256])]
    assert [o.name for o in graph.output] == ["y_id", "y_color", "y_type", "f_vid"]
    assert [dims(o)[1] for o in graph.output] == [575, 10, 9, 1024]
    feeds = BUNDLE.example_inputs(2)
    ort, ref = OrtBackend(path).run(feeds), TorchBackend(model, io).run(feeds)
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(ort[name], ref[name], rtol=1e-3, atol=1e-4, err_msg=name)
    assert OrtBackend(path).run(BUNDLE.example_inputs(3))["f_vid"].shape == (3, 1024)


# -- pre-processing --------------------------------------------------------------------------------------------
def test_preprocessing_matches_the_spec_vector():
    image = np.empty((37, 91, 3), np.uint8)
    image[:] = SPEC_PIXEL_BGR
    x = data.preprocess(image)
    assert x.shape == (3, 256, 256) and x.dtype == np.float32
    for c, v in enumerate(SPEC_PIXEL_NORMALISED):
        np.testing.assert_allclose(x[c], v, rtol=0, atol=1e-6)


def test_preprocessing_resizes_the_uint8_rgb_image_bilinearly():
    import cv2

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    resized = cv2.resize(image[:, :, ::-1].copy(), (256, 256), interpolation=cv2.INTER_LINEAR)  # uint8 out
    expected = (resized.astype(np.float32) / 255 - data.MEAN_RGB) / data.STD_RGB
    np.testing.assert_allclose(data.preprocess(image), expected.transpose(2, 0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        data.preprocess(image.astype(np.float32))


# -- VeRi layout and errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "cam"), [("0002_c002_00030600_0.jpg", 2), ("0776_c019_00085000_1.jpg", 19)])
def test_camera_id_from_name(name, cam):
    assert data.camera_id(name) == cam


def test_synthetic_veri_has_the_real_layout_and_junk(veri):
    splits = data.read_veri(veri)
    q, g = splits["query"], splits["gallery"]
    assert (len(q), len(g)) == (12, 68)
    assert q.names == sorted(q.names) and all(int(n[:4]) == p for n, p in zip(q.names, q.pids, strict=True))
    rows = (veri / "label_query.csv").read_text().splitlines()
    assert all(len(r.split(",")) == 112 for r in rows)
    junk = [(p, c) for p, c in zip(q.pids, q.camids, strict=True) if ((g.pids == p) & (g.camids == c)).any()]
    assert len(junk) == len(q)  # every query has same-id same-camera gallery images: the exclusion rule matters
    again = data.make_synthetic_veri(veri.parent / "again", seed=0)
    assert (again / "label_test.csv").read_bytes() == (veri / "label_test.csv").read_bytes()
    assert (again / "image_query" / q.names[0]).read_bytes() == (veri / "image_query" / q.names[0]).read_bytes()


def test_csv_with_wrong_column_count_names_file_and_line(veri, tmp_path):
    root = _copy_veri(veri, tmp_path / "v")
    lines = (root / "label_test.csv").read_text().splitlines()
    lines[4] = ",".join(lines[4].split(",")[:-3])
    (root / "label_test.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"label_test.csv:5: expected 112 columns .* found 109"):
        data.read_veri(root)


def test_missing_query_image_is_named(veri, tmp_path):
    root = _copy_veri(veri, tmp_path / "v")
    name = data.read_veri(root)["query"].names[3]
    (root / "image_query" / name).unlink()
    with pytest.raises(InputError, match=rf"image_query/{name}: image listed in label_query.csv is missing"):
        data.read_veri(root)


def test_image_name_without_camera_id_is_named(veri, tmp_path):
    root = _copy_veri(veri, tmp_path / "v")
    lines = (root / "label_query.csv").read_text().splitlines()
    old = lines[0].split(",")[0]
    new = old.replace("_c001_", "_x001_")
    (root / "image_query" / old).rename(root / "image_query" / new)
    lines[0] = lines[0].replace(old, new)
    (root / "label_query.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"label_query.csv:1: image name '{new}' has no camera id"):
        data.read_veri(root)


def test_non_integer_vehicle_id_and_missing_csv_are_named(veri, tmp_path):
    root = _copy_veri(veri, tmp_path / "v")
    lines = (root / "label_query.csv").read_text().splitlines()
    parts = lines[1].split(",")
    parts[1] = "abc"
    lines[1] = ",".join(parts)
    (root / "label_query.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="label_query.csv:2: vehicle id 'abc' is not an integer"):
        data.read_veri(root)
    (root / "label_test.csv").unlink()
    with pytest.raises(InputError, match="label_test.csv: label CSV missing"):
        data.read_label_csv(root / "label_test.csv", root / "image_test")


def test_bad_input_reports_no_result(veri, tmp_path, container_checkpoint):
    """A missing query image stops the run in prepare: the report says INCOMPLETE and carries no metrics."""
    from common.pipeline import EvalOptions, evaluate

    root = _copy_veri(veri, tmp_path / "v")
    (root / "image_query" / data.read_veri(root)["query"].names[0]).unlink()
    run_dir = tmp_path / "run"
    with pytest.raises(InputError, match="is missing"):
        evaluate(EvalOptions(bundle="pamtri", out_dir=run_dir, data_dir=root, weights=container_checkpoint))
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved["verdict"] == "INCOMPLETE" and not saved["metrics"]
    assert not (run_dir / FEATURES["query"]).exists()


# -- score from the run directory ------------------------------------------------------------------------------
def test_score_recomputes_from_files_and_refuses_mismatched_features(veri, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    splits = BUNDLE.prepare(veri, run_dir)
    q, g = splits["query"], splits["gallery"]
    np.save(run_dir / FEATURES["query"], data.true_id_features(q.pids, 1024)[:, ::-1].copy())
    np.save(run_dir / FEATURES["gallery"], data.true_id_features(g.pids, 1024)[:, ::-1].copy())
    m = BUNDLE.score(run_dir)
    assert m["mAP"] == 100.0 and m["num_skipped_queries"] == 1 and m["num_valid_queries"] == 11
    np.save(run_dir / FEATURES["gallery"], np.zeros((len(g) - 1, 1024), np.float32))
    with pytest.raises(InputError, match=r"features_gallery.npy: expected \(68, D\)"):
        BUNDLE.score(run_dir)
    assert (run_dir / GROUND_TRUTH).is_file()


def test_demo_random_weights_stay_finite():
    model = MultiTaskDenseNet121()
    model.load_state_dict(random_state_dict(model, seed=0))
    with torch.no_grad():
        out = model.eval()(torch.from_numpy(BUNDLE.example_inputs(2)["input"]))
    assert all(torch.isfinite(t).all() for t in out)


# -- end to end ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_pipeline_end_to_end_and_verify(tmp_path):
    from common.pipeline import EvalOptions, evaluate
    from common.verify import verify_run_dir

    run_dir = tmp_path / "run"
    report = evaluate(EvalOptions(bundle="pamtri", out_dir=run_dir, demo=True, batch_size=4,
                                  cache_dir=tmp_path / "cache"))
    assert report.verdict == "DEMO-PASS", [c.line() for c in report.checks]
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved["mode"] == "demo" and saved["metrics"]["num_skipped_queries"] == 1
    assert np.load(run_dir / FEATURES["gallery"]).shape == (68, 1024)
    checks, metrics = verify_run_dir(run_dir)
    assert all(c.passed for c in checks) and metrics == saved["metrics"]
    # tampered predictions must be detected: swap in the true-id features of the sanity check
    for f in FEATURES.values():
        shutil.copy(run_dir / "sanity" / f, run_dir / f)
    checks, metrics = verify_run_dir(run_dir)
    assert not checks[0].passed and metrics["mAP"] == 100.0


def test_predict_keeps_row_order_pads_the_last_batch_and_finds_the_embedding_by_name(veri, tmp_path):
    from common.backends.base import Backend

    class Fake(Backend):
        """f_vid = the first 1024 input values of each image; records every batch size it is given."""

        name, input_names = "fake", ("input",)
        sizes: list[int] = []

        def _run(self, feeds):
            x = feeds["input"]
            self.sizes.append(len(x))
            return {"y_id": np.zeros((len(x), 575), np.float32), "f_vid": x.reshape(len(x), -1)[:, :1024].copy()}

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    splits = BUNDLE.prepare(veri, run_dir)
    backend = Fake()
    stats = BUNDLE.predict(splits, {"model": backend}, run_dir, batch_size=5)
    assert set(backend.sizes) == {5} and stats.items == 12 + 68  # 12 = 5 + 5 + 2 padded to 5
    feats = np.load(run_dir / FEATURES["query"])
    q = splits["query"]
    for i in (0, 11):
        expected = data.preprocess(load_image_bgr(q.path(i))).reshape(-1)[:1024]
        np.testing.assert_array_equal(feats[i], expected)
