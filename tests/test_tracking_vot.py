"""VOT supervised protocol and A / R / EAO (shared/specs/siamrpn.md sections 10 and 12).

Hand-checked cases first, then equality with a literal frame-by-frame transcription of spec section 12 (the oracle,
used only here; its EAO part follows pysot's eao_benchmark where spec 12.3 is loose: the fragment weights and the
float32 curve, see `oracle_curve`). vot-toolkit 0.9 (PyPI) installs but does not import on Python 3.11 (its
`attributee` dependency fails at import), and its A/R are per-sequence definitions anyway (spec 12.2); got10k's
VOT experiment uses an analytic overlap and its own EAO. So the cross-check for the bookkeeping is the literal
oracle; got10k is used for the overlap (test_tracking_region.py) and for OTB (test_tracking_otb.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.errors import InputError
from common.tracking.region import overlap
from common.tracking.vot import (
    FAILURE,
    INIT,
    SKIPPED,
    TRACKED,
    SequenceGT,
    Trajectory,
    _burnin_mask,
    benchmark,
    eao_curve,
    evaluate,
    format_trajectory,
    init_box,
    parse_trajectory,
    rect_to_polygon,
    run_supervised,
    synthetic_results,
)

pytestmark = pytest.mark.timeout(300)


# -- protocol ---------------------------------------------------------------------------------------------
class ScriptedTracker:
    """Returns the ground-truth box except on the frames listed in `lose`, where it returns a far-away box."""

    def __init__(self, gt: np.ndarray, lose: set[int]):
        self.gt, self.lose, self.idx, self.inits = gt, lose, 0, []

    def init(self, frame: np.ndarray, box: np.ndarray) -> None:
        self.idx = int(frame[0, 0, 0])
        self.inits.append((self.idx, box))

    def track(self, frame: np.ndarray) -> np.ndarray:
        self.idx = int(frame[0, 0, 0])
        if self.idx in self.lose:
            return np.array([500.0, 500.0, 5.0, 5.0])
        return init_box(self.gt[self.idx])


def _frames(n: int) -> list:
    return [(lambda i=i: np.full((4, 4, 3), i, np.uint8)) for i in range(n)]


def test_reset_protocol_flags_follow_the_spec():
    n = 20
    gt = rect_to_polygon(np.tile([10.0, 10.0, 20.0, 20.0], (n, 1)))
    tracker = ScriptedTracker(gt, lose={3, 17})
    traj = run_supervised(tracker, _frames(n), SequenceGT("s", gt, (100, 100)))
    expected = [INIT, TRACKED, TRACKED, FAILURE, SKIPPED, SKIPPED, SKIPPED, SKIPPED, INIT] + [TRACKED] * 8 + \
               [FAILURE, SKIPPED, SKIPPED]  # failure at 17: 17+5 >= 20, the rest stays 0
    assert traj.flags.tolist() == expected
    assert [i for i, _ in tracker.inits] == [0, 8]
    assert np.isnan(traj.boxes[traj.flags != TRACKED]).all() and np.isfinite(traj.boxes[traj.flags == TRACKED]).all()
    assert traj.failures == 2 and traj.seconds > 0


def test_frame_count_mismatch_names_the_sequence():
    gt = rect_to_polygon(np.tile([10.0, 10.0, 20.0, 20.0], (5, 1)))
    with pytest.raises(InputError, match="bag: 4 frames but 5 ground-truth lines"):
        run_supervised(ScriptedTracker(gt, set()), _frames(4), SequenceGT("bag", gt, (100, 100)))


def test_init_box_from_polygons():
    # An axis-aligned polygon in pysot's 4-value conversion gives back the rect exactly.
    np.testing.assert_allclose(init_box(rect_to_polygon(np.array([[3.0, 4.0, 10.0, 6.0]]))[0]), [3, 4, 10, 6])
    # A diamond of side sqrt(50): area 50 vs bbox 100 -> s = sqrt(1/2); w = h = 10 s + 1.
    w = 10 / math.sqrt(2) + 1
    np.testing.assert_allclose(init_box(np.array([5, 0, 10, 5, 5, 10, 0, 5.0])),
                               [5 - (w - 1) / 2, 5 - (w - 1) / 2, w, w])


def test_result_file_round_trip_and_errors():
    traj = Trajectory(np.array([INIT, TRACKED, FAILURE, SKIPPED], np.int8),
                      np.array([[np.nan] * 4, [1.23456, 2, 3, 4], [np.nan] * 4, [np.nan] * 4]))
    text = format_trajectory(traj)
    assert text == "1\n1.2346,2.0000,3.0000,4.0000\n2\n0\n"
    back = parse_trajectory(text, "x.txt")
    assert back.flags.tolist() == traj.flags.tolist()
    with pytest.raises(InputError, match="x.txt: line 2"):
        parse_trajectory("1\n1,2,3\n", "x.txt")


def test_burnin_masks_ten_frames_from_each_init():
    flags = np.array([INIT] + [TRACKED] * 14 + [FAILURE] + [SKIPPED] * 4 + [INIT] + [TRACKED] * 3, np.int8)
    m = _burnin_mask(flags, 10)
    assert m[:10].all() and not m[10:20].any() and m[20:].all()


# -- metrics: hand cases ----------------------------------------------------------------------------------
def test_eao_curve_hand_cases():
    # No failure, overlap 0.5 everywhere after the init: Phi = 0.5 for every length.
    o = np.r_[np.nan, np.full(9, 0.5)]
    curve = eao_curve([np.r_[INIT, [TRACKED] * 9].astype(np.int8)], [o])
    np.testing.assert_allclose(curve, [1] + [0.5] * 9)
    # A failure at 2 in a 10-frame sequence: fragment 1 = o[0..7] (inclusive of the re-init frame 7) zero-filled
    # and zero-extended; fragment 2 = o[7..9] NaN-extended. Overlaps 1.0 where tracked.
    flags = np.array([INIT, TRACKED, FAILURE, SKIPPED, SKIPPED, SKIPPED, SKIPPED, INIT, TRACKED, TRACKED], np.int8)
    o = np.where(flags == TRACKED, 1.0, np.nan)
    curve = eao_curve([flags], [o])
    row1 = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]  # o[0..7] with NaN -> 0, then zeros
    row2 = [0, 1, 1]  # o[7..9]
    for i in range(1, 10):
        vals = [np.mean(row1[1:i + 1])] + ([np.mean(row2[1:i + 1])] if i < 3 else [])
        assert curve[i] == pytest.approx(np.mean(vals))


def _perfect(flags: list[int], gt_len: int | None = None) -> tuple[Trajectory, SequenceGT]:
    """A trajectory with the given flags whose tracked boxes equal the (axis-aligned) ground truth: overlap 1 at
    every tracked frame, NaN at markers. The ground truth may be longer than the result file (`gt_len`)."""
    g = len(flags) if gt_len is None else gt_len
    rect = np.tile([50.0, 40.0, 30.0, 20.0], (g, 1))
    poly = np.stack([rect[:, 0], rect[:, 1], rect[:, 0] + 30, rect[:, 1], rect[:, 0] + 30, rect[:, 1] + 20,
                     rect[:, 0], rect[:, 1] + 20], 1)
    fl = np.array(flags, np.int8)
    boxes = rect[:len(fl)].copy()
    boxes[fl != TRACKED] = np.nan
    return Trajectory(fl, boxes), SequenceGT("x", poly, (200, 200))


def test_eao_weights_and_tail_failures_follow_pysot():
    """Hand-made case for the two places where pysot's EAO is not "split at f+5, weight 1". Overlap is 1 at every
    tracked frame. Columns 0..7, M = 8 (the longest sequence).

    a (8 frames): failure at 3 = 8 - 5, so its re-init would be frame 8, one past the end. Split points [0, 8]:
      fragment 1 = o[0..8] -> o[0..7] = [0, 1, 1, 0, 0, 0, 0, 0] (NaN -> 0), zero-extended; its range [0, 9) is cut
      short at the sequence end, weight = 8 frames / 9 = 8/9. Fragment 2 starts at 8: empty, weight 0.
    b (6 frames): no failure: [nan, 1, 1, 1, 1, 1], NaN-extended, weight 1 (columns 1..5 present).
    c (5 frames): failure at 3, 3 + 5 > 5, so no split point survives; pysot still treats c as a failure
      trajectory: one fragment o[0:] with NaN -> 0 = [0, 1, 1, 0, 0], NaN-extended, weight 5/5 = 1.
    e (8 frames): failure at 1, re-init at 6, two frames before the end: [0, 0, 0, 0, 0, 0, 0] (o[0..6]) weight 1
      and the last fragment o[6:8] = [0, 1] weight 2/2 = 1 (present at column 1 only).

    Running means mean(row[1..i]): a: 1, 1, 2/3, 1/2, 2/5, 1/3, 2/7; b: 1 (i <= 5); c: 1, 1, 2/3, 1/2 (i <= 4);
    e fragment 1: 0 (all i); e fragment 2: 1 (i = 1).
    Phi_i = sum(w * mean) / sum(w) over the fragments present at column i:
      Phi_1 = (8/9 + 1 + 1 + 0 + 1) / (8/9 + 4) = (35/9) / (44/9) = 35/44
      Phi_2 = (8/9 + 1 + 1 + 0) / (8/9 + 3) = 26/35
      Phi_3 = (8/9 * 2/3 + 1 + 2/3 + 0) / (35/9) = (16/27 + 45/27) * 9/35 = 61/105
      Phi_4 = (8/9 * 1/2 + 1 + 1/2 + 0) / (35/9) = (8/18 + 27/18) * 9/35 = 1/2
      Phi_5 = (8/9 * 2/5 + 1 + 0) / (26/9) = (61/45) * 9/26 = 61/130
      Phi_6 = (8/9 * 1/3 + 0) / (17/9) = 8/51
      Phi_7 = (8/9 * 2/7 + 0) / (17/9) = 16/119
    The old code gave a weight 1 and dropped c's frames 3 and 4 (NaN kept: c was taken for a no-failure
    trajectory), e.g. Phi_3 = (2/3 + 1 + 0) / 3 = 5/9 instead of 61/105.
    """
    s = SKIPPED
    seqs = {"a": [INIT, TRACKED, TRACKED, FAILURE, s, s, s, s],
            "b": [INIT] + [TRACKED] * 5,
            "c": [INIT, TRACKED, TRACKED, FAILURE, s],
            "e": [INIT, FAILURE, s, s, s, s, INIT, TRACKED]}
    trajs, gts = {}, {}
    for name, fl in seqs.items():
        trajs[name], gts[name] = _perfect(fl)
    expected = [1, 35 / 44, 26 / 35, 61 / 105, 1 / 2, 61 / 130, 8 / 51, 16 / 119]
    scores = evaluate(trajs, gts, short_fallback=True)
    np.testing.assert_allclose(scores.curve, expected, rtol=1e-7, atol=0)  # float32-rounded, as upstream
    assert (scores.curve == scores.curve.astype(np.float32)).all()
    assert scores.interval == (1, 8)
    assert scores.eao == pytest.approx(sum(expected) / 8, rel=1e-7)
    assert scores.lost == 3 and scores.frames == 8 + 6 + 5 + 8


def test_eao_last_fragment_of_a_truncated_result_file_is_down_weighted():
    """A result file shorter than its ground truth (9 lines, 10 gt frames): pysot weighs the last fragment by the
    frames that exist in the result over those in the ground truth from its start.

    d: failure at 1, re-init at 6; fragment 1 = o[0..6] = zeros (weight 7/7 = 1), zero-extended; last fragment
      o[6:9] = [0, 1, 1], weight (9 - 6) / (10 - 6) = 3/4 (the 1e-16 in pysot's denominator changes nothing).
    b: no failure, 9 frames, overlap 1: weight 1 at columns 1..8.
    Phi_1 = Phi_2 = (0 + 3/4 * 1 + 1) / (1 + 3/4 + 1) = 7/11; Phi_3..8 = (0 + 1) / 2 = 1/2.
    (Weight 1 everywhere would give Phi_1 = 2/3.)"""
    s = SKIPPED
    d = _perfect([INIT, FAILURE, s, s, s, s, INIT, TRACKED, TRACKED], gt_len=10)
    b = _perfect([INIT] + [TRACKED] * 8)
    scores = evaluate({"d": d[0], "b": b[0]}, {"d": d[1], "b": b[1]}, short_fallback=True)
    np.testing.assert_allclose(scores.curve, [1, 7 / 11, 7 / 11] + [1 / 2] * 6, rtol=1e-7, atol=0)


def test_missing_sequence_gives_no_dataset_score():
    trajs, gts = synthetic_results(0, sequences=3, frames=300)
    del trajs["seq01"]
    with pytest.raises(InputError, match="no result for 1 sequence.*seq01.*no dataset-level score"):
        evaluate(trajs, gts)


# -- metrics: the oracle ----------------------------------------------------------------------------------
def oracle(trajs: dict, gts: dict, low: int, high: int) -> tuple[float, float, float]:
    pooled, failures, total = [], 0, 0
    eao_ovs, eao_flags = [], []
    for name in sorted(gts):
        t, g = trajs[name], gts[name]
        n = min(len(t.flags), len(g.polygons))
        total += n
        masked = [False] * n
        for i in range(n):
            if t.flags[i] == INIT:
                for j in range(i, min(i + 10, n)):
                    masked[j] = True
        w, h = g.size
        ov_a, ov_e = [], []
        for i in range(n):
            tracked = t.flags[i] == TRACKED
            ov_a.append(overlap(t.boxes[i], g.polygons[i], (w, h)) if tracked and not masked[i] else math.nan)
            ov_e.append(overlap(t.boxes[i], g.polygons[i], (w - 1, h - 1)) if tracked else math.nan)
            failures += int(t.flags[i] == FAILURE)
        pooled += ov_a
        eao_ovs.append(ov_e)
        eao_flags.append(list(t.flags[:n]))
    acc = float(np.nanmean(pooled))
    rob = failures / total * 100
    phi = oracle_curve(eao_flags, eao_ovs, [len(gts[name].polygons) for name in sorted(gts)])
    return acc, rob, float(np.mean(phi[low - 1:high]))


def oracle_curve(flags_list: list, ovs: list, gt_lens: list) -> list:
    """EAO curve, frame by frame, as pysot's eao_benchmark builds it (one run, tag `all`): a sequence with any
    failure is split (its NaN -> 0) even when no split point survives; a fragment's weight is the number of
    frames of its range [start, end) that exist in the ground truth (length G) over the nominal range length;
    Phi is stored as float32."""
    m = max(len(o) for o in ovs)
    frags, weights = [], []
    for o, fl, g in zip(ovs, flags_list, gt_lens, strict=True):
        o = list(o)
        fails = [i for i, f in enumerate(fl) if f == FAILURE]
        if not fails:
            frags.append(o + [math.nan] * (m - len(o)))
            weights.append(1.0)
            continue
        points = [0] + [f + 5 for f in fails if f + 5 <= len(o)]
        for k in range(len(points)):
            if k < len(points) - 1:
                seg = [0.0 if math.isnan(v) else v for v in o[points[k]:points[k + 1] + 1]]
                frags.append(seg + [0.0] * (m - len(seg)))
                in_gt = sum(1 for j in range(points[k], points[k + 1] + 1) if j < g)
                weights.append(in_gt / (points[k + 1] + 1 - points[k]))
            else:
                seg = [0.0 if math.isnan(v) else v for v in o[points[k]:]]
                frags.append(seg + [math.nan] * (m - len(seg)))
                in_gt = sum(1 for j in range(points[k], len(o)) if j < g)
                weights.append(in_gt / (g - points[k]) if g > points[k] else 0.0)
    phi = [1.0] + [0.0] * (m - 1)
    for i in range(1, m):
        used = [(sum(r[1:i + 1]) / i, wt) for r, wt in zip(frags, weights, strict=True) if not math.isnan(r[i])]
        if used:
            phi[i] = sum(v * wt for v, wt in used) / sum(wt for _, wt in used)
    return [float(np.float32(v)) for v in phi]


@pytest.mark.parametrize("seed", [0, 1])
def test_scores_equal_the_literal_oracle(seed):
    trajs, gts = synthetic_results(seed, sequences=5, frames=2500)
    scores = evaluate(trajs, gts)
    acc, rob, eao = oracle(trajs, gts, 108, 371)
    assert scores.accuracy == pytest.approx(acc, abs=1e-12)
    assert scores.robustness == pytest.approx(rob, abs=1e-12)
    assert scores.eao == pytest.approx(eao, abs=1e-12)
    assert scores.lost == sum(t.failures for t in trajs.values()) > 0


def test_eao_curve_equals_the_oracle_near_sequence_ends():
    """Short random trajectories (failures anywhere, incl. the last 5 frames; some result files truncated): the
    vectorised curve equals the frame-by-frame oracle."""
    rng = np.random.default_rng(7)
    for _ in range(300):
        flags_l, ovs_l, gt_l = [], [], []
        for _ in range(int(rng.integers(1, 5))):
            g = int(rng.integers(3, 25))
            fl = np.full(g, TRACKED, np.int8)
            restart = 0
            for i in range(g):
                if i < restart:
                    fl[i] = SKIPPED
                elif i == restart:
                    fl[i] = INIT
                elif rng.random() < 0.15:
                    fl[i], restart = FAILURE, i + 5
            n = g if rng.random() < 0.8 else int(rng.integers(1, g + 1))
            flags_l.append(fl[:n])
            ovs_l.append(np.where(fl[:n] == TRACKED, rng.random(n), np.nan))
            gt_l.append(g)
        got = eao_curve(flags_l, ovs_l, gt_lengths=gt_l)
        want = oracle_curve(flags_l, [list(o) for o in ovs_l], gt_l)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_perfect_tracker_scores():
    # Ground truth fed back as rects of the polygons' bounding boxes (axis-aligned gt): A = 1, R = 0, EAO = 1.
    n = 400
    rect = np.tile([50.0, 40.0, 30.0, 20.0], (n, 1))
    poly = np.stack([rect[:, 0], rect[:, 1], rect[:, 0] + 30, rect[:, 1], rect[:, 0] + 30, rect[:, 1] + 20,
                     rect[:, 0], rect[:, 1] + 20], 1)
    flags = np.full(n, TRACKED, np.int8)
    flags[0] = INIT
    boxes = rect.copy()
    boxes[0] = np.nan
    s = evaluate({"a": Trajectory(flags, boxes)}, {"a": SequenceGT("a", poly, (200, 200))})
    assert (s.accuracy, s.robustness, s.eao) == (1.0, 0.0, 1.0)


def test_benchmark_runs_on_a_vot2016_sized_result_set():
    res = benchmark(repeats=2)
    assert res["frames"] == 21455 and res["sequences"] == 60  # speed: printed by `zoo bench siamrpn`


def test_short_sequences_have_no_eao_unless_asked():
    trajs, gts = synthetic_results(0, sequences=2, frames=100)
    s = evaluate(trajs, gts)
    assert math.isnan(s.eao) and s.interval == (108, 371)
    f = evaluate(trajs, gts, short_fallback=True)
    m = max(len(g.polygons) for g in gts.values())
    assert f.interval == (1, m) and f.eao == pytest.approx(float(np.mean(f.curve[:m])))
