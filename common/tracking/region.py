"""VOT region overlap as pysot's `vot_overlap` (region.c, non-legacy rasterisation) computes it: a pixel-mask IoU
of two regions inside image bounds, vectorised over frames. Written from shared/specs/siamrpn.md section 11.

Regions are float arrays: a rectangle `[x, y, w, h]` (4 values) becomes the polygon (x, y), (x+w, y), (x+w, y+h),
(x, y+h) with no -1; a polygon is `[x1, y1, ..., xk, yk]`. A row of NaN is a marker (init / failure / skipped
frame) and gives a NaN overlap.

Why rows, not masks: both masks are unions of horizontal spans per row, so |M1 & M2| and |M1 | M2| follow from
span arithmetic without materialising any mask. For a convex polygon (what VOT ground truth and tracker boxes are)
the region.c node walk reduces to one span [min node, max node] per row; anything else (non-convex after vertex
rounding, degenerate) takes the general walk, still vectorised over rows.
"""

from __future__ import annotations

import numpy as np

__all__ = ["as_polygons", "overlaps", "overlaps_multi", "overlap"]


def as_polygons(regions: np.ndarray) -> np.ndarray:
    """(N,4) rects or (N,2k) polygons -> (N,k,2) float64 vertices (rects as 4 corners, no -1)."""
    r = np.asarray(regions, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 4 or r.shape[1] % 2:
        raise ValueError(f"regions must be (N,4) rects or (N,2k) polygons with k >= 3, got shape {r.shape}")
    if r.shape[1] == 4:
        x, y, w, h = r.T
        return np.stack([np.stack([x, y], 1), np.stack([x + w, y], 1),
                         np.stack([x + w, y + h], 1), np.stack([x, y + h], 1)], axis=1)
    if r.shape[1] < 6:
        raise ValueError(f"a polygon needs at least 3 vertices, got {r.shape[1]} values per row")
    return r.reshape(len(r), -1, 2)


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """C `round`: halves go away from zero (numpy's rint would go to even)."""
    return np.copysign(np.floor(np.abs(v) + 0.5), v)


def _nodes(px: np.ndarray, py: np.ndarray, frame: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge crossings of each row. px, py (N,K) integer-valued vertices per frame; frame (R,) the frame of each
    row, rows (R,) the row. Returns (nodes (R,K) float64 truncated toward zero, valid (R,K) bool). Edge k runs
    from vertex k-1 to vertex k."""
    xj, yj = np.roll(px, 1, axis=1), np.roll(py, 1, axis=1)
    lo, hi = np.minimum(py, yj)[frame], np.maximum(py, yj)[frame]
    dy = (yj - py)[frame]
    r = rows[:, None]
    valid = (lo <= r) & (r <= hi) & (dy != 0)  # the four span conditions of region.c, unioned: a closed interval
    yi = py[frame]
    with np.errstate(divide="ignore", invalid="ignore"):
        # Division before multiplication, as the C expression is evaluated; trunc toward zero like an int cast.
        t = np.subtract(r, yi, out=yi)
        t /= dy
        t *= (xj - px)[frame]
        t += px[frame]
        nodes = np.trunc(t, out=t)
    return nodes, valid


def _general_spans(nodes: np.ndarray, valid: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The region.c walk over sorted nodes, vectorised over rows; touching spans are merged so the returned
    spans of a row are disjoint. Returns (start, end) (R, S); empty slots have start > end."""
    n_rows, k = nodes.shape
    srt = np.sort(np.where(valid, nodes, np.inf), axis=1)
    count = valid.sum(axis=1)
    slots = k // 2 + 1
    start = np.ones((n_rows, slots))
    end = np.zeros((n_rows, slots))
    used = np.zeros(n_rows, dtype=np.int64)
    i = np.zeros(n_rows, dtype=np.int64)
    done = np.zeros(n_rows, dtype=bool)
    rows = np.arange(n_rows)
    for _ in range(k):
        active = ~done & (i < count - 1)
        if not active.any():
            break
        a = srt[rows, np.minimum(i, k - 1)]
        b = srt[rows, np.minimum(i + 1, k - 1)]
        same = active & (a == b)
        stop = active & ~same & (a >= width)
        pair = active & ~same & ~stop
        fill = pair & (b >= 0)
        s, e = np.maximum(a, 0), np.minimum(b, width - 1)
        last = np.maximum(used - 1, 0)
        merge = fill & (used > 0) & (s <= end[rows, last])
        end[rows[merge], last[merge]] = np.maximum(end[rows[merge], last[merge]], e[merge])
        new = fill & ~merge
        start[rows[new], used[new]] = s[new]
        end[rows[new], used[new]] = e[new]
        used += new
        done |= stop
        i += np.where(same, 1, np.where(pair, 2, 0))
    return start, end


def _convex(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """(N,K) integer vertices -> (N,) strictly convex with non-zero area (fast-path eligibility)."""
    ex, ey = np.roll(px, -1, axis=1) - px, np.roll(py, -1, axis=1) - py
    cross = ex * np.roll(ey, -1, axis=1) - ey * np.roll(ex, -1, axis=1)
    return ((cross > 0).all(axis=1) | (cross < 0).all(axis=1))


def _axis_aligned_rects(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """(N,) whether each rounded 4-gon is an axis-aligned rectangle (its spans are then one constant [xmin, xmax]
    on rows ymin..ymax, no per-row node arithmetic needed)."""
    if px.shape[1] != 4:
        return np.zeros(len(px), dtype=bool)
    xs, ys = np.sort(px, axis=1), np.sort(py, axis=1)
    corners = (xs[:, 0] == xs[:, 1]) & (xs[:, 2] == xs[:, 3]) & (ys[:, 0] == ys[:, 1]) & (ys[:, 2] == ys[:, 3])
    # Consecutive vertices must differ in exactly one coordinate (a rectangle traversed around its boundary).
    ex, ey = np.roll(px, -1, axis=1) - px, np.roll(py, -1, axis=1) - py
    axis_edges = ((ex == 0) ^ (ey == 0)).all(axis=1)
    return corners & axis_edges


def overlaps_multi(a: np.ndarray, b: np.ndarray, bounds: list[tuple[float, float] | np.ndarray]) -> np.ndarray:
    """Overlaps of the same region pairs under several bounds (e.g. (W, H) for accuracy and (W-1, H-1) for EAO),
    rasterising once: the grid origin does not depend on the right/bottom bounds, only the clipping does.
    Returns (len(bounds), N)."""
    pa, pb = as_polygons(a), as_polygons(b)
    if len(pa) != len(pb):
        raise ValueError(f"a has {len(pa)} regions, b has {len(pb)}")
    n, m = len(pa), len(bounds)
    bnd = np.stack([np.broadcast_to(np.asarray(bb, dtype=np.float64), (n, 2)) for bb in bounds])  # (M,N,2)
    out = np.full((m, n), np.nan)
    live = np.isfinite(pa).all(axis=(1, 2)) & np.isfinite(pb).all(axis=(1, 2))
    if not live.any():
        return out
    idx = np.flatnonzero(live)
    pa, pb, bnd = pa[idx], pb[idx], bnd[:, idx]

    def box(p: np.ndarray) -> tuple[np.ndarray, ...]:
        # Vertex bbox rounded outward, then intersected with the bounds: (N,) left/top, (M,N) right/bottom.
        left = np.maximum(np.floor(p[..., 0].min(1)), 0.0)
        top = np.maximum(np.floor(p[..., 1].min(1)), 0.0)
        right = np.minimum(np.ceil(p[..., 0].max(1)), bnd[..., 0])
        bottom = np.minimum(np.ceil(p[..., 1].max(1)), bnd[..., 1])
        return left, top, right, bottom

    l1, t1, r1, b1 = box(pa)
    l2, t2, r2, b2 = box(pb)
    x0, y0 = np.minimum(l1, l2), np.minimum(t1, t2)
    width = np.trunc(np.maximum(r1, r2) - x0) + 1
    height = np.trunc(np.maximum(b1, b2) - y0) + 1
    a1, a2 = (r1 - l1) * (b1 - t1), (r2 - l2) * (b2 - t2)
    inter_box = (np.minimum(r1, r2) - np.maximum(l1, l2)) * (np.minimum(b1, b2) - np.maximum(t1, t2))
    with np.errstate(divide="ignore", invalid="ignore"):
        tiny = (a1 / a2 < 1e-10) | (a2 / a1 < 1e-10)
        box_iou = np.maximum(0.0, inter_box / (a1 + a2 - inter_box))  # NaN stays NaN -> rasterise, as in C
    zero = tiny | (width < 1) | (height < 1) | (box_iou == 0)  # (M,N)
    res = np.zeros((m, len(idx)))
    todo = np.flatnonzero(~zero.all(axis=0))
    if todo.size:
        ras = _raster_iou(pa[todo], pb[todo], x0[todo], y0[todo], width[:, todo], height[:, todo])
        res[:, todo] = np.where(zero[:, todo], 0.0, ras)
    out[:, idx] = res
    return out


def overlaps(a: np.ndarray, b: np.ndarray, bounds: tuple[float, float] | np.ndarray) -> np.ndarray:
    """Per-frame region overlap of `a` and `b` (each (N,4) rects or (N,2k) polygons; NaN rows are markers)
    within `bounds` = (W, H) or an (N,2) array of per-frame bounds (left/top are 0). Returns (N,) float64, NaN
    where either region is a marker."""
    return overlaps_multi(a, b, [bounds])[0]


def _spans(px: np.ndarray, py: np.ndarray, frame: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spans of polygon (px, py) on the given rows before the right-hand clip: (start, end) (R, S), empty slots
    have start > end. The walk's width rules (stop at a node >= width, skip a pair ending left of 0, cut to
    [0, width-1]) amount to intersecting each span with [0, width-1], so they are applied afterwards, once per
    bounds set."""
    k = px.shape[1]
    convex = _convex(px, py)
    slots = 1 if convex.all() else k // 2 + 1  # the general walk may need several spans per row
    start = np.ones((len(rows), slots))
    end = np.zeros_like(start)
    rect = _axis_aligned_rects(px, py)
    is_rect = rect[frame]
    if is_rect.any():
        rr = np.flatnonzero(is_rect)
        f = frame[rr]
        xmin, xmax, ymin, ymax = px.min(1)[f], px.max(1)[f], py.min(1)[f], py.max(1)[f]
        # Only the vertical edges give nodes (rows ymin..ymax inclusive); equal nodes fill nothing.
        inside = (rows[rr] >= ymin) & (rows[rr] <= ymax) & (xmin < xmax) & (ymin < ymax)
        start[rr, 0] = np.where(inside, xmin, 1.0)
        end[rr, 0] = np.where(inside, xmax, 0.0)
    other = np.flatnonzero(~is_rect)
    if other.size:
        fo = frame[other]
        nodes, valid = _nodes(px, py, fo, rows[other])
        lo = np.where(valid, nodes, np.inf).min(axis=1)
        hi = np.where(valid, nodes, -np.inf).max(axis=1)
        ok = np.isfinite(lo) & (lo < hi)
        start[other, 0] = np.where(ok, lo, 1.0)
        end[other, 0] = np.where(ok, hi, 0.0)
        slow = np.flatnonzero(~convex[fo])
        if slow.size:
            gs, ge = _general_spans(nodes[slow], valid[slow], np.full(slow.size, np.inf))
            start[other[slow]], end[other[slow]] = gs, ge
    return start, end


ROWS_PER_CHUNK = 1 << 15  # rows processed at once: temporaries stay in cache (about 4x faster than one pass)


def _raster_iou(pa: np.ndarray, pb: np.ndarray, x0: np.ndarray, y0: np.ndarray, width: np.ndarray,
                height: np.ndarray) -> np.ndarray:
    """Mask IoU of polygon pairs on width x height grids (origin x0, y0; width/height (M,N) for M bounds sets),
    by per-row span arithmetic, in chunks of whole frames. Returns (M,N)."""
    ax, ay = _round_half_away(pa[..., 0] - x0[:, None]), _round_half_away(pa[..., 1] - y0[:, None])
    bx, by = _round_half_away(pb[..., 0] - x0[:, None]), _round_half_away(pb[..., 1] - y0[:, None])
    hmax = height.max(axis=0)
    r0 = np.maximum(np.minimum(ay.min(1), by.min(1)), 0)
    r1 = np.minimum(np.maximum(ay.max(1), by.max(1)), hmax - 1)
    nrows = np.maximum(r1 - r0 + 1, 0).astype(np.int64)
    ends = np.cumsum(nrows)
    out = np.zeros(width.shape)
    f0 = 0
    while f0 < len(pa):
        f1 = max(f0 + 1, int(np.searchsorted(ends, (ends[f0 - 1] if f0 else 0) + ROWS_PER_CHUNK, side="right")))
        sl = slice(f0, f1)
        out[:, sl] = _raster_chunk(ax[sl], ay[sl], bx[sl], by[sl], r0[sl], nrows[sl], width[:, sl], height[:, sl])
        f0 = f1
    return out


def _raster_chunk(ax: np.ndarray, ay: np.ndarray, bx: np.ndarray, by: np.ndarray, r0: np.ndarray,
                  nrows: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    n = len(ax)
    frame = np.repeat(np.arange(n), nrows)
    offsets = np.arange(frame.size) - np.repeat(np.cumsum(nrows) - nrows, nrows)
    rows = (r0[frame] + offsets).astype(np.float64)
    (s1, e1), (s2, e2) = _spans(ax, ay, frame, rows), _spans(bx, by, frame, rows)
    out = np.zeros(width.shape)
    for j in range(width.shape[0]):
        w, in_grid = width[j][frame][:, None], (rows <= height[j][frame] - 1)[:, None]
        clipped = []
        for s, e in ((s1, e1), (s2, e2)):
            # Intersect with [0, width-1] (see _spans); rows below the grid of this bounds set hold nothing.
            keep = (s < w) & (e >= 0) & (s <= e) & in_grid
            clipped.append((np.where(keep, np.maximum(s, 0), 1.0), np.where(keep, np.minimum(e, w - 1), 0.0)))
        (c1s, c1e), (c2s, c2e) = clipped
        area = np.maximum(c1e - c1s + 1, 0).sum(1) + np.maximum(c2e - c2s + 1, 0).sum(1)
        if c1s.shape[1] == 1 and c2s.shape[1] == 1:
            inter = np.maximum(np.minimum(c1e, c2e) - np.maximum(c1s, c2s) + 1, 0)[:, 0]
        else:
            inter = np.maximum(np.minimum(c1e[:, :, None], c2e[:, None, :])
                               - np.maximum(c1s[:, :, None], c2s[:, None, :]) + 1, 0).sum((1, 2))
        i_tot = np.bincount(frame, inter, minlength=n)
        u_tot = np.bincount(frame, area, minlength=n) - i_tot
        with np.errstate(divide="ignore", invalid="ignore"):
            out[j] = np.where(u_tot > 0, i_tot / u_tot, 0.0)
    return out


def overlap(a: np.ndarray | list[float], b: np.ndarray | list[float], bounds: tuple[float, float]) -> float:
    """Overlap of one pair of regions (4-value rect or 2k-value polygon); NaN if either has fewer than 4 values
    (a marker such as `[1]`)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size < 4 or b.size < 4:
        return float("nan")
    return float(overlaps(a[None], b[None], bounds)[0])
