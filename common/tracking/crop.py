"""Siamese-tracker pre-processing shared by the tracking bundles: context crops with mean-colour padding, the
cosine (Hann) window and the anchor grid. Written from shared/specs/siamrpn.md sections 5, 7 and 8.2.

Frames are BGR uint8 HWC (OpenCV); crops come out float32 1x3xSxS with values 0..255 in B,G,R order (no
normalisation, no channel swap).
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def context_size(w: float, h: float, context: float = 0.5) -> float:
    """sqrt((w + p)(h + p)) with p = context * (w + h): the side of the square template region (unrounded)."""
    p = context * (w + h)
    return math.sqrt((w + p) * (h + p))


def frame_mean(frame: np.ndarray) -> np.ndarray:
    """Per-channel mean of the whole frame, truncated toward zero as writing it into a uint8 canvas does."""
    return np.trunc(frame.reshape(-1, frame.shape[-1]).mean(axis=0)).astype(np.uint8)


def crop_patch(frame: np.ndarray, centre: tuple[float, float], side: int, avg: np.ndarray) -> np.ndarray:
    """The side x side patch around `centre` (pysot `get_subwindow` geometry, before resizing), uint8 HWC; the
    part outside the frame is `avg`. Only the patch is allocated, never a padded copy of the whole frame."""
    if side < 1:
        raise ValueError(f"crop side must be >= 1, got {side}")
    h, w = frame.shape[:2]
    x_min = math.floor(centre[0] - (side + 1) / 2 + 0.5)
    y_min = math.floor(centre[1] - (side + 1) / 2 + 0.5)
    x0, y0 = max(x_min, 0), max(y_min, 0)
    x1, y1 = min(x_min + side, w), min(y_min + side, h)
    if x0 == x_min and y0 == y_min and x1 == x_min + side and y1 == y_min + side:
        return frame[y0:y1, x0:x1]  # fully inside: a view, no copy
    patch = np.empty((side, side, frame.shape[2]), dtype=np.uint8)
    patch[...] = avg
    if x1 > x0 and y1 > y0:
        patch[y0 - y_min:y1 - y_min, x0 - x_min:x1 - x_min] = frame[y0:y1, x0:x1]
    return patch


def subwindow(frame: np.ndarray, centre: tuple[float, float], out: int, side: int, avg: np.ndarray) -> np.ndarray:
    """Crop (mean padding) and resize to out x out with cv2 INTER_LINEAR (no resize when side == out); returns a
    float32 1x3xout x out array."""
    patch = crop_patch(frame, centre, side, avg)
    if side != out:
        patch = cv2.resize(patch, (out, out))
    return np.ascontiguousarray(patch.transpose(2, 0, 1)[None], dtype=np.float32)


def hann_window(size: int, anchors: int) -> np.ndarray:
    """outer(hanning(size), hanning(size)) flattened row-major and tiled once per anchor: (anchors*size*size,)."""
    h = np.hanning(size)
    return np.tile(np.outer(h, h).ravel(), anchors)


def anchor_shapes(stride: int, ratios: tuple[float, ...], scales: tuple[float, ...]) -> np.ndarray:
    """(A,2) anchor (w, h): ws = floor(sqrt(stride^2 / r)), hs = floor(ws * r), times each scale (the integer
    truncation is upstream's, so areas are not exact)."""
    shapes = []
    area = stride * stride
    for r in ratios:
        ws = int(math.sqrt(area / r))
        hs = int(ws * r)
        for s in scales:
            shapes.append((ws * s, hs * s))
    return np.array(shapes, dtype=np.float32)


def anchor_grid(stride: int, ratios: tuple[float, ...], scales: tuple[float, ...], score_size: int) -> np.ndarray:
    """(A*S*S, 4) anchors (cx, cy, w, h) relative to the crop centre, ordered n = a*S*S + y*S + x; centres are
    -(S//2)*stride + stride*k."""
    shapes = anchor_shapes(stride, ratios, scales)
    origin = -(score_size // 2) * stride
    c = origin + stride * np.arange(score_size, dtype=np.float32)
    cy, cx = np.meshgrid(c, c, indexing="ij")
    a = len(shapes)
    out = np.empty((a, score_size * score_size, 4), dtype=np.float32)
    out[:, :, 0] = cx.ravel()[None]
    out[:, :, 1] = cy.ravel()[None]
    out[:, :, 2] = shapes[:, 0, None]
    out[:, :, 3] = shapes[:, 1, None]
    return out.reshape(-1, 4)
