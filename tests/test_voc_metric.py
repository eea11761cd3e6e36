"""VOC07 11-point AP with the ssd.pytorch-lineage semantics (shared/specs/refinedet.md §5.4–5.5).

Hand-computed cases first (the expected AP is worked out in a comment next to each), then equality with an
independent oracle: a plain per-detection loop transcribing §5.4 literally, used only here as a reference.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from common.metrics.voc import (
    VOC07_THRESHOLDS,
    ClassDetections,
    ClassGroundTruth,
    benchmark,
    evaluate,
    evaluate_class,
    match_detections,
    voc07_ap,
)

pytestmark = pytest.mark.timeout(120)

EPS = 1e-12


def dets(rows: list[tuple[int, float, tuple[float, float, float, float]]]) -> ClassDetections:
    """Detections from (image, score, box) rows, in the given (file) order."""
    if not rows:
        return ClassDetections.empty()
    return ClassDetections(
        np.array([r[0] for r in rows], np.int64),
        np.array([r[1] for r in rows], np.float64),
        np.array([r[2] for r in rows], np.float64).reshape(-1, 4),
    )


def gts(per_image: list[list[tuple[tuple[float, float, float, float], bool]]]) -> ClassGroundTruth:
    """Ground truth from per-image lists of (box, difficult)."""
    return ClassGroundTruth(
        [np.array([b for b, _ in im], np.float64).reshape(-1, 4) for im in per_image],
        [np.array([d for _, d in im], bool) for im in per_image],
    )


# ----------------------------------------------------------------------------------------------------------
# hand-computed cases


def test_thresholds_are_the_eleven_float64_values_of_the_spec():
    assert VOC07_THRESHOLDS.dtype == np.float64
    assert VOC07_THRESHOLDS.tolist() == [
        0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5, 0.6000000000000001, 0.7000000000000001, 0.8, 0.9, 1.0,
    ]  # fmt: skip


def test_voc07_ap_recall_exactly_point_three_misses_the_0_3_threshold():
    # rec = 3/10 = 0.3 < 0.30000000000000004, so only t = 0, 0.1, 0.2 are reached with p = 1: AP = 3/11.
    rec = np.array([1, 2, 3]) / 10.0
    assert voc07_ap(rec, np.ones(3)) == pytest.approx(3 / 11, abs=EPS)


def test_voc07_ap_two_points():
    # rec (0.5, 1.0), prec (1.0, 0.5): t = 0..0.5 (6 thresholds) -> 1; t = 0.6..1.0 (5) -> 0.5. AP = 8.5/11.
    assert voc07_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5])) == pytest.approx(8.5 / 11, abs=EPS)
    assert voc07_ap(np.zeros(0), np.zeros(0)) == 0.0


def test_perfect_detector_has_ap_one():
    # 3 GT over 2 images, 3 exact detections: tp = 1,1,1; rec = 1/3, 2/3, 1; prec = 1 everywhere -> AP 1.
    gt = gts([[((10, 10, 50, 50), False)], [((0, 0, 20, 30), False), ((40, 40, 90, 80), False)]])
    d = dets([(0, 0.9, (10, 10, 50, 50)), (1, 0.8, (0, 0, 20, 30)), (1, 0.7, (40, 40, 90, 80))])
    res = evaluate_class(d, gt)
    assert res.ap == pytest.approx(1.0, abs=EPS)
    assert res.npos == 3
    np.testing.assert_allclose(res.recall, [1 / 3, 2 / 3, 1.0])
    np.testing.assert_array_equal(res.precision, [1.0, 1.0, 1.0])


def test_tied_scores_keep_file_order_stable_sort():
    # One GT. Two detections with the same score 0.5: a miss and a hit.
    # File order (miss, hit): tp = 0,1; rec = 0, 1; prec = 0, 0.5 -> every t reaches index 1 -> AP = 0.5.
    # File order (hit, miss): tp = 1,0; rec = 1, 1; prec = 1, 0.5 -> AP = 1.
    gt = gts([[((0, 0, 10, 10), False)]])
    miss, hit = (0, 0.5, (50, 50, 60, 60)), (0, 0.5, (0, 0, 10, 10))
    tp, fp = match_detections(dets([miss, hit]), gt)
    np.testing.assert_array_equal(tp, [0, 1])
    np.testing.assert_array_equal(fp, [1, 0])
    assert evaluate_class(dets([miss, hit]), gt).ap == pytest.approx(0.5, abs=EPS)
    assert evaluate_class(dets([hit, miss]), gt).ap == pytest.approx(1.0, abs=EPS)
    # A higher score still goes first whatever the file order.
    assert evaluate_class(dets([miss, (0, 0.6, (0, 0, 10, 10))]), gt).ap == pytest.approx(1.0, abs=EPS)


def test_detection_on_difficult_gt_is_ignored_not_fp():
    # GT: A (non-difficult), B (difficult). Sorted: on B (0.9, ignored), on A (0.8, TP), nowhere (0.7, FP).
    # tp = 0,1,0; fp = 0,0,1; npos = 1; rec = 0,1,1; prec = 0,1,0.5 -> every t: max prec = 1 -> AP = 1.
    # (Counting the difficult hit as FP would give prec 0, 0.5, 0.33 and AP 0.5.)
    gt = gts([[((0, 0, 10, 10), False), ((100, 100, 120, 120), True)]])
    d = dets([(0, 0.9, (100, 100, 120, 120)), (0, 0.8, (0, 0, 10, 10)), (0, 0.7, (200, 200, 210, 210))])
    tp, fp = match_detections(d, gt)
    np.testing.assert_array_equal(tp, [0, 1, 0])
    np.testing.assert_array_equal(fp, [0, 0, 1])
    res = evaluate_class(d, gt)
    assert res.npos == 1
    assert res.ap == pytest.approx(1.0, abs=EPS)
    np.testing.assert_array_equal(res.precision, [0.0, 1.0, 0.5])


def test_first_argmax_decides_between_identical_difficult_and_normal_gt():
    # Two identical GT boxes, one difficult. The detection's IoU is 1 with both; jmax = first index.
    # Difficult first -> ignored (tp = fp = 0); normal first -> TP.
    box = (0, 0, 10, 10)
    d = dets([(0, 0.9, box)])
    tp, fp = match_detections(d, gts([[(box, True), (box, False)]]))
    assert (tp[0], fp[0]) == (0, 0)
    tp, fp = match_detections(d, gts([[(box, False), (box, True)]]))
    assert (tp[0], fp[0]) == (1, 0)


def test_duplicate_on_matched_gt_is_fp_without_fallback():
    # GT A = (0,0,10,10), B = (0,0,10,8). Both detections are (0,0,10,10): IoU 1 with A, 0.8 with B.
    # First takes A (TP); the second's jmax is A again -> FP, B is NOT tried. npos = 2.
    # tp = 1,0; rec = 0.5, 0.5; prec = 1, 0.5 -> t = 0..0.5 (6 thresholds) p = 1, t >= 0.6 none -> AP = 6/11.
    gt = gts([[((0, 0, 10, 10), False), ((0, 0, 10, 8), False)]])
    d = dets([(0, 0.9, (0, 0, 10, 10)), (0, 0.8, (0, 0, 10, 10))])
    tp, fp = match_detections(d, gt)
    np.testing.assert_array_equal(tp, [1, 0])
    np.testing.assert_array_equal(fp, [0, 1])
    assert evaluate_class(d, gt).ap == pytest.approx(6 / 11, abs=EPS)


def test_detection_in_image_without_gt_is_fp():
    # Image 1 has no GT of the class: its detection is FP. tp = 1,0; prec = 1, 0.5; rec = 1, 1 -> AP = 1.
    gt = gts([[((0, 0, 10, 10), False)], []])
    d = dets([(0, 0.9, (0, 0, 10, 10)), (1, 0.8, (0, 0, 10, 10))])
    tp, fp = match_detections(d, gt)
    np.testing.assert_array_equal(fp, [0, 1])


def test_strict_iou_threshold_without_plus_one():
    # GT (0,0,4,4), area 16. Exact binary fractions:
    # det (0,0,4,2):      inter 8,    union 16 + 8 - 8 = 16       -> IoU 0.5 exactly -> NOT > 0.5 -> FP.
    #                     (with the devkit's +1 areas it would be 15/25 = 0.6, a TP: the +1 must not be used)
    # det (0,0,4,2.0625): inter 8.25, union 16 + 8.25 - 8.25 = 16 -> IoU 0.515625    -> TP.
    gt = gts([[((0, 0, 4, 4), False)]])
    tp, fp = match_detections(dets([(0, 0.9, (0, 0, 4, 2))]), gt)
    assert (tp[0], fp[0]) == (0, 1)
    tp, fp = match_detections(dets([(0, 0.9, (0, 0, 4, 2.0625))]), gt)
    assert (tp[0], fp[0]) == (1, 0)
    # A different threshold is honoured strictly too: 0.515625 is not > 0.515625.
    tp, fp = match_detections(dets([(0, 0.9, (0, 0, 4, 2.0625))]), gt, iou_threshold=0.515625)
    assert (tp[0], fp[0]) == (0, 1)


def test_class_without_detections_scores_zero_and_counts_in_the_mean():
    # Class "a": perfect (AP 1). Class "b": 1 GT, no detections (AP 0, documented; upstream gives -1).
    # mAP = (1 + 0) / 2 = 0.5.
    g = gts([[((0, 0, 10, 10), False)]])
    res = evaluate({"a": dets([(0, 0.9, (0, 0, 10, 10))])}, {"a": g, "b": g})
    assert res.ap == {"a": pytest.approx(1.0, abs=EPS), "b": 0.0}
    assert res.npos == {"a": 1, "b": 1}
    assert res.mean_ap == pytest.approx(0.5, abs=EPS)
    empty = evaluate_class(ClassDetections.empty(), g)
    assert (empty.ap, empty.npos, empty.recall.size) == (0.0, 1, 0)


def test_class_without_ground_truth_gives_zero_ap_nan_recall_no_warning():
    # Only a difficult GT: npos = 0. The hit on it is ignored, the other detection is FP; no TP is possible.
    # recall = 0/0 = NaN everywhere (as upstream), no threshold reached -> AP 0. No RuntimeWarning.
    g = gts([[((0, 0, 10, 10), True)], []])
    d = dets([(0, 0.9, (0, 0, 10, 10)), (1, 0.8, (5, 5, 9, 9))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = evaluate_class(d, g)
        res_none = evaluate_class(dets([(1, 0.5, (0, 0, 1, 1))]), gts([[], []]))
    assert res.npos == 0 and res.ap == 0.0
    assert np.isnan(res.recall).all()
    np.testing.assert_array_equal(res.precision, [0.0, 0.0])
    assert res_none.ap == 0.0 and res_none.npos == 0


def test_bad_input_names_the_class():
    g = gts([[((0, 0, 10, 10), False)]])
    with pytest.raises(ValueError, match=r"class 'a'.*image_index out of range"):
        evaluate({"a": dets([(3, 0.9, (0, 0, 10, 10))])}, {"a": g})
    with pytest.raises(ValueError, match=r"ground truth entries: \['zebra'\]"):
        evaluate({"zebra": dets([])}, {"a": g})
    bad = ClassGroundTruth([np.zeros((2, 4))], [np.zeros(1, bool)])
    with pytest.raises(ValueError, match=r"class 'a'.*image 0: 2 GT boxes but 1 difficult"):
        evaluate({}, {"a": bad})
    with pytest.raises(ValueError, match="boxes"):
        evaluate_class(ClassDetections(np.zeros(2, np.int64), np.zeros(2), np.zeros((2, 5))), g)


# ----------------------------------------------------------------------------------------------------------
# independent oracle: §5.4–5.5 transcribed literally, one detection at a time


def oracle(d: ClassDetections, g: ClassGroundTruth, thr: float = 0.5) -> tuple[float, np.ndarray, np.ndarray]:
    npos = sum(int(np.sum(~diff)) for diff in g.difficult)
    order = np.argsort(-d.scores, kind="stable")  # §5.4 recommendation (ours); upstream: default quicksort
    matched = [np.zeros(len(b), bool) for b in g.boxes]
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for rank, i in enumerate(order):
        image = int(d.image_index[i])
        bb = d.boxes[i]
        gt_boxes = g.boxes[image]
        ovmax = -np.inf
        jmax = -1
        if len(gt_boxes) > 0:
            iw = np.maximum(np.minimum(gt_boxes[:, 2], bb[2]) - np.maximum(gt_boxes[:, 0], bb[0]), 0.0)
            ih = np.maximum(np.minimum(gt_boxes[:, 3], bb[3]) - np.maximum(gt_boxes[:, 1], bb[1]), 0.0)
            inter = iw * ih
            area_det = (bb[2] - bb[0]) * (bb[3] - bb[1])
            area_gt = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
            iou = inter / (area_det + area_gt - inter)
            ovmax = np.max(iou)
            jmax = int(np.argmax(iou))
        if ovmax > thr:
            if g.difficult[image][jmax]:
                continue
            if not matched[image][jmax]:
                tp[rank] = 1.0
                matched[image][jmax] = True
            else:
                fp[rank] = 1.0
        else:
            fp[rank] = 1.0
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    rec = ctp / npos
    prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    ap = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        ap += (np.max(prec[rec >= t]) if np.sum(rec >= t) > 0 else 0.0) / 11.0
    return ap, tp, fp


def random_case(seed: int) -> tuple[ClassDetections, ClassGroundTruth]:
    """Small integer-grid boxes (exact IoU ties), 1-decimal scores (many score ties), 25 % difficult GT."""
    rng = np.random.default_rng(seed)
    n_images = 25
    boxes, difficult = [], []
    for _ in range(n_images):
        k = int(rng.integers(0, 5))
        xy = rng.integers(0, 20, (k, 2))
        wh = rng.integers(2, 12, (k, 2))
        boxes.append(np.concatenate([xy, xy + wh], axis=1).astype(np.float64))
        difficult.append(rng.random(k) < 0.25)
    g = ClassGroundTruth(boxes, difficult)
    rows = []
    for image in range(n_images):
        for _ in range(int(rng.integers(0, 8))):
            if len(boxes[image]) and rng.random() < 0.6:  # near a GT, sometimes exact (duplicates)
                b = boxes[image][rng.integers(len(boxes[image]))] + rng.integers(-2, 3, 4) * (
                    rng.random() < 0.7
                )
            else:
                xy = rng.integers(0, 20, 2)
                b = np.concatenate([xy, xy + rng.integers(2, 12, 2)]).astype(np.float64)
            rows.append((image, float(np.round(rng.random(), 1)), tuple(b)))
    perm = rng.permutation(len(rows))
    return dets([rows[i] for i in perm]), g


@pytest.mark.parametrize("seed", range(8))
def test_matches_literal_oracle(seed: int):
    d, g = random_case(seed)
    assert d.scores.size > 20
    assert len(np.unique(d.scores)) < d.scores.size  # the case really has ties
    assert any(diff.any() for diff in g.difficult)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap, tp_ref, fp_ref = oracle(d, g)
    tp, fp = match_detections(d, g)
    np.testing.assert_array_equal(tp, tp_ref)
    np.testing.assert_array_equal(fp, fp_ref)
    assert fp.sum() > 0 and tp.sum() > 0 and (tp + fp == 0).any()  # all three outcomes occur
    assert abs(evaluate_class(d, g).ap - ap) <= EPS


@pytest.mark.parametrize("thr", [0.3, 0.7])
def test_matches_oracle_at_other_thresholds(thr: float):
    d, g = random_case(100)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap, _, _ = oracle(d, g, thr)
    assert abs(evaluate_class(d, g, thr).ap - ap) <= EPS


def test_blocked_iou_equals_unblocked(monkeypatch: pytest.MonkeyPatch):
    # The IoU is computed in row blocks; a tiny block size must not change anything.
    import common.metrics.voc as voc

    d, g = random_case(7)
    ref = match_detections(d, g)
    monkeypatch.setattr(voc, "_BLOCK_ELEMENTS", 3)
    got = match_detections(d, g)
    np.testing.assert_array_equal(ref[0], got[0])
    np.testing.assert_array_equal(ref[1], got[1])


def test_benchmark_small_and_full_size():
    small = benchmark(n_images=50, dets_per_image=20, n_classes=3, repeats=1)
    assert small["n_detections"] == 1000
    assert 0.0 < small["mean_ap"] < 1.0
    # speed (the 1 s target) is printed by `zoo bench refinedet`, never asserted in a test
