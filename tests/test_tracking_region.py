"""VOT region overlap (shared/specs/siamrpn.md section 11): hand-computed cases, then equality with a literal
per-pixel transcription of the spec's rasteriser (the oracle, used only here), then a loose agreement with
got10k's analytic polygon IoU where got10k is installed (a different definition: only close, never equal)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import import_oracle

from common.tracking.region import as_polygons, overlap, overlaps

pytestmark = pytest.mark.timeout(120)


# -- the oracle: spec section 11 step by step, one pixel at a time ----------------------------------------
def _c_round(v: float) -> int:
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def _raster(poly: list[tuple[float, float]], width: int, height: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    pts = [(_c_round(x), _c_round(y)) for x, y in poly]
    for r in range(height):
        nodes = []
        j = len(pts) - 1
        for i in range(len(pts)):
            xi, yi = pts[i]
            xj, yj = pts[j]
            spans = (yi <= r < yj) or (yj <= r < yi) or (yi < r <= yj) or (yj < r <= yi) or (yi == yj == r)
            if spans and yj != yi:
                nodes.append(int(xi + (r - yi) / (yj - yi) * (xj - xi)))  # int(): toward zero
            j = i
        nodes.sort()
        i = 0
        while i < len(nodes) - 1:
            if nodes[i] == nodes[i + 1]:
                i += 1
                continue
            if nodes[i] >= width:
                break
            if nodes[i + 1] >= 0:
                for c in range(max(nodes[i], 0), min(nodes[i + 1], width - 1) + 1):
                    mask[r, c] = True
            i += 2
    return mask


def oracle(a: list[float], b: list[float], bounds: tuple[float, float]) -> float:
    if len(a) < 4 or len(b) < 4:
        return float("nan")
    polys = []
    for reg in (a, b):
        if len(reg) == 4:
            x, y, w, h = reg
            polys.append([(x, y), (x + w, y), (x + w, y + h), (x, y + h)])
        else:
            polys.append(list(zip(reg[0::2], reg[1::2], strict=True)))
    boxes = []
    for p in polys:
        xs, ys = [q[0] for q in p], [q[1] for q in p]
        boxes.append((max(math.floor(min(xs)), 0), max(math.floor(min(ys)), 0),
                      min(math.ceil(max(xs)), bounds[0]), min(math.ceil(max(ys)), bounds[1])))
    (l1, t1, r1, b1), (l2, t2, r2, b2) = boxes
    x0, y0 = min(l1, l2), min(t1, t2)
    width, height = int(max(r1, r2) - x0) + 1, int(max(b1, b2) - y0) + 1
    a1, a2 = (r1 - l1) * (b1 - t1), (r2 - l2) * (b2 - t2)
    if a1 == 0 or a2 == 0 or a1 / a2 < 1e-10 or a2 / a1 < 1e-10 or width < 1 or height < 1:
        return 0.0
    inter = (min(r1, r2) - max(l1, l2)) * (min(b1, b2) - max(t1, t2))
    if max(0.0, inter / (a1 + a2 - inter)) == 0:
        return 0.0
    m1 = _raster([(x - x0, y - y0) for x, y in polys[0]], width, height)
    m2 = _raster([(x - x0, y - y0) for x, y in polys[1]], width, height)
    union = (m1 | m2).sum()
    return float((m1 & m2).sum() / union) if union else 0.0


# -- hand-computed cases ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "bounds", "expected"),
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], (100, 100), 1.0),
        # 11x11 = 121 pixels each (an integer rect covers (w+1)(h+1)); columns 5..10 shared: 66 / 176.
        ([0, 0, 10, 10], [5, 0, 10, 10], (100, 100), 66 / 176),
        # Partly outside: only the in-image part (columns/rows 0..5) counts, which equals b exactly.
        ([-5, -5, 10, 10], [0, 0, 5, 5], (100, 100), 1.0),
        # The bounds cut both: a right half beyond W=8 is dropped -> columns 4..8 vs 0..8 on rows 0..4: 25/45.
        ([4, 0, 10, 4], [0, 0, 8, 4], (8, 100), 25 / 45),
        ([0, 0, 10, 10], [20, 20, 5, 5], (100, 100), 0.0),  # disjoint
        ([10, 10, 0, 0], [0, 0, 20, 20], (100, 100), 0.0),  # degenerate zero-area box
        # A diamond (rotated square) vs its bounding rect: rows 0..10, diamond spans shrink towards the tips,
        # and the tip rows fill nothing (equal nodes): value from the spec's walk, checked by the oracle too.
        ([5, 0, 10, 5, 5, 10, 0, 5], [0, 0, 10, 10], (100, 100), None),
    ],
)
def test_hand_cases(a, b, bounds, expected):
    got = overlap(a, b, bounds)
    want = oracle(a, b, bounds) if expected is None else expected
    assert got == pytest.approx(want, abs=1e-12)
    if expected is not None:
        assert oracle(a, b, bounds) == pytest.approx(expected, abs=1e-12)


def test_markers_give_nan_and_shapes_are_checked():
    assert math.isnan(overlap([1], [0, 0, 5, 5], (10, 10)))
    out = overlaps(np.array([[np.nan] * 4, [0, 0, 5, 5]]), np.array([[0, 0, 5, 5]] * 2, float), (10, 10))
    assert math.isnan(out[0]) and out[1] == 1.0
    with pytest.raises(ValueError, match="shape"):
        as_polygons(np.zeros((3, 5)))


def test_rect_becomes_corners_without_minus_one():
    np.testing.assert_array_equal(as_polygons(np.array([[1, 2, 3, 4]]))[0], [[1, 2], [4, 2], [4, 6], [1, 6]])


def _random_regions(rng: np.random.Generator, n: int) -> list[tuple[list[float], list[float], tuple[int, int]]]:
    cases = []
    for _ in range(n):
        W, H = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        kind = rng.integers(0, 4)
        cx, cy = rng.uniform(-10, W + 10), rng.uniform(-10, H + 10)
        w, h, ang = rng.uniform(0.5, 40), rng.uniform(0.5, 40), rng.uniform(0, np.pi)
        c, s = np.cos(ang), np.sin(ang)
        corners = [(cx + c * dx - s * dy, cy + s * dx + c * dy) for dx, dy in
                   ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))]
        gt = [float(v) for p in corners for v in p]
        if kind == 0:  # a tracker box near the gt
            pred = [cx - w / 2 + rng.normal(0, 5), cy - h / 2 + rng.normal(0, 5), w * rng.uniform(0.5, 1.5),
                    h * rng.uniform(0.5, 1.5)]
        elif kind == 1:  # integer and half-integer coordinates (rounding ties)
            pred = [float(rng.integers(-5, W)) + 0.5 * rng.integers(0, 2) for _ in range(2)] + \
                   [float(rng.integers(0, 30)) + 0.5 * rng.integers(0, 2) for _ in range(2)]
            gt = [round(v * 2) / 2 for v in gt]
        elif kind == 2:  # an arbitrary (often non-convex or self-intersecting) quadrilateral
            pred = [float(v) for v in rng.uniform(-5, max(W, H) + 5, size=8)]
        else:  # two rotated rectangles
            pred = [v + rng.normal(0, 3) for v in gt]
        cases.append((pred, gt, (W, H)))
    return cases


def test_vectorised_equals_the_literal_oracle_on_random_regions():
    rng = np.random.default_rng(0)
    cases = _random_regions(rng, 400)
    for bounds_shift in (0, 1):  # (W, H) as for failures/accuracy and (W-1, H-1) as for EAO
        rects = [c for c in cases if len(c[0]) == 4]
        polys = [c for c in cases if len(c[0]) == 8]
        for group in (rects, polys):
            a = np.array([c[0] for c in group])
            b = np.array([c[1] for c in group])
            bnd = np.array([(c[2][0] - bounds_shift, c[2][1] - bounds_shift) for c in group], float)
            got = overlaps(a, b, bnd)
            want = np.array([oracle(c[0], c[1], tuple(bb)) for c, bb in zip(group, bnd, strict=True)])
            np.testing.assert_allclose(got, want, atol=1e-12)
            assert (want > 0).sum() > len(group) // 4  # the sample exercises real overlaps, not only zeros


def test_close_to_got10k_analytic_iou_for_large_regions():
    got10k_metrics = import_oracle("got10k.utils.metrics")
    rng = np.random.default_rng(1)
    gt, pred = [], []
    for _ in range(50):
        cx, cy, w, h, ang = 200, 150, rng.uniform(60, 120), rng.uniform(60, 120), rng.uniform(0, np.pi)
        c, s = np.cos(ang), np.sin(ang)
        gt.append([v for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
                   for v in (cx + c * dx - s * dy, cy + s * dx + c * dy)])
        pred.append([cx - w / 2 + rng.normal(0, 10), cy - h / 2 + rng.normal(0, 10), w, h])
    ours = overlaps(np.array(pred), np.array(gt), (400, 300))
    theirs = got10k_metrics.poly_iou(np.array(pred), np.array(gt), bound=(400, 300))
    # Pixel masks (with the +1 pixel rim) vs exact areas: a few percent apart on 60-120 px objects.
    np.testing.assert_allclose(ours, theirs, atol=0.04)
    assert abs(ours.mean() - theirs.mean()) < 0.02
