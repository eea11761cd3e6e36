"""Anchor-target assignment for SiamRPN++ training (pysot `AnchorTarget`), written from
shared/specs/siamrpnpp_training.md section 8 and the anchors of shared/specs/siamrpn.md section 5.

The anchors are the tracker's grid (common.tracking.crop.anchor_grid, centres -96 + 8k around the crop centre)
moved to absolute 255-crop pixels: centres 127 - 96 + 8k = 31 + 8k. Everything is vectorised over the
5 x 25 x 25 anchors; the only randomness is the subsampling, drawn from the caller's generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from common.tracking.crop import anchor_grid

STRIDE = 8
RATIOS = (0.33, 0.5, 1.0, 2.0, 3.0)
SCALES = (8.0,)
SEARCH_SIZE = 255
OUTPUT_SIZE = 25
THR_HIGH, THR_LOW = 0.6, 0.3
POS_NUM, NEG_NUM, TOTAL_NUM = 16, 16, 64


def _subsample(flat: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
    """At most `keep` of the flat indices, chosen uniformly without replacement."""
    if flat.size <= keep:
        return flat
    return rng.choice(flat, size=keep, replace=False)


class AnchorTarget:
    """Built once; `target(box, neg=..., rng=...)` gives (label_cls, label_loc, label_loc_weight) for one search
    sample. Attributes `centers` (4, A, S, S) as (cx, cy, w, h) and `corners` (4, A, S, S) as (x1, y1, x2, y2)."""

    def __init__(self, *, stride: int = STRIDE, ratios: Sequence[float] = RATIOS, scales: Sequence[float] = SCALES,
                 search_size: int = SEARCH_SIZE, output_size: int = OUTPUT_SIZE, thr_high: float = THR_HIGH,
                 thr_low: float = THR_LOW, pos_num: int = POS_NUM, neg_num: int = NEG_NUM,
                 total_num: int = TOTAL_NUM):
        self.stride, self.search_size, self.output_size = stride, search_size, output_size
        self.thr_high, self.thr_low = thr_high, thr_low
        self.pos_num, self.neg_num, self.total_num = pos_num, neg_num, total_num
        grid = anchor_grid(stride, tuple(ratios), tuple(scales), output_size).astype(np.float64)
        self.anchor_num = grid.shape[0] // (output_size * output_size)
        self.shape = (self.anchor_num, output_size, output_size)
        grid[:, :2] += search_size // 2  # relative to the crop centre -> absolute crop pixels
        self.centers = np.ascontiguousarray(grid.T.reshape((4, *self.shape)))
        cx, cy, w, h = self.centers
        self.corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        self.areas = w * h

    def iou(self, box: Sequence[float]) -> np.ndarray:
        """(A, S, S) IoU of every anchor with corners `box`, plain areas (no +1), as upstream."""
        tx1, ty1, tx2, ty2 = (float(v) for v in box)
        x1, y1, x2, y2 = self.corners
        iw = np.maximum(0.0, np.minimum(x2, tx2) - np.maximum(x1, tx1))
        ih = np.maximum(0.0, np.minimum(y2, ty2) - np.maximum(y1, ty1))
        inter = iw * ih
        return inter / (self.areas + (tx2 - tx1) * (ty2 - ty1) - inter)

    def negative_window(self, box: Sequence[float]) -> tuple[slice, slice]:
        """(rows, cols) of the 7 x 7 cells around the target's cell, clipped to the map (spec section 8). The
        `+ 0.5` inside the ceil is upstream's: a target at the exact crop centre lands on cell 13, not 12."""
        tcx = (float(box[0]) + float(box[2])) / 2
        tcy = (float(box[1]) + float(box[3])) / 2
        half, c0 = self.output_size // 2, self.search_size // 2
        cx = half + int(math.ceil((tcx - c0) / self.stride + 0.5))
        cy = half + int(math.ceil((tcy - c0) / self.stride + 0.5))
        return (slice(max(0, cy - 3), max(0, min(self.output_size, cy + 4))),
                slice(max(0, cx - 3), max(0, min(self.output_size, cx + 4))))

    def __call__(self, target_box_corners: Sequence[float], *, neg: bool,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """label_cls int64 (A,S,S) in {-1,0,1}, label_loc float32 (4,A,S,S), label_loc_weight float32 (A,S,S)."""
        cls = np.full(self.shape, -1, dtype=np.int64)
        loc = np.zeros((4, *self.shape), dtype=np.float32)
        weight = np.zeros(self.shape, dtype=np.float32)
        if neg:
            # a negative pair: only background labels, only near where the (other) object sits; no loc targets
            window = np.zeros(self.shape, dtype=bool)
            rows, cols = self.negative_window(target_box_corners)
            window[:, rows, cols] = True
            cls.flat[_subsample(np.flatnonzero(window), self.neg_num, rng)] = 0
            return cls, loc, weight

        tx1, ty1, tx2, ty2 = (float(v) for v in target_box_corners)
        tcx, tcy, tw, th = (tx1 + tx2) / 2, (ty1 + ty2) / 2, tx2 - tx1, ty2 - ty1
        acx, acy, aw, ah = self.centers
        loc[0] = (tcx - acx) / aw
        loc[1] = (tcy - acy) / ah
        loc[2] = np.log(tw / aw)
        loc[3] = np.log(th / ah)

        overlap = self.iou((tx1, ty1, tx2, ty2))
        pos = _subsample(np.flatnonzero(overlap > self.thr_high), self.pos_num, rng)
        # up to TOTAL - POS negatives whatever the number of positives (upstream's rule)
        negs = _subsample(np.flatnonzero(overlap < self.thr_low), self.total_num - self.pos_num, rng)
        cls.flat[pos] = 1
        weight.flat[pos] = 1.0 / (pos.size + 1e-6)
        cls.flat[negs] = 0
        return cls, loc, weight
