"""Box math shared by bundles: format conversions, pairwise IoU, greedy NMS. Numpy, vectorised.

Conventions: corner boxes are (x1, y1, x2, y2); centre boxes (cx, cy, w, h). Areas have **no +1** (the
ssd.pytorch lineage used by the seeds); a bundle needing the VOCdevkit +1 convention says so explicitly.
"""

from __future__ import annotations

import numpy as np


def centre_to_corners(boxes: np.ndarray) -> np.ndarray:
    """(N,4) (cx, cy, w, h) -> (N,4) (x1, y1, x2, y2), same dtype."""
    half = boxes[:, 2:] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


def corners_to_centre(boxes: np.ndarray) -> np.ndarray:
    """(N,4) (x1, y1, x2, y2) -> (N,4) (cx, cy, w, h), same dtype."""
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (N,M) of corner boxes a (N,4) and b (M,4); intersections clamped at 0, areas without +1."""
    # Per-coordinate (N,1) vs (1,M) operations with in-place clipping: about 6x faster than stacking [N,M,2].
    iw = np.minimum(a[:, 2, None], b[None, :, 2]) - np.maximum(a[:, 0, None], b[None, :, 0])
    ih = np.minimum(a[:, 3, None], b[None, :, 3]) - np.maximum(a[:, 1, None], b[None, :, 1])
    np.clip(iw, 0, None, out=iw)
    np.clip(ih, 0, None, out=ih)
    inter = np.multiply(iw, ih, out=iw)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = np.add(area_a[:, None], area_b[None, :], out=ih)
    union -= inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.divide(inter, union, out=inter)
    iou[~(union > 0)] = 0.0
    return iou


def overlaps_above(boxes: np.ndarray, iou_threshold: float, *, block: int = 128) -> np.ndarray:
    """Upper-triangular bool matrix (N,N): [i, j] is True when i < j and IoU(i, j) > `iou_threshold`.

    Tests inter > t * union instead of dividing, and computes only the upper triangle in row blocks: about 3x
    cheaper than `pairwise_iou(...) > t` on NMS-sized inputs (measured: 1000 boxes, 18 ms -> 6 ms; block 128
    beat 64, 256 and 512).
    (Borderline pairs with IoU within float rounding of t may flip versus the divided form.)"""
    n = boxes.shape[0]
    out = np.zeros((n, n), dtype=bool)
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    area = (x2 - x1) * (y2 - y1)
    t = boxes.dtype.type(iou_threshold)
    for r0 in range(0, n, block):  # a loop over row blocks, not boxes
        r1 = min(r0 + block, n)
        c = slice(r0 + 1, n)
        iw = np.minimum(x2[r0:r1, None], x2[None, c]) - np.maximum(x1[r0:r1, None], x1[None, c])
        ih = np.minimum(y2[r0:r1, None], y2[None, c]) - np.maximum(y1[r0:r1, None], y1[None, c])
        np.maximum(iw, 0, out=iw)  # np.clip's generic path costs about 2x here
        np.maximum(ih, 0, out=ih)
        inter = np.multiply(iw, ih, out=iw)
        union = np.add(area[r0:r1, None], area[None, c], out=ih)
        union -= inter
        union *= t
        blk = out[r0:r1, c]
        np.greater(inter, union, out=blk)
        # the block's first columns are its own rows: keep only j > i there
        d = r1 - r0 - 1
        if d > 0:
            blk[:, :d] &= np.triu(np.ones((r1 - r0, d), dtype=bool))
    return out


def greedy_nms(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS over boxes (N,4) already sorted by descending score; returns the kept indices (ascending).

    A box survives when its IoU with every earlier *kept* box is <= `iou_threshold`. Instead of a Python loop per
    box this iterates keep <- not any(kept earlier box overlaps): box i's decision depends only on boxes before it,
    so after t rounds the first t decisions are final, and a round that changes nothing has reached the unique
    greedy solution. Rounds = the longest suppression chain, a handful in practice.
    """
    n = boxes.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    suppresses = overlaps_above(boxes, iou_threshold)  # [i,j]: earlier i would drop j
    # Only boxes that some earlier box overlaps can ever be dropped; iterate on that sub-problem.
    keep = np.ones(n, dtype=bool)
    cand = np.flatnonzero(suppresses.any(axis=0))
    if cand.size:
        sub = suppresses[:, cand].astype(np.float32)
        while True:
            new = (keep.astype(np.float32) @ sub) == 0
            if np.array_equal(new, keep[cand]):
                break
            keep[cand] = new
    return np.flatnonzero(keep)
