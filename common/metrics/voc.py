"""PASCAL VOC2007 11-point AP with the ssd.pytorch-lineage semantics (shared/specs/refinedet.md §5.4–5.5).

This is *not* the official VOCdevkit metric: IoU has no +1 pixel term and the threshold is strict (``> 0.5``).
The caller has already applied the lineage's conventions: scores rounded to 3 decimals (§5.2), detections
written at +1 and ground truth read at -1 (§5.3, §5.6). Here everything is float64.

Per class, detections of all images are sorted by score (descending, **stable**) and walked in that order:

* IoU against every GT box of the class in the detection's image, difficult ones included;
* ``ovmax`` = max IoU, ``jmax`` = first index attaining it;
* ``ovmax > thr`` and ``jmax`` difficult -> ignored (neither TP nor FP);
* ``ovmax > thr`` and ``jmax`` not yet matched -> TP (and ``jmax`` becomes matched); already matched -> FP
  (no fall-back to the second-best GT);
* otherwise (low overlap, or no GT of the class in the image) -> FP.

The walk is vectorized: a detection is TP exactly when it is the first, in sorted order, among the detections
that pass the overlap test and hit the same non-difficult ``(image, jmax)`` pair.

Edge cases (upstream behaviour and our choice):

* Sort: upstream uses ``argsort(-conf)`` (numpy quicksort, not stable), so ties among the many equal 3-decimal
  scores are ordered by whatever the numpy build does. We use ``kind="stable"``: ties keep the caller's order
  (image order, then emission order, as in the result files), which is deterministic everywhere (§5.4).
* A class with **no detections**: upstream returns AP = -1 (its result file is empty) and averages that in. We
  return AP = 0.0 (and empty recall/precision), the value a detector that finds nothing deserves; it cannot
  occur with real weights on VOC07.
* A class with **npos = 0** (no non-difficult GT): upstream divides by zero; no detection can be a TP then, so
  its recall is 0/0 = NaN everywhere, no threshold is reached and AP = 0.0. We return the same AP and NaN
  recall (computed without a warning). Both kinds of class are included in the plain mAP mean, as upstream
  does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# 11 recall thresholds of VOC07; built with arange exactly as upstream, so 0.3 is 0.30000000000000004 (§5.5).
VOC07_THRESHOLDS: np.ndarray = np.arange(0.0, 1.1, 0.1)

# Upper bound on elements of one (rows, Gmax) IoU block, to keep memory flat on classes with crowded images.
_BLOCK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class ClassDetections:
    """All detections of one class over all images.

    Attributes:
        image_index (ndarray[M] int64): index into the ground-truth image list.
        scores (ndarray[M] float64): confidence, already rounded as the caller's metric requires.
        boxes (ndarray[M, 4] float64): ``x1, y1, x2, y2`` in the same pixel convention as the ground truth.
    """

    image_index: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray

    @classmethod
    def empty(cls) -> ClassDetections:
        """No detections."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros((0, 4), np.float64))


@dataclass(frozen=True)
class ClassGroundTruth:
    """All ground truth of one class, one entry per image (the same image list for every class).

    Attributes:
        boxes (list of ndarray[G_i, 4] float64): ``x1, y1, x2, y2`` per image (``G_i`` may be 0).
        difficult (list of ndarray[G_i] bool): VOC ``difficult`` flag per box.
    """

    boxes: list[np.ndarray]
    difficult: list[np.ndarray]

    @property
    def n_images(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class ClassResult:
    """Per-class outcome.

    Attributes:
        ap: 11-point AP in [0, 1].
        npos: number of non-difficult GT boxes.
        recall (ndarray[M] float64): cumulative recall in sorted detection order (NaN when ``npos == 0``).
        precision (ndarray[M] float64): cumulative precision in sorted detection order.
    """

    ap: float
    npos: int
    recall: np.ndarray
    precision: np.ndarray


@dataclass(frozen=True)
class VocResult:
    """Whole-dataset outcome: per-class AP (fraction, not %), their plain mean, npos per class, and each class's
    full :class:`ClassResult` (recall / precision curves, for precision-recall plots)."""

    ap: dict[str, float]
    mean_ap: float
    npos: dict[str, int]
    # compare=False: the curves are numpy arrays (== on them is elementwise) and follow from ap/npos anyway
    per_class: dict[str, ClassResult] = field(default_factory=dict, compare=False, repr=False)


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC07 11-point AP: mean over t in {0, 0.1, ..., 1} of ``max(precision[recall >= t])`` (0 if none).

    Args:
        recall (ndarray[M] float64), precision (ndarray[M] float64): cumulative curves; need not be monotone
            (NaN recall never reaches a threshold).
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if recall.shape != precision.shape or recall.ndim != 1:
        raise ValueError(f"recall {recall.shape} and precision {precision.shape} must be equal 1-D shapes")
    if recall.size == 0:
        return 0.0
    with np.errstate(invalid="ignore"):  # NaN recall compares False, which is the wanted outcome
        reached = recall[None, :] >= VOC07_THRESHOLDS[:, None]  # (11, M)
    best = np.where(reached, precision[None, :], -np.inf).max(axis=1)
    best[~reached.any(axis=1)] = 0.0
    ap = 0.0
    for p in best.tolist():  # accumulate in threshold order, as upstream, so results agree to the last bit
        ap += p / 11.0
    return ap


def _pack_ground_truth(gt: ClassGroundTruth) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate per-image GT into flat arrays: counts (N,), boxes (sum G_i, 4), difficult (sum G_i,)."""
    if len(gt.boxes) != len(gt.difficult):
        raise ValueError(f"{len(gt.boxes)} images of boxes but {len(gt.difficult)} of difficult flags")
    counts = np.fromiter((len(b) for b in gt.boxes), dtype=np.int64, count=len(gt.boxes))
    n_diff = np.fromiter((len(d) for d in gt.difficult), dtype=np.int64, count=len(gt.difficult))
    bad = np.flatnonzero(counts != n_diff)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"image {i}: {counts[i]} GT boxes but {n_diff[i]} difficult flags")
    try:
        boxes = np.concatenate([np.zeros((0, 4)), *gt.boxes]).astype(np.float64, copy=False)
        difficult = np.concatenate([np.zeros(0, bool), *gt.difficult]).astype(bool, copy=False)
    except ValueError as e:
        raise ValueError(
            f"GT boxes must be (G_i, 4) arrays and difficult flags (G_i,) arrays per image: {e}"
        ) from e
    return counts, boxes, difficult


def _check_detections(dets: ClassDetections, n_images: int) -> None:
    m = dets.scores.shape[0] if dets.scores.ndim == 1 else -1
    if m < 0 or dets.image_index.shape != (m,) or dets.boxes.shape != (m, 4):
        raise ValueError(
            f"detections need image_index (M,), scores (M,), boxes (M, 4); got {dets.image_index.shape}, "
            f"{dets.scores.shape}, {dets.boxes.shape}"
        )
    if m and (dets.image_index.min() < 0 or dets.image_index.max() >= n_images):
        raise ValueError(
            f"image_index out of range [0, {n_images}): "
            f"min {dets.image_index.min()}, max {dets.image_index.max()}"
        )


def _iou_block(
    det: np.ndarray, gx1: np.ndarray, gy1: np.ndarray, gx2: np.ndarray, gy2: np.ndarray
) -> np.ndarray:
    """IoU without +1 of det (R,4) vs its image's padded GT columns (R,G) -> (R,G); op order as in §5.4."""
    x1, y1, x2, y2 = (det[:, k : k + 1] for k in range(4))
    iw = np.maximum(np.minimum(gx2, x2) - np.maximum(gx1, x1), 0.0)
    ih = np.maximum(np.minimum(gy2, y2) - np.maximum(gy1, y1), 0.0)
    inter = iw * ih
    union = (x2 - x1) * (y2 - y1) + (gx2 - gx1) * (gy2 - gy1) - inter
    return inter / union


def match_detections(
    dets: ClassDetections, gt: ClassGroundTruth, iou_threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Label each detection TP / FP / ignored, in sorted (score descending, stable) order.

    Returns:
        tp (ndarray[M] float64), fp (ndarray[M] float64): 0/1 flags in sorted order; an ignored detection
        (best match is a difficult GT) has 0 in both.
    """
    return _match_packed(dets, *_pack_ground_truth(gt), iou_threshold)


def _match_packed(
    dets: ClassDetections,
    counts: np.ndarray,
    gt_boxes: np.ndarray,
    gt_difficult: np.ndarray,
    iou_threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    n_images = counts.shape[0]
    _check_detections(dets, n_images)
    m = dets.scores.shape[0]
    order = np.argsort(-dets.scores.astype(np.float64), kind="stable")
    img = dets.image_index.astype(np.int64)[order]
    boxes = dets.boxes.astype(np.float64)[order]
    gmax = int(counts.max()) if n_images else 0
    if m == 0 or gmax == 0:
        return np.zeros(m), np.ones(m)

    # Padded per-image GT: slot j of image i holds its j-th box; empty slots get IoU -inf below, so they
    # never win the max and an image without GT leaves ovmax = -inf (an FP, as upstream).
    starts = np.cumsum(counts) - counts
    row_img = np.repeat(np.arange(n_images), counts)
    slot = np.arange(gt_boxes.shape[0]) - starts[row_img]
    pad = np.zeros((n_images, gmax, 4))
    pad[row_img, slot] = gt_boxes
    valid = np.zeros((n_images, gmax), bool)
    valid[row_img, slot] = True
    pad_difficult = np.zeros((n_images, gmax), bool)
    pad_difficult[row_img, slot] = gt_difficult

    ovmax = np.empty(m)
    jmax = np.empty(m, np.int64)
    step = max(1, _BLOCK_ELEMENTS // gmax)
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate boxes give NaN IoU, an FP as upstream
        for lo in range(0, m, step):  # blocks of rows, not a loop per detection
            sl = slice(lo, lo + step)
            g = pad[img[sl]]  # (R, Gmax, 4)
            ov = _iou_block(boxes[sl], g[..., 0], g[..., 1], g[..., 2], g[..., 3])
            ov[~valid[img[sl]]] = -np.inf
            ovmax[sl] = ov.max(axis=1)  # NaN propagates, as np.max does upstream
            jmax[sl] = ov.argmax(axis=1)  # first index of the max (or of the first NaN), as upstream

    hit = ovmax > iou_threshold
    hit_difficult = pad_difficult[img, jmax]
    candidates = np.flatnonzero(hit & ~hit_difficult)
    # The first detection (in sorted order) on each (image, GT) pair takes it; later ones are duplicates: FP.
    _, first = np.unique(img[candidates] * gmax + jmax[candidates], return_index=True)
    tp = np.zeros(m)
    tp[candidates[first]] = 1.0
    fp = 1.0 - tp
    fp[hit & hit_difficult] = 0.0
    return tp, fp


def evaluate_class(dets: ClassDetections, gt: ClassGroundTruth, iou_threshold: float = 0.5) -> ClassResult:
    """AP, npos and the recall/precision curves of one class (see the module docstring for edge cases)."""
    counts, boxes, difficult = _pack_ground_truth(gt)
    npos = int(np.count_nonzero(~difficult))
    tp, fp = _match_packed(dets, counts, boxes, difficult, iou_threshold)
    if tp.size == 0:
        return ClassResult(0.0, npos, np.zeros(0), np.zeros(0))
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(fp)
    if npos > 0:
        recall = tp_cum / float(npos)
    else:
        recall = np.full(tp.size, np.nan)  # upstream's 0/0: no TP is possible without non-difficult GT
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    return ClassResult(voc07_ap(recall, precision), npos, recall, precision)


def evaluate(
    dets: Mapping[str, ClassDetections], gts: Mapping[str, ClassGroundTruth], iou_threshold: float = 0.5
) -> VocResult:
    """Evaluate every class of ``gts`` (in its order); a class missing from ``dets`` has no detections.

    Returns per-class AP, the plain mean over those classes (fraction, not %), npos per class and each class's
    recall / precision curves (``VocResult.per_class``).
    """
    unknown = sorted(set(dets) - set(gts))
    if unknown:
        raise ValueError(
            f"detections for classes without ground truth entries: {unknown}; known: {list(gts)}"
        )
    if not gts:
        raise ValueError("no classes to evaluate (ground-truth mapping is empty)")
    n_images = {name: g.n_images for name, g in gts.items()}
    if len(set(n_images.values())) > 1:
        raise ValueError(f"classes disagree on the number of images: {n_images}")
    ap: dict[str, float] = {}
    npos: dict[str, int] = {}
    per_class: dict[str, ClassResult] = {}
    for name, gt in gts.items():
        try:
            res = evaluate_class(dets.get(name, ClassDetections.empty()), gt, iou_threshold)
        except ValueError as e:
            raise ValueError(f"class {name!r}: {e}") from e
        ap[name] = res.ap
        npos[name] = res.npos
        per_class[name] = res
    return VocResult(ap=ap, mean_ap=float(np.mean(list(ap.values()))), npos=npos, per_class=per_class)


def _synthetic(
    n_images: int, dets_per_image: int, n_classes: int, seed: int
) -> tuple[dict[str, ClassDetections], dict[str, ClassGroundTruth]]:
    """VOC-like synthetic data: 1-6 GT per image (10 % difficult), detections = jittered GT + random boxes."""
    rng = np.random.default_rng(seed)
    n_gt = rng.integers(1, 7, n_images)
    gt_img = np.repeat(np.arange(n_images), n_gt)
    g = gt_img.size
    gt_cls = rng.integers(0, n_classes, g)
    xy = rng.uniform(0, 400, (g, 2))
    wh = rng.uniform(10, 200, (g, 2))
    gt_box = np.floor(np.concatenate([xy, xy + wh], axis=1))
    gt_diff = rng.random(g) < 0.1

    m = n_images * dets_per_image
    det_img = np.repeat(np.arange(n_images), dets_per_image)
    det_cls = rng.integers(0, n_classes, m)
    det_box = np.concatenate([rng.uniform(0, 400, (m, 2)), np.zeros((m, 2))], axis=1)
    det_box[:, 2:] = det_box[:, :2] + rng.uniform(10, 200, (m, 2))
    # A quarter of the detections sit on a GT of their image (first GT of each image), jittered.
    on_gt = rng.random(m) < 0.25
    first_gt = np.cumsum(n_gt) - n_gt
    src = first_gt[det_img[on_gt]] + rng.integers(0, n_gt[det_img[on_gt]])
    det_box[on_gt] = gt_box[src] + rng.normal(0, 8, (int(on_gt.sum()), 4))
    det_cls[on_gt] = gt_cls[src]
    scores = np.round(rng.random(m) * 0.99 + 0.01 + 0.3 * on_gt, 3)  # 3 decimals -> many ties, as in §5.2

    dets: dict[str, ClassDetections] = {}
    gts: dict[str, ClassGroundTruth] = {}
    for c in range(n_classes):
        name = f"class{c:02d}"
        sel = det_cls == c
        dets[name] = ClassDetections(det_img[sel], scores[sel], det_box[sel])
        gsel = gt_cls == c
        split = np.cumsum(np.bincount(gt_img[gsel], minlength=n_images))[:-1]
        gts[name] = ClassGroundTruth(np.split(gt_box[gsel], split), np.split(gt_diff[gsel], split))
    return dets, gts


def benchmark(
    n_images: int = 4952, dets_per_image: int = 100, n_classes: int = 20, seed: int = 0, repeats: int = 3
) -> dict[str, float]:
    """Time :func:`evaluate` on synthetic VOC07-sized data (``dets_per_image`` over all classes together).

    Returns ``voc07_eval_s`` (best of ``repeats`` runs, seconds; data generation not timed), ``n_detections``,
    ``n_ground_truth`` and ``mean_ap`` (of the synthetic data, a sanity value only).
    """
    dets, gts = _synthetic(n_images, dets_per_image, n_classes, seed)
    best = float("inf")
    result = None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = evaluate(dets, gts)
        best = min(best, time.perf_counter() - t0)
    assert result is not None
    return {
        "voc07_eval_s": best,
        "n_detections": float(sum(d.scores.size for d in dets.values())),
        "n_ground_truth": float(sum(sum(len(b) for b in g.boxes) for g in gts.values())),
        "mean_ap": result.mean_ap,
    }
