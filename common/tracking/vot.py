"""VOT supervised (reset) protocol and its Accuracy / Robustness / EAO, as pysot's python toolkit defines them.

Written from shared/specs/siamrpn.md sections 10 (protocol, result files) and 12 (metrics). One run per sequence
(the trackers here are deterministic). Definitions in brief:
- protocol: init from the ground truth (`1`), track and test the overlap within (W, H); overlap <= 0 is a failure
  (`2`), the next 4 frames are skipped (`0`) and frame f+5 re-initialises;
- Accuracy: overlaps within (W, H) with 10 frames after every init masked, nanmean pooled over all frames of all
  sequences (long sequences weigh more);
- Robustness: failures per 100 frames, pooled (failures / total frames x 100) -- *not* the vot-toolkit's
  per-sequence definition;
- EAO: fragments split at failure + 5, overlaps within (W-1, H-1), expected average overlap curve averaged over
  [low, high] (VOT2016: [108, 371]); fragment weights and the float32 curve as pysot has them (see `eao_curve`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from common.errors import InputError
from common.tracking.region import overlaps, overlaps_multi

SKIPPED, INIT, FAILURE, TRACKED = 0, 1, 2, 3
SKIP_AFTER_FAILURE = 5
BURNIN = 10
EAO_INTERVALS = {"VOT2016": (108, 371), "VOT2017": (100, 356), "VOT2018": (100, 356), "VOT2019": (46, 291)}


@dataclass
class Trajectory:
    """One sequence's supervised result: `flags` (N,) int8 in {SKIPPED, INIT, FAILURE, TRACKED} and `boxes` (N,4)
    float64 [x, y, w, h], NaN wherever the flag is not TRACKED."""

    flags: np.ndarray
    boxes: np.ndarray
    seconds: float = 0.0  # summed per-frame tracker time (image decoding excluded), spec section 10

    def __post_init__(self) -> None:
        self.flags = np.asarray(self.flags, dtype=np.int8)
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if len(self.flags) != len(self.boxes):
            raise ValueError(f"{len(self.flags)} flags vs {len(self.boxes)} boxes")

    @property
    def failures(self) -> int:
        return int((self.flags == FAILURE).sum())

    def regions(self) -> np.ndarray:
        """(N,4) boxes with NaN at markers (what the overlap functions take)."""
        out = self.boxes.copy()
        out[self.flags != TRACKED] = np.nan
        return out


@dataclass(frozen=True)
class SequenceGT:
    """Ground truth of one sequence: (N,8) polygons (4-value rects converted) and the frame size (W, H)."""

    name: str
    polygons: np.ndarray
    size: tuple[int, int]


# -- result files -----------------------------------------------------------------------------------------
def format_trajectory(traj: Trajectory) -> str:
    """pysot's `<video>_001.txt`: one line per frame, `1` / `2` / `0` or `x,y,w,h` with %.4f."""
    lines = []
    for flag, box in zip(traj.flags, traj.boxes, strict=True):
        lines.append(",".join(f"{v:.4f}" for v in box) if flag == TRACKED else str(int(flag)))
    return "\n".join(lines) + "\n"


def parse_trajectory(text: str, source: str | Path) -> Trajectory:
    """Inverse of `format_trajectory`; errors name `source` and the line."""
    flags, boxes = [], []
    for no, line in enumerate(text.splitlines(), 1):
        parts = line.strip().split(",")
        if len(parts) == 1 and parts[0] in ("0", "1", "2"):
            flags.append(int(parts[0]))
            boxes.append([np.nan] * 4)
        elif len(parts) == 4:
            try:
                boxes.append([float(p) for p in parts])
            except ValueError:
                raise InputError(source, f"line {no}: not 4 numbers: {line.strip()!r}") from None
            flags.append(TRACKED)
        else:
            raise InputError(source, f"line {no}: expected 0, 1, 2 or x,y,w,h, got {line.strip()!r}")
    return Trajectory(np.array(flags, np.int8), np.array(boxes, np.float64).reshape(-1, 4))


def write_trajectory(path: Path, traj: Trajectory) -> None:
    """Write atomically (a per-sequence file that exists is complete: resumable evaluations rely on it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(format_trajectory(traj))
    tmp.replace(path)


def read_trajectory(path: Path) -> Trajectory:
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(path, f"cannot read result file: {e.strerror}") from None
    return parse_trajectory(text, path)


# -- ground truth helpers ---------------------------------------------------------------------------------
def rect_to_polygon(rects: np.ndarray) -> np.ndarray:
    """(N,4) [x, y, w, h] -> (N,8) as pysot converts 4-value VOT ground truth: [x, y, x, y+h-1, x+w-1, y+h-1,
    x+w-1, y] (note the -1, unlike the overlap's rect-to-polygon)."""
    x, y, w, h = np.asarray(rects, dtype=np.float64).T
    return np.stack([x, y, x, y + h - 1, x + w - 1, y + h - 1, x + w - 1, y], axis=1)


def init_box(polygon: np.ndarray) -> np.ndarray:
    """Axis-aligned [x, y, w, h] from an 8-value polygon with the polygon's area (spec section 10)."""
    p = np.asarray(polygon, dtype=np.float64).reshape(4, 2)
    cx, cy = p[:, 0].mean(), p[:, 1].mean()
    x1, x2, y1, y2 = p[:, 0].min(), p[:, 0].max(), p[:, 1].min(), p[:, 1].max()
    a1 = np.linalg.norm(p[0] - p[1]) * np.linalg.norm(p[1] - p[2])
    a2 = (x2 - x1) * (y2 - y1)
    s = np.sqrt(a1 / a2) if a2 > 0 else 1.0
    w, h = s * (x2 - x1) + 1, s * (y2 - y1) + 1
    return np.array([cx - (w - 1) / 2, cy - (h - 1) / 2, w, h])


# -- protocol ---------------------------------------------------------------------------------------------
class SupervisedTracker(Protocol):
    """What the protocol drives: `init` on a BGR uint8 frame with an [x, y, w, h] box, `track` returns one."""

    def init(self, frame: np.ndarray, box: np.ndarray) -> None: ...

    def track(self, frame: np.ndarray) -> np.ndarray: ...


def run_supervised(tracker: SupervisedTracker, frames: Sequence[Callable[[], np.ndarray]] | Sequence[np.ndarray],
                   gt: SequenceGT, *, skip: int = SKIP_AFTER_FAILURE) -> Trajectory:
    """Run the reset protocol over one sequence. `frames` holds arrays or zero-argument loaders (decoding is not
    timed, as in pysot). Returns the trajectory with the summed per-frame time of init/track + overlap check."""
    n = len(gt.polygons)
    if len(frames) != n:
        raise InputError(gt.name, f"{len(frames)} frames but {n} ground-truth lines")
    flags = np.zeros(n, np.int8)
    boxes = np.full((n, 4), np.nan)
    restart = 0
    seconds = 0.0
    for idx in range(n):
        if idx < restart:
            continue  # skipped frames are not even decoded
        item = frames[idx]
        frame = item() if callable(item) else item
        t0 = time.perf_counter()
        if idx == restart:
            tracker.init(frame, init_box(gt.polygons[idx]))
            flags[idx] = INIT
        else:
            box = np.asarray(tracker.track(frame), dtype=np.float64).reshape(4)
            ov = overlaps(box[None], gt.polygons[idx][None], gt.size)[0]
            if ov > 0:
                flags[idx], boxes[idx] = TRACKED, box
            else:
                flags[idx] = FAILURE
                restart = idx + skip
        seconds += time.perf_counter() - t0
    return Trajectory(flags, boxes, seconds)


# -- metrics ----------------------------------------------------------------------------------------------
@dataclass
class SequenceScore:
    name: str
    frames: int
    failures: int
    accuracy: float  # nanmean of this sequence's burn-in-masked overlaps (the dataset A pools frames instead)


@dataclass
class VotScores:
    accuracy: float
    robustness: float
    lost: float
    eao: float
    frames: int
    per_sequence: list[SequenceScore] = field(default_factory=list)
    curve: np.ndarray = field(default_factory=lambda: np.zeros(0))
    interval: tuple[int, int] = (0, 0)

    def as_dict(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "robustness": self.robustness, "lost": self.lost, "eao": self.eao,
                "frames": float(self.frames), "eao_low": float(self.interval[0]), "eao_high": float(self.interval[1])}


def _burnin_mask(flags: np.ndarray, burnin: int) -> np.ndarray:
    """True where a frame lies within `burnin` frames from an init (inclusive of the init frame)."""
    starts = np.zeros(len(flags) + 1, np.int64)
    inits = np.flatnonzero(flags == INIT)
    np.add.at(starts, inits, 1)
    np.add.at(starts, np.minimum(inits + burnin, len(flags)), -1)
    return np.cumsum(starts)[:-1] > 0


def evaluate(trajs: Mapping[str, Trajectory], gts: Mapping[str, SequenceGT], *, dataset: str = "VOT2016",
             burnin: int = BURNIN, skip: int = SKIP_AFTER_FAILURE, short_fallback: bool = False) -> VotScores:
    """A / R / lost number / EAO over the sequences of `gts`. Every sequence must have a trajectory: a dataset
    score over a subset would be silently wrong, so a missing one is an error naming it.

    EAO averages the curve over the dataset's interval; when every sequence is shorter than its low end (short
    synthetic demo sequences) the interval is empty and EAO is NaN, unless `short_fallback` asks for the whole
    curve [1, M] instead. `VotScores.interval` records the interval used."""
    missing = sorted(set(gts) - set(trajs))
    if missing:
        raise InputError(None, f"no result for {len(missing)} sequence(s): {', '.join(missing[:10])}"
                               f"{' ...' if len(missing) > 10 else ''}; no dataset-level score is reported")
    names = sorted(gts)
    # One vectorised overlap call for the whole dataset, both bounds at once (rasterised once).
    regs, polys, bounds_a, bounds_e, lengths = [], [], [], [], []
    for name in names:
        t, g = trajs[name], gts[name]
        n = min(len(t.flags), len(g.polygons))
        regs.append(t.regions()[:n])
        polys.append(g.polygons[:n])
        w, h = g.size
        bounds_a.append(np.tile([w, h], (n, 1)))
        bounds_e.append(np.tile([w - 1, h - 1], (n, 1)))
        lengths.append(n)
    ov_a, ov_e = overlaps_multi(np.concatenate(regs), np.concatenate(polys),
                                [np.concatenate(bounds_a), np.concatenate(bounds_e)])
    splits = np.cumsum(lengths)[:-1]
    per_a, per_e = np.split(ov_a, splits), np.split(ov_e, splits)

    pooled, per_seq, failures = [], [], 0
    for name, n, oa in zip(names, lengths, per_a, strict=True):
        flags = trajs[name].flags[:n]
        oa = oa.copy()
        oa[_burnin_mask(flags, burnin)] = np.nan
        pooled.append(oa)
        f = int((flags == FAILURE).sum())
        failures += f
        with np.errstate(all="ignore"):
            acc = float(np.nanmean(oa)) if np.isfinite(oa).any() else float("nan")
        per_seq.append(SequenceScore(name, n, f, acc))
    all_a = np.concatenate(pooled)
    total = int(sum(lengths))
    accuracy = float(np.nanmean(all_a)) if np.isfinite(all_a).any() else float("nan")
    robustness = failures / total * 100 if total else float("nan")
    curve = eao_curve([trajs[nm].flags for nm in names], per_e, skip=skip,
                      gt_lengths=[len(gts[nm].polygons) for nm in names])
    low, high = EAO_INTERVALS[dataset]
    if short_fallback and len(curve) < low:
        low, high = 1, len(curve)
    window = curve[low - 1:high]
    eao = float(np.nanmean(window)) if window.size else float("nan")
    return VotScores(accuracy, robustness, float(failures), eao, total, per_seq, curve, (low, high))


def eao_curve(flags_list: Sequence[np.ndarray], overlaps_list: Sequence[np.ndarray], *,
              skip: int = SKIP_AFTER_FAILURE, gt_lengths: Sequence[int] | None = None) -> np.ndarray:
    """Expected average overlap Phi[0..M-1] (Phi[0] = 1) from per-sequence flags and (W-1, H-1) overlaps
    (NaN at markers), as pysot's `eao_benchmark` + `calculate_expected_overlap` compute it (spec section 12.3,
    tag `all`, one run). `flags_list` may be longer than the overlaps (pysot finds failures in the whole result
    file); `gt_lengths` are the ground-truth lengths G (default: the overlaps' lengths), which only matter for
    a result file shorter than its ground truth.

    Fragments per sequence, P = [0] + [f + skip for each failure f if f + skip <= n] (n = len(overlaps)):
    - no failure at all: one row = the overlaps as they are (NaN kept), NaN-extended, weight 1;
    - otherwise (even when every failure lies in the last `skip` frames, so P = [0]): every segment's NaN -> 0;
      segment k < last = o[P_k .. P_k+1] (inclusive of the re-init frame), zero-extended; the last = o[P_last:],
      NaN-extended. This is where the old code differed: it took "P = [0]" for "no failure" and kept the NaN of
      a failure in the last 4 frames (and of the skipped frames after it), so those frames did not count as 0.

    Upstream quirks reproduced on purpose (they change the numbers, and EAO must equal pysot's):
    - fragment weights are "the fraction of `all`-tagged frames" of the fragment's range, but the numerator
      slices the tag list (length G) while the denominator is the nominal range length. Segment k < last has the
      range [P_k, P_k+1 + 1): when a failure at f = G - skip puts a split point at P_k+1 = G (the re-init would
      be one frame past the end), that range is cut short at G and the weight is (G - P_k) / (G - P_k + 1), not
      1; the empty fragment that "starts" at G has weight 0 (and no values). The last segment's weight is
      (min(n, G) - P_last) / (G - P_last + 1e-16): 1 for a complete result file, < 1 for a truncated one;
    - a no-failure row keeps its NaN, so a marker inside it (not produced by the protocol) makes every later
      Phi[i] it takes part in NaN (EAO then skips those lengths, as pysot's `is_valid` does);
    - Phi is stored in a float32 array upstream: the curve is rounded to float32 (kept as float64 here, so the
      EAO mean over it is taken in float64 as upstream's is).
    The common factor 1/runs (pysot's `seq_weight`) cancels and is left out."""
    n_seq = len(overlaps_list)
    lens = np.array([len(o) for o in overlaps_list], np.int64)
    gts = lens if gt_lengths is None else np.asarray(gt_lengths, np.int64)
    max_len = int(lens.max(initial=0))
    curve = np.zeros(max_len)
    if n_seq == 0 or max_len == 0:
        return curve
    # Per fragment: sequence, start, copied length, NaN->0?, tail fill (0 or NaN), weight.
    seq_i, starts, ncopy, zero_nan, zero_tail, weights = [], [], [], [], [], []
    for s, (flags, n, g) in enumerate(zip(flags_list, lens, gts, strict=True)):
        fails = np.flatnonzero(np.asarray(flags) == FAILURE)
        if fails.size == 0:
            pts, sizes, wts, failed = np.zeros(1, np.int64), np.array([n]), np.ones(1), False
        else:
            pts = np.r_[0, fails[fails + skip <= n] + skip]
            nxt = pts[1:]  # segments k < last end at the next split point, inclusive
            sizes = np.r_[np.minimum(nxt + 1, n) - pts[:-1], n - pts[-1]]
            wts = np.r_[(np.minimum(nxt + 1, g) - pts[:-1]) / (nxt - pts[:-1] + 1),
                        max(min(n, g) - pts[-1], 0) / (g - pts[-1] + 1e-16)]
            failed = True
        seq_i.append(np.full(len(pts), s))
        starts.append(pts)
        ncopy.append(sizes)
        weights.append(wts)
        zero_nan.append(np.full(len(pts), failed))
        zero_tail.append(np.r_[np.full(len(pts) - 1, failed), False])
    seq_i, starts, ncopy = (np.concatenate(a).astype(np.int64) for a in (seq_i, starts, ncopy))
    zero_nan, zero_tail = np.concatenate(zero_nan), np.concatenate(zero_tail)
    w = np.concatenate(weights).astype(np.float64)
    # Scatter every fragment's values into one (fragments, M) matrix at once.
    flat = np.concatenate([np.asarray(o, np.float64) for o in overlaps_list])
    offsets = np.r_[0, np.cumsum(lens)[:-1]]
    rows = np.repeat(np.arange(len(w)), ncopy)
    cols = np.arange(int(ncopy.sum())) - np.repeat(np.cumsum(ncopy) - ncopy, ncopy)
    vals = flat[np.repeat(offsets[seq_i] + starts, ncopy) + cols]
    vals = np.where(np.repeat(zero_nan, ncopy) & np.isnan(vals), 0.0, vals)
    frag = np.repeat(np.where(zero_tail, 0.0, np.nan)[:, None], max_len, axis=1)
    frag[rows, cols] = vals
    # mean(row[1..i]) for every i at once (column 0, the init frame, is excluded). A NaN tail never enters a
    # used sum (its columns are not "present"); an interior NaN of a no-failure row propagates, as upstream.
    body = frag[:, 1:]
    present = ~np.isnan(body)
    means = np.cumsum(body, axis=1) / np.arange(1, max_len)
    num = np.where(present, w[:, None] * means, 0.0).sum(axis=0)
    den = np.where(present, w[:, None], 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve[1:] = np.where(present.any(axis=0), num / den, 0.0)
    curve[0] = 1.0
    return curve.astype(np.float32).astype(np.float64)


# -- benchmark --------------------------------------------------------------------------------------------
def synthetic_results(seed: int = 0, *, sequences: int = 60, frames: int = 21455,
                      size: tuple[int, int] = (640, 480)) -> tuple[dict[str, Trajectory], dict[str, SequenceGT]]:
    """A VOT2016-sized result set (60 sequences, 21,455 frames, rotated-rectangle ground truth of 20-120 px,
    tracker boxes near it, ~1 failure per 500 frames) for benchmarks and tests."""
    rng = np.random.default_rng(seed)
    lengths = rng.multinomial(frames - 41 * sequences, np.ones(sequences) / sequences) + 41
    trajs, gts = {}, {}
    for s, n in enumerate(lengths):
        t = np.arange(n)
        cx = size[0] / 2 + 150 * np.sin(t / 50 + s)
        cy = size[1] / 2 + 100 * np.cos(t / 70 + s)
        w = 20 + 100 * rng.random() + 10 * np.sin(t / 30)
        h = 20 + 100 * rng.random() + 10 * np.cos(t / 40)
        ang = 0.3 * np.sin(t / 60 + s)
        c, si = np.cos(ang), np.sin(ang)
        corners = [(cx + c * dx - si * dy, cy + si * dx + c * dy)
                   for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))]
        poly = np.stack([v for p in corners for v in p], axis=1)
        flags = np.full(n, TRACKED, np.int8)
        boxes = np.stack([cx - w / 2 + rng.normal(0, 4, n), cy - h / 2 + rng.normal(0, 4, n), w, h], axis=1)
        idx = 0
        flags[0] = INIT
        for f in np.sort(rng.choice(np.arange(20, n), size=rng.poisson(n / 500), replace=False)):
            if f <= idx:
                continue
            flags[f] = FAILURE
            flags[f + 1:f + SKIP_AFTER_FAILURE] = SKIPPED
            if f + SKIP_AFTER_FAILURE < n:
                flags[f + SKIP_AFTER_FAILURE] = INIT
            idx = f + SKIP_AFTER_FAILURE
        boxes[flags != TRACKED] = np.nan
        name = f"seq{s:02d}"
        trajs[name] = Trajectory(flags, boxes)
        gts[name] = SequenceGT(name, poly, size)
    return trajs, gts


def benchmark(seed: int = 0, repeats: int = 3) -> dict[str, float]:
    """Time A/R/EAO (overlaps included) over a VOT2016-sized synthetic result set; best of `repeats`."""
    trajs, gts = synthetic_results(seed)
    best = float("inf")
    scores = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        scores = evaluate(trajs, gts)
        best = min(best, time.perf_counter() - t0)
    assert scores is not None
    return {"seconds": best, "frames": float(scores.frames), "sequences": float(len(gts)),
            "accuracy": scores.accuracy, "robustness": scores.robustness, "eao": scores.eao}
