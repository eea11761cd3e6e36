"""OTB success AUC / precision@20 (spec siamrpn.md section 13), cross-checked against got10k (PyPI) where its
definitions coincide with pysot's (positive-size gt with positive centres), per sequence and on sequences read
from a synthetic dataset in the official layout; the success / precision plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import import_oracle

from common.errors import InputError
from common.tracking.otb import (
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
    box_iou,
    centre_error,
    evaluate_otb,
    evaluate_otb_per_sequence,
    otb_curves,
    otb_init_box,
    plot_otb,
)

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


def _tracked(seqs, seed: int = 0) -> dict[str, np.ndarray]:
    """Trajectories of a mediocre tracker: gt + drift + noise, frame 0 = gt (what got10k's report assumes)."""
    rng = np.random.default_rng(seed)
    out = {}
    for s in seqs:
        drift = np.cumsum(rng.normal(0, 2.0, (len(s.boxes), 4)), axis=0) * [1, 1, 0.3, 0.3]
        pred = s.boxes + drift + rng.normal(0, 1.5, s.boxes.shape)
        pred[:, 2:] = np.abs(pred[:, 2:]) + 1
        pred[0] = s.boxes[0]
        out[s.name] = pred
    return out


def test_equals_got10k_report_on_read_otb_sequences(tmp_path):
    from common.tracking.data import make_synthetic_otb, read_otb

    otb = import_oracle("got10k.experiments.otb")
    seqs = read_otb(make_synthetic_otb(tmp_path / "OTB100", sequences=4, frames=30, size=(96, 72), seed=3))
    results, gts = _tracked(seqs), {s.name: s.boxes for s in seqs}
    # got10k's ExperimentOTB.report, without its dataset download: per-sequence curves, then their mean
    exp = otb.ExperimentOTB.__new__(otb.ExperimentOTB)
    exp.nbins_iou, exp.nbins_ce = 21, 51
    theirs = {n: exp._calc_curves(*exp._calc_metrics(results[n], gts[n])) for n in sorted(gts)}
    ours = otb_curves(results, gts)
    assert sorted(ours) == sorted(theirs)
    for n, (succ, prec) in theirs.items():
        np.testing.assert_allclose(ours[n][0], succ, atol=1e-12)
        np.testing.assert_allclose(ours[n][1], prec, atol=1e-12)
    succ_curve = np.mean([c[0] for c in theirs.values()], axis=0)
    prec_curve = np.mean([c[1] for c in theirs.values()], axis=0)
    res = evaluate_otb(results, gts)
    assert res["success"] == pytest.approx(np.mean(succ_curve), abs=1e-12)
    assert res["precision"] == pytest.approx(prec_curve[20], abs=1e-12)
    assert 0.05 < res["success"] < 0.95  # a non-trivial case: neither all hits nor all misses
    per = evaluate_otb_per_sequence(results, gts)
    for n, (succ, prec) in theirs.items():
        assert per[n]["success"] == pytest.approx(np.mean(succ), abs=1e-12)
        assert per[n]["precision"] == pytest.approx(prec[20], abs=1e-12)
        assert per[n]["frames"] == 30


def test_plot_otb_writes_one_png(tmp_path, monkeypatch):
    import matplotlib.figure

    pred, gt = _random(7, 60)
    results, gts = {"a": pred, "b": gt}, {"a": gt, "b": gt}
    legends, save = [], matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        legends.extend(t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts())
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    png = plot_otb(results, gts, tmp_path / "plots" / "otb.png", title="test")
    res = evaluate_otb(results, gts)
    assert legends == [f"AUC {res['success']:.3f}", f"precision@20 {res['precision']:.3f}"]
    assert png == tmp_path / "plots" / "otb.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1.8 * height  # two panels side by side
    assert len(SUCCESS_THRESHOLDS) == 21 and len(PRECISION_THRESHOLDS) == 51
    with pytest.raises(InputError, match="no OTB result for b"):
        plot_otb({"a": pred}, gts, Path(tmp_path / "x.png"), title="t")
