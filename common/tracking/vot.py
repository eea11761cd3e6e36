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
  [low, high] (VOT2016: [108, 371]).
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
    curve = eao_curve([trajs[nm].flags[:n] for nm, n in zip(names, lengths, strict=True)], per_e, skip=skip)
    low, high = EAO_INTERVALS[dataset]
    if short_fallback and len(curve) < low:
        low, high = 1, len(curve)
    window = curve[low - 1:high]
    eao = float(np.nanmean(window)) if window.size else float("nan")
    return VotScores(accuracy, robustness, float(failures), eao, total, per_seq, curve, (low, high))


def eao_curve(flags_list: Sequence[np.ndarray], overlaps_list: Sequence[np.ndarray], *,
              skip: int = SKIP_AFTER_FAILURE) -> np.ndarray:
    """Expected average overlap Phi[0..M-1] (Phi[0] = 1) from per-sequence flags and (W-1, H-1) overlaps
    (NaN at markers), spec section 12.3."""
    max_len = max((len(o) for o in overlaps_list), default=0)
    rows = []
    for flags, o in zip(flags_list, overlaps_list, strict=True):
        fails = np.flatnonzero(flags == FAILURE)
        points = [0] + [int(f) + skip for f in fails if f + skip <= len(o)]
        if len(points) == 1:
            row = np.full(max_len, np.nan)
            row[:len(o)] = o  # no failure: as is, NaN at the init frame kept (column 0 is never averaged)
            rows.append(row)
            continue
        for k, start in enumerate(points):
            last = k == len(points) - 1
            seg = o[start:] if last else o[start:points[k + 1] + 1]  # inclusive of the re-init frame
            row = np.full(max_len, np.nan if last else 0.0)
            row[:len(seg)] = np.nan_to_num(seg, nan=0.0)
            rows.append(row)
    curve = np.zeros(max_len)
    if not rows or max_len == 0:
        return curve
    frag = np.array(rows)
    # mean(row[1..i]) for every i at once: cumulative sums over columns 1.. (NaN-extended tails are masked by
    # the "column i is non-NaN" rule, so they never enter a sum that is used).
    vals = np.nan_to_num(frag[:, 1:], nan=0.0)
    means = np.cumsum(vals, axis=1) / np.arange(1, max_len)
    present = ~np.isnan(frag[:, 1:])
    counts = present.sum(axis=0)
    sums = np.where(present, means, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve[1:] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    curve[0] = 1.0
    return curve


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
