"""OTB one-pass evaluation as pysot computes it: success AUC and precision at 20 px (spec siamrpn.md section 13),
per sequence and averaged, and the success / precision plots.

Boxes are [x, y, w, h] with continuous extents (right = x + w). Quirks kept on purpose, because the published
numbers include them: gt frames with w <= 0 or h <= 0 get IoU -1 (never a success); gt centres with a coordinate
<= 0 get distance -1 (within every threshold).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common.errors import InputError

SUCCESS_THRESHOLDS = np.linspace(0, 1, 21)  # 0, 0.05, ..., 1.0 (strict >)
PRECISION_THRESHOLDS = np.arange(51)  # 0..50 px (<=)


def otb_init_box(gt_first: np.ndarray) -> np.ndarray:
    """pysot's OTB init from frame 0's [x, y, w, h]: [x + 0.5, y + 0.5, w, h] (a half-pixel quirk)."""
    x, y, w, h = np.asarray(gt_first, dtype=np.float64)
    cx, cy = x + w / 2, y + h / 2
    return np.array([cx - (w - 1) / 2, cy - (h - 1) / 2, w, h])


def box_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N,) IoU of [x, y, w, h] rows, clipped to [0, 1]; -1 where the gt has w <= 0 or h <= 0."""
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    iw = np.minimum(p[:, 0] + p[:, 2], g[:, 0] + g[:, 2]) - np.maximum(p[:, 0], g[:, 0])
    ih = np.minimum(p[:, 1] + p[:, 3], g[:, 1] + g[:, 3]) - np.maximum(p[:, 1], g[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = p[:, 2] * p[:, 3] + g[:, 2] * g[:, 3] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.clip(np.where(union > 0, inter / union, 0.0), 0, 1)
    return np.where((g[:, 2] <= 0) | (g[:, 3] <= 0), -1.0, iou)


def centre_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N,) distance of the centres (x + (w-1)/2, y + (h-1)/2); -1 where a gt centre coordinate is <= 0."""
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    pc = p[:, :2] + (p[:, 2:] - 1) / 2
    gc = g[:, :2] + (g[:, 2:] - 1) / 2
    d = np.hypot(*(pc - gc).T)
    return np.where((gc <= 0).any(axis=1), -1.0, d)


def _checked_pairs(results: Mapping[str, np.ndarray], gts: Mapping[str, np.ndarray]
                   ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, result, gt) in sorted name order, the result cut to the gt length; missing / short is an error."""
    missing = sorted(set(gts) - set(results))
    if missing:
        raise InputError(None, f"no OTB result for {', '.join(missing[:10])}; no dataset-level score is reported")
    out = []
    for name in sorted(gts):
        g, p = np.asarray(gts[name], np.float64), np.asarray(results[name], np.float64)
        if len(p) < len(g):
            raise InputError(name, f"{len(p)} result boxes for {len(g)} ground-truth frames")
        out.append((name, p[:len(g)], g))
    return out


def otb_curves(results: Mapping[str, np.ndarray], gts: Mapping[str, np.ndarray]
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per sequence: (success curve over SUCCESS_THRESHOLDS (21,), precision curve over PRECISION_THRESHOLDS
    (51,)). Success AUC = curve mean, precision = curve[20]."""
    curves = {}
    for name, p, g in _checked_pairs(results, gts):
        success = (box_iou(p, g)[:, None] > SUCCESS_THRESHOLDS[None]).mean(axis=0)
        precision = (centre_error(p, g)[:, None] <= PRECISION_THRESHOLDS[None]).mean(axis=0)
        curves[name] = (success, precision)
    return curves


def evaluate_otb_per_sequence(results: Mapping[str, np.ndarray], gts: Mapping[str, np.ndarray]
                              ) -> dict[str, dict[str, float]]:
    """{sequence: {"success": AUC, "precision": P(20 px), "frames": N}}; evaluate_otb is their mean."""
    return {name: {"success": float(s.mean()), "precision": float(pr[20]), "frames": float(len(gts[name]))}
            for name, (s, pr) in otb_curves(results, gts).items()}


def evaluate_otb(results: Mapping[str, np.ndarray], gts: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Success (mean over videos of the 21-threshold AUC) and precision (mean over videos of P(20 px)).
    Every gt sequence needs a result with at least as many frames; a missing one is an error naming it."""
    per = evaluate_otb_per_sequence(results, gts)
    return {"success": float(np.mean([v["success"] for v in per.values()])),
            "precision": float(np.mean([v["precision"] for v in per.values()])), "videos": float(len(per))}


def plot_otb(results: Mapping[str, np.ndarray], gts: Mapping[str, np.ndarray], png: Path, *, title: str) -> Path:
    """One PNG, two panels: the success plot (overlap threshold vs success rate, AUC in the legend) and the
    precision plot (location error threshold vs precision, precision@20 in the legend); curves are the means over
    sequences, so the legend values equal evaluate_otb's. The figure is common.plots.otb_figure (the HTML report's)."""
    from common.plots import figure_png, otb_figure

    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(figure_png(otb_figure(results, gts, title=title), dpi=100))
    return png
