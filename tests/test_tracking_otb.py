"""OTB success AUC / precision@20 (spec siamrpn.md section 13), cross-checked against got10k (PyPI) where its
definitions coincide with pysot's (positive-size gt with positive centres)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import import_oracle

from common.errors import InputError
from common.tracking.otb import box_iou, centre_error, evaluate_otb, otb_init_box

pytestmark = pytest.mark.timeout(60)


def _random(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = np.stack([rng.uniform(10, 300, n), rng.uniform(10, 200, n), rng.uniform(10, 80, n),
                   rng.uniform(10, 80, n)], 1)
    pred = gt + rng.normal(0, 12, gt.shape)
    pred[:, 2:] = np.abs(pred[:, 2:]) + 1
    return pred, gt


def test_hand_cases():
    assert box_iou(np.array([[0, 0, 10, 10.0]]), np.array([[5, 0, 10, 10.0]]))[0] == pytest.approx(50 / 150)
    assert box_iou(np.array([[0, 0, 10, 10.0]]), np.array([[0, 0, 0, 10.0]]))[0] == -1.0  # empty gt: never a success
    assert centre_error(np.array([[0, 0, 10, 10.0]]), np.array([[3, 4, 10, 10.0]]))[0] == pytest.approx(5.0)
    assert centre_error(np.array([[50, 50, 10, 10.0]]), np.array([[-20, 4, 10, 10.0]]))[0] == -1.0
    np.testing.assert_allclose(otb_init_box(np.array([10, 20, 30, 40.0])), [10.5, 20.5, 30, 40])
    # Perfect tracking: every IoU 1 > t except t = 1.0 -> AUC 20/21.
    g = np.array([[10, 10, 20, 20.0]] * 5)
    res = evaluate_otb({"a": g}, {"a": g})
    assert res["success"] == pytest.approx(20 / 21) and res["precision"] == 1.0


def test_missing_video_and_short_result_are_errors():
    g = np.array([[10, 10, 20, 20.0]] * 5)
    with pytest.raises(InputError, match="no OTB result for b"):
        evaluate_otb({"a": g}, {"a": g, "b": g})
    with pytest.raises(InputError, match="a: 3 result boxes for 5"):
        evaluate_otb({"a": g[:3]}, {"a": g})


def test_equals_got10k():
    metrics = import_oracle("got10k.utils.metrics")
    results, gts, aucs, precs = {}, {}, [], []
    for s in range(4):
        pred, gt = _random(s)
        results[f"v{s}"], gts[f"v{s}"] = pred, gt
        ious = metrics.rect_iou(pred, gt)
        errs = metrics.center_error(pred, gt)
        np.testing.assert_allclose(box_iou(pred, gt), ious, atol=1e-12)
        np.testing.assert_allclose(centre_error(pred, gt), errs, atol=1e-9)
        # got10k's curves: success = mean(iou > t) over linspace(0, 1, 21); precision = mean(err <= t), t = 0..50
        aucs.append(np.mean([(ious > t).mean() for t in np.linspace(0, 1, 21)]))
        precs.append((errs <= 20).mean())
    res = evaluate_otb(results, gts)
    assert res["success"] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert res["precision"] == pytest.approx(np.mean(precs), abs=1e-12)
