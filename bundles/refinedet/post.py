"""RefineDet post-processing (shared/specs/refinedet.md sections 2 and 4): priors, two-stage decode, per-class NMS.

Free functions on numpy arrays. Boxes are normalised (x1, y1, x2, y2) unless a name says pixels; areas have no +1
(upstream ssd.pytorch convention). Semantics follow upstream `Detect_RefineDet` with the ModelZoo settings:
objectness filter 0.01, class threshold 0.01 (strict), top 1000 candidates per class, NMS IoU 0.45, no per-image cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from common.boxes import centre_to_corners, corners_to_centre, greedy_nms

FEATURE_MAPS = (40, 20, 10, 5)
STEPS = (8, 16, 32, 64)
MIN_SIZES = (32, 64, 128, 256)
IMAGE_SIZE = 320
VARIANCES = (0.1, 0.2)


@dataclass(frozen=True)
class DetectConfig:
    """Detect_RefineDet parameters as the ModelZoo port runs them (keep_top_k has no effect upstream)."""

    objectness_threshold: float = 0.01
    conf_threshold: float = 0.01
    top_k: int = 1000
    nms_threshold: float = 0.45


def prior_boxes() -> np.ndarray:
    """Anchors, float32 (6375, 4) centre-size (cx, cy, w, h), clipped to [0, 1].

    Per level, row-major cells (x moves first), three boxes per cell: square, then aspect 2 wide, then tall."""
    out = []
    for fmap, step, min_size in zip(FEATURE_MAPS, STEPS, MIN_SIZES, strict=True):
        f = IMAGE_SIZE / step
        rows, cols = np.meshgrid(np.arange(fmap), np.arange(fmap), indexing="ij")
        cx = (cols.ravel() + 0.5) / f
        cy = (rows.ravel() + 0.5) / f
        s = min_size / IMAGE_SIZE
        r = np.sqrt(2.0)
        wh = np.array([[s, s], [s * r, s / r], [s / r, s * r]])  # (3, 2)
        centres = np.repeat(np.stack([cx, cy], axis=1), 3, axis=0)  # (cells*3, 2)
        sizes = np.tile(wh, (fmap * fmap, 1))
        out.append(np.concatenate([centres, sizes], axis=1))
    return np.clip(np.concatenate(out).astype(np.float32), 0.0, 1.0)


def decode(loc: np.ndarray, priors: np.ndarray, variances: tuple[float, float] = VARIANCES) -> np.ndarray:
    """Offsets (N,4) against centre-size priors (N,4) -> corner boxes (N,4), float32, not clipped."""
    loc = loc.astype(np.float32, copy=False)
    cxcy = priors[:, :2] + loc[:, :2] * np.float32(variances[0]) * priors[:, 2:]
    wh = priors[:, 2:] * np.exp(loc[:, 2:] * np.float32(variances[1]))
    return centre_to_corners(np.concatenate([cxcy, wh], axis=1))


def refine_and_decode(arm_loc: np.ndarray, odm_loc: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Two-stage decode: ARM refines the priors, ODM offsets apply to the refined anchors. (N,4) corners."""
    refined = corners_to_centre(decode(arm_loc, priors))
    return decode(odm_loc, refined)


@dataclass(frozen=True)
class ImageDetections:
    """Detections of one image, in emission order per class (descending score), normalised corners."""

    labels: np.ndarray  # (K,) int64, network class index 1..20
    scores: np.ndarray  # (K,) float32
    boxes: np.ndarray  # (K,4) float32


def detect(
    arm_loc: np.ndarray,
    arm_conf: np.ndarray,
    odm_loc: np.ndarray,
    odm_conf: np.ndarray,
    priors: np.ndarray,
    config: DetectConfig = DetectConfig(),
) -> ImageDetections:
    """Detections for one image from its four head outputs (N,4), (N,2), (N,4), (N,C) with softmaxed confs."""
    boxes = refine_and_decode(arm_loc, odm_loc, priors)
    scores = np.where((arm_conf[:, 1] > config.objectness_threshold)[:, None], odm_conf, 0.0).astype(np.float32)
    labels, kept_scores, kept_boxes = [], [], []
    for c in range(1, scores.shape[1]):  # one iteration per class; the per-box work is vectorised
        idx = np.flatnonzero(scores[:, c] > config.conf_threshold)
        if idx.size == 0:
            continue
        # the top_k highest scores form the working list; NMS emits them in descending order
        order = idx[np.argsort(-scores[idx, c], kind="stable")[: config.top_k]]
        keep = order[greedy_nms(boxes[order], config.nms_threshold)]
        labels.append(np.full(keep.size, c, dtype=np.int64))
        kept_scores.append(scores[keep, c])
        kept_boxes.append(boxes[keep])
    if not labels:
        return ImageDetections(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, 4), np.float32))
    return ImageDetections(np.concatenate(labels), np.concatenate(kept_scores), np.concatenate(kept_boxes))


def to_pixels(det: ImageDetections, width: int, height: int) -> np.ndarray:
    """Normalised boxes -> float32 pixel boxes (x * W, y * H), no clipping and no +1 here."""
    scale = np.array([width, height, width, height], dtype=np.float32)
    return det.boxes * scale


def round_like_detection_files(scores: np.ndarray, boxes_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores (K,) and pixel boxes (K,4) -> the float64 values upstream's evaluator reads back from its
    det files: float('%.3f' % score) and float('%.1f' % (float64(pixel) + 1)) (spec 5.2), vectorised and exact.

    Exact because a float32 times 1000 fits a float64 mantissa, so rint() rounds the true value half-to-even as
    Python's formatting does; for coordinates, v * 10 can round, so values within 1e-6 of a .x5 tie, and huge ones,
    take the formatting path itself."""
    s = np.rint(scores.astype(np.float64) * 1000.0) / 1000.0
    v = boxes_px.astype(np.float64) + 1.0
    y = v * 10.0
    out = np.rint(y) / 10.0
    with np.errstate(invalid="ignore"):
        risky = np.isfinite(y) & ((np.abs(y - np.floor(y) - 0.5) < 1e-6) | (np.abs(v) > 1e11))
    if risky.any():
        out[risky] = [float(f"{x:.1f}") for x in v[risky].tolist()]
    return s, out


@lru_cache(maxsize=1)
def _priors() -> np.ndarray:
    return prior_boxes()


def pixel_detections_for_batch(outputs: dict[str, np.ndarray], sizes: list[tuple[int, int]]
                               ) -> list[ImageDetections]:
    """The post-processing job of one batch (runs in a worker): detections per image with float32 pixel boxes,
    score > 0 only (what upstream writes). Rows beyond len(sizes) are padding and ignored."""
    heads = ("arm_loc", "arm_conf", "odm_loc", "odm_conf")
    out = []
    for row, (w, h) in enumerate(sizes):
        det = detect(*(outputs[k][row] for k in heads), _priors())
        keep = det.scores > 0
        out.append(ImageDetections(det.labels[keep], det.scores[keep], to_pixels(det, w, h)[keep]))
    return out
