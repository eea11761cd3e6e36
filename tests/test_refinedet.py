"""RefineDet bundle: spec test vectors (shared/specs/refinedet.md section 9), strict loading, data errors, export."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import upstream_keys

from bundles.refinedet import data, post
from bundles.refinedet.bundle import BUNDLE
from bundles.refinedet.model import RefineDet, refinedet320
from common.boxes import greedy_nms, pairwise_iou
from common.checkpoint import load_checkpoint, save_random_checkpoint
from common.errors import CheckpointError, InputError
from common.imageio import load_image_bgr
from common.metrics.voc import evaluate as voc_evaluate


@pytest.fixture(scope="module")
def spec_shapes() -> dict[str, list[int]]:
    """The upstream key list shipped with the bundle (bundles/refinedet/upstream_keys.json)."""
    return {k: list(v) for k, v in upstream_keys("refinedet").shapes.items()}


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory, spec_shapes) -> Path:
    """A checkpoint written from the spec's key list (not from our model), like the published file."""
    gen = torch.Generator().manual_seed(1)
    sd = {k: torch.randn(shape, generator=gen) * 0.01 for k, shape in spec_shapes.items()}
    path = tmp_path_factory.mktemp("ckpt") / "RefineDet320_VOC_final.pth"
    torch.save(sd, path)
    return path


# -- model -----------------------------------------------------------------------------------------------------
def test_state_dict_matches_upstream_keys_in_order(spec_shapes):
    sd = RefineDet().state_dict()
    assert list(sd) == list(spec_shapes)
    assert {k: list(v.shape) for k, v in sd.items()} == spec_shapes
    assert sum(v.numel() for v in sd.values()) == 34_440_884


def test_strict_load_of_checkpoint_with_upstream_keys(random_checkpoint):
    model = refinedet320(load_checkpoint(random_checkpoint))
    sd = torch.load(random_checkpoint, weights_only=True)
    assert torch.equal(model.state_dict()["tcb1.2.weight"], sd["tcb1.2.weight"])


def test_ddp_prefixed_checkpoint_loads(random_checkpoint, tmp_path):
    sd = torch.load(random_checkpoint, weights_only=True)
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    refinedet320(load_checkpoint(path))


def test_missing_and_extra_keys_are_listed(random_checkpoint):
    sd = dict(torch.load(random_checkpoint, weights_only=True))
    del sd["odm_conf.3.bias"]
    sd["extras.2.weight"] = torch.zeros(1)
    sd["vgg.0.weight"] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(CheckpointError) as err:
        refinedet320(sd)
    msg = str(err.value)
    assert "odm_conf.3.bias" in msg and "extras.2.weight" in msg and "vgg.0.weight" in msg
    assert "1 missing" in msg and "1 unexpected" in msg and "1 wrong shape" in msg


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_payload_in_pth_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        pickle.dump({"vgg.0.weight": _Payload()}, f)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_forward_shapes_and_softmax():
    model = RefineDet().eval()
    with torch.no_grad():
        arm_loc, arm_conf, odm_loc, odm_conf = model(torch.randn(2, 3, 320, 320))
    assert arm_loc.shape == (2, 6375, 4) and odm_loc.shape == (2, 6375, 4)
    assert arm_conf.shape == (2, 6375, 2) and odm_conf.shape == (2, 6375, 21)
    assert torch.allclose(odm_conf.sum(-1), torch.ones(2, 6375), atol=1e-5)
    assert torch.allclose(arm_conf.sum(-1), torch.ones(2, 6375), atol=1e-5)


# -- priors, decode, NMS (spec sections 2 and 4) ----------------------------------------------------------------
def test_prior_boxes_vectors():
    p = post.prior_boxes()
    assert p.shape == (6375, 4) and p.dtype == np.float32
    expected = {0: (0.0125, 0.0125, 0.1, 0.1), 1: (0.0125, 0.0125, 0.14142136, 0.07071068),
                2: (0.0125, 0.0125, 0.07071068, 0.14142136), 3: (0.0375, 0.0125, 0.1, 0.1),
                4800: (0.025, 0.025, 0.2, 0.2), 6000: (0.05, 0.05, 0.4, 0.4), 6300: (0.1, 0.1, 0.8, 0.8),
                6374: (0.9, 0.9, 0.56568545, 1.0)}
    for i, v in expected.items():
        np.testing.assert_allclose(p[i], v, rtol=0, atol=1e-7, err_msg=f"prior[{i}]")
    np.testing.assert_allclose(p.astype(np.float64).sum(0), [3187.499998659, 3187.499998659, 933.111864328,
                                                             933.111864328], atol=1e-6)
    assert p.max() == 1.0 and int((p == 1.0).sum()) == 50  # level 3's non-square boxes are clipped


def test_decode_zero_offsets_gives_prior_corners():
    out = post.decode(np.zeros((1, 4), np.float32), post.prior_boxes()[:1])
    np.testing.assert_allclose(out[0], (-0.0375, -0.0375, 0.0625, 0.0625), atol=1e-7)


def test_two_stage_decode_example():
    prior = np.array([[0.5, 0.5, 0.2, 0.2]], np.float32)
    refined = post.decode(np.array([[1, -1, 0.5, 0]], np.float32), prior)
    np.testing.assert_allclose(refined[0], (0.409483, 0.38, 0.630517, 0.58), atol=1e-6)
    final = post.refine_and_decode(np.array([[1, -1, 0.5, 0]], np.float32), np.array([[0.5, 0, 0, -1]], np.float32),
                                   prior)
    np.testing.assert_allclose(final[0], (0.420535, 0.398127, 0.641569, 0.561873), atol=1e-6)


def test_nms_threshold_cases():
    keep_both = np.array([[0, 0, 1, 1], [0, 0, 0.44, 1]], np.float32)  # IoU 0.44 <= 0.45 -> kept
    drop_second = np.array([[0, 0, 1, 1], [0, 0, 0.46, 1]], np.float32)  # IoU 0.46 > 0.45 -> suppressed
    assert greedy_nms(keep_both, 0.45).tolist() == [0, 1]
    assert greedy_nms(drop_second, 0.45).tolist() == [0]
    # a chain: 0 suppresses 1, so 1 cannot suppress 2 (a "fast NMS" shortcut would wrongly drop 2)
    chain = np.array([[0, 0, 1, 1], [0.3, 0, 1.3, 1], [0.6, 0, 1.6, 1]], np.float32)
    assert greedy_nms(chain, 0.45).tolist() == [0, 2]


@pytest.mark.parametrize("seed", range(5))
def test_nms_equals_sequential_greedy(seed):
    rng = np.random.default_rng(seed)
    xy = rng.random((400, 2))
    boxes = np.concatenate([xy, xy + rng.random((400, 2)) * 0.4], axis=1).astype(np.float32)
    keep: list[int] = []
    iou = pairwise_iou(boxes, boxes)
    for i in range(len(boxes)):  # the literal greedy definition, as an oracle
        if all(iou[k, i] <= 0.45 for k in keep):
            keep.append(i)
    assert greedy_nms(boxes, 0.45).tolist() == keep


def test_detect_objectness_filter_and_thresholds():
    n = 6375
    priors = post.prior_boxes()
    zeros = np.zeros((n, 4), np.float32)
    arm_conf = np.tile(np.array([[0.995, 0.005]], np.float32), (n, 1))  # objectness 0.005 <= 0.01 everywhere
    odm_conf = np.full((n, 21), 0.5 / 20, np.float32)
    odm_conf[:, 0] = 0.5
    odm_conf[7, 3] = 0.9
    assert post.detect(zeros, arm_conf, zeros, odm_conf, priors).labels.size == 0  # all zeroed by ARM
    arm_conf[7] = (0.5, 0.5)
    det = post.detect(zeros, arm_conf, zeros, odm_conf, priors)
    # anchor 7 alone passes: class 3 at 0.9 and 19 classes at 0.025 (> 0.01), background never emitted
    assert sorted(set(det.labels.tolist())) == list(range(1, 21))
    assert det.scores[det.labels == 3].tolist() == pytest.approx([0.9])
    np.testing.assert_allclose(det.boxes[0], post.decode(zeros[:1], priors[7:8])[0], atol=1e-6)


# -- data ------------------------------------------------------------------------------------------------------
def test_preprocess_constant_image_vector():
    image = np.empty((50, 70, 3), np.uint8)
    image[:] = (10, 20, 30)  # BGR
    x = data.preprocess(image)
    assert x.shape == (3, 320, 320) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0, 0], [-93, -97, -94])  # R-123, G-117, B-104


def upstream_det_file_values(scores: np.ndarray, boxes_px: np.ndarray) -> tuple[list[float], list[list[float]]]:
    """Oracle: what upstream's evaluator reads back from its det files, literally (spec 5.2): format the float32
    score with %.3f, add 1 in float64 to the float32 pixel value, format with %.1f, parse with float()."""
    s = [float(f"{x:.3f}") for x in scores.astype(np.float64).tolist()]
    b = [[float(f"{v + 1.0:.1f}") for v in row] for row in boxes_px.astype(np.float64).tolist()]
    return s, b


def test_det_file_rounding_vector():
    s, b = post.round_like_detection_files(np.array([0.12349], np.float32),
                                           np.array([[10.0, 40.0, 50.0, 150.0]], np.float32))
    assert s.tolist() == [0.123] and b.tolist() == [[11.0, 41.0, 51.0, 151.0]]


def test_det_file_rounding_equals_format_and_parse():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.random(20000), np.arange(0, 1.0005, 0.0005)]).astype(np.float32)  # ties too
    boxes = np.concatenate([
        rng.normal(0, 300, (20000, 4)),  # negative and positive pixel values
        np.round(rng.uniform(-5, 500, (1000, 4)) * 20) / 20 - 1,  # x.x5 near-ties after the +1
        rng.uniform(-1e13, 1e13, (50, 4)),  # huge values from diverging random weights
        np.array([[np.inf, -np.inf, np.nan, 0.0], [1e-9, -1e-9, 0.049999, 0.95]]),
    ]).astype(np.float32)
    scores = np.resize(scores, len(boxes))
    got_s, got_b = post.round_like_detection_files(scores, boxes)
    want_s, want_b = upstream_det_file_values(scores, boxes)
    np.testing.assert_array_equal(got_s, np.array(want_s))
    np.testing.assert_array_equal(got_b, np.array(want_b))  # NaN == NaN in assert_array_equal


@pytest.fixture()
def voc(tmp_path) -> Path:
    data.make_synthetic_voc(tmp_path, n_images=3, seed=5)
    return tmp_path


def test_synthetic_voc_layout_and_determinism(voc, tmp_path_factory):
    v = data.find_voc2007(voc)
    ids = data.read_image_ids(v)
    assert len(ids) == 3 and all((v / "JPEGImages" / f"{i}.jpg").is_file() for i in ids)
    objs = [data.parse_annotation(v / "Annotations" / f"{i}.xml") for i in ids]
    assert all(len(o) >= 1 for o in objs)
    other = tmp_path_factory.mktemp("again")
    data.make_synthetic_voc(other, n_images=3, seed=5)
    split = "ImageSets/Main/test.txt"
    assert (data.find_voc2007(other) / split).read_text() == (v / split).read_text()


def _first(voc: Path) -> tuple[Path, str]:
    v = data.find_voc2007(voc)
    return v, data.read_image_ids(v)[0]


def test_malformed_xml_names_the_file(voc, tmp_path):
    v, image_id = _first(voc)
    xml = v / "Annotations" / f"{image_id}.xml"
    xml.write_text("<annotation><object><name>dog</name>")
    with pytest.raises(InputError, match=str(xml)):
        BUNDLE.prepare(voc, tmp_path)
    assert not (tmp_path / "ground_truth.json").exists()


def test_missing_bndbox_coordinate_names_the_file(voc, tmp_path):
    v, image_id = _first(voc)
    xml = v / "Annotations" / f"{image_id}.xml"
    xml.write_text(xml.read_text().replace("<xmin>", "<xminx>").replace("</xmin>", "</xminx>"))
    with pytest.raises(InputError, match="bndbox"):
        BUNDLE.prepare(voc, tmp_path)


def test_missing_jpeg_names_the_file(voc, tmp_path):
    v, image_id = _first(voc)
    (v / "JPEGImages" / f"{image_id}.jpg").unlink()
    with pytest.raises(InputError, match=f"{image_id}.jpg"):
        BUNDLE.prepare(voc, tmp_path)


def test_corrupt_jpeg_names_the_file(voc):
    v, image_id = _first(voc)
    path = v / "JPEGImages" / f"{image_id}.jpg"
    path.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(InputError, match=f"{image_id}.jpg.*cannot decode"):
        load_image_bgr(path)


def test_missing_test_txt_names_the_file(voc):
    v, _ = _first(voc)
    (v / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(InputError, match="test.txt"):
        data.find_voc2007(voc)


def test_detection_file_with_unknown_image_id_is_an_error(tmp_path):
    (tmp_path / "det_test_dog.txt").write_text("999999 0.5 1 1 5 5\n")
    with pytest.raises(InputError, match="det_test_dog.txt"):
        data.read_detection_files(tmp_path, ["000001"])


# -- end to end ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_pipeline_end_to_end_and_verify(tmp_path):
    from common.pipeline import EvalOptions, evaluate
    from common.verify import verify_run_dir

    run_dir = tmp_path / "run"
    report = evaluate(EvalOptions(bundle="refinedet", out_dir=run_dir, demo=True, batch_size=2, limit=3,
                                  cache_dir=tmp_path / "cache"))
    assert report.verdict == "DEMO-PASS", [c.line() for c in report.checks]
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved["mode"] == "demo" and "DEMO" in (run_dir / "report.md").read_text()
    assert len(saved["exported_models"]["model"]) == 64 and len(saved["artifacts"]["weights"]["sha256"]) == 64
    assert (run_dir / "results" / "det_test_dog.txt").exists()
    checks, metrics = verify_run_dir(run_dir)
    assert all(c.passed for c in checks) and metrics == saved["metrics"]
    # the exported upstream-format det files score exactly like the raw predictions they were written from
    image_ids, objects = data.read_ground_truth(run_dir / "ground_truth.json")
    from_files = voc_evaluate(data.read_detection_files(run_dir / "results", image_ids),
                              data.ground_truth_by_class(objects))
    assert 100.0 * from_files.mean_ap == saved["metrics"]["mAP"]
    # tampering with the predictions must be detected by verify: the ground truth as predictions
    rows = [(i, o.label, o.box) for i, objs in enumerate(objects) for o in objs]
    np.savez(run_dir / "detections.npz", image_index=np.array([r[0] for r in rows], np.int32),
             labels=np.array([r[1] for r in rows], np.int8), scores=np.ones(len(rows), np.float32),
             boxes=np.array([r[2] for r in rows], np.float32).reshape(-1, 4))
    exported = (run_dir / "results" / "det_test_dog.txt").read_text()
    checks, metrics = verify_run_dir(run_dir)
    assert not checks[0].passed and metrics["mAP"] > saved["metrics"]["mAP"]
    assert (run_dir / "results" / "det_test_dog.txt").read_text() == exported  # scoring writes nothing


def test_real_mode_verdict_fails_on_mismatch(tmp_path):
    """A real run whose mAP is off the published number gets FAIL and exit code 1 (no demo shortcut)."""
    from common.report import RunReport
    from common.verify import check_published

    run = BUNDLE.manifest.default_run
    report = RunReport(bundle="refinedet", mode="real", published_run=run.name)
    report.checks = check_published({"mAP": 78.0}, run)  # 79.60 +- 0.796
    assert report.decide() == "FAIL" and report.exit_code == 1
    report.checks = check_published({"mAP": 79.0}, run)
    assert report.decide() == "PASS" and report.exit_code == 0
    report.checks = check_published({}, run)
    assert report.decide() == "FAIL"


def test_random_checkpoint_has_real_keys(tmp_path, spec_shapes):
    path = save_random_checkpoint(RefineDet(), tmp_path / "r.pth", seed=3)
    sd = load_checkpoint(path)
    assert list(sd) == list(spec_shapes)
    assert cv2 is not None


def test_onnx_export_names_shapes_dynamic_batch_and_parity(tmp_path):
    import onnx

    from common.backends.onnxruntime import OrtBackend
    from common.backends.torch_backend import TorchBackend
    from common.export import export_onnx

    model = RefineDet().eval()
    io = BUNDLE.manifest.model
    path = export_onnx(model, io, tmp_path / "refinedet.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["image"]
    assert [o.name for o in graph.output] == ["arm_loc", "arm_conf", "odm_loc", "odm_conf"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    feeds = {"image": np.random.default_rng(0).normal(0, 50, (3, 3, 320, 320)).astype(np.float32)}
    ort_out = OrtBackend(path).run(feeds)
    ref = TorchBackend(model, io).run(feeds)
    for name, shape in (("arm_loc", 4), ("arm_conf", 2), ("odm_loc", 4), ("odm_conf", 21)):
        assert ort_out[name].shape == (3, 6375, shape)
        np.testing.assert_allclose(ort_out[name], ref[name], rtol=1e-3, atol=1e-3 * np.abs(ref[name]).max())
