"""SiamRPN tracker logic (spec siamrpn.md section 8) on stub backends with hand-derived expectations, and the
tracker values of each published run (spec 8.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bundles.siamrpn.bundle import SiamRPNBundle
from bundles.siamrpn.model import KERNEL_NAMES
from bundles.siamrpn.tracker import SiamRPNTracker, TrackerConfig
from common.backends.base import Backend

pytestmark = pytest.mark.timeout(60)


class Stub(Backend):
    """Returns fixed outputs and records the feeds it was given."""

    name = "stub"

    def __init__(self, inputs: tuple[str, ...], outputs: dict[str, np.ndarray]):
        super().__init__()
        self.input_names, self.output_names = inputs, tuple(outputs)
        self.outputs, self.calls = outputs, []

    def _run(self, feeds):
        self.calls.append(feeds)
        return {k: v.copy() for k, v in self.outputs.items()}


def _peak(a: int, y: int, x: int) -> tuple[np.ndarray, np.ndarray]:
    cls = np.full((1, 10, 25, 25), -10.0, np.float32)
    cls[0, :5] = 10.0  # background everywhere ...
    cls[0, a, y, x], cls[0, 5 + a, y, x] = -10.0, 10.0  # ... except anchor a at (y, x)
    return cls, np.zeros((1, 20, 25, 25), np.float32)


def _split(cls: np.ndarray, loc: np.ndarray) -> dict[str, Stub]:
    kernels = {k: np.zeros((1, 256, 5, 5), np.float32) for k in KERNEL_NAMES}
    return {"template": Stub(("template",), kernels),
            "search": Stub(("search", *KERNEL_NAMES), {"cls": cls, "loc": loc})}


FRAME = np.full((240, 320, 3), 90, np.uint8)


def test_one_step_matches_the_hand_derivation():
    cfg = TrackerConfig()
    tracker = SiamRPNTracker(_split(*_peak(2, 12, 14)), cfg)
    tracker.init(FRAME, np.array([100.0, 80.0, 40.0, 40.0]))
    box = tracker.track(FRAME)
    # init: centre (100 + 19.5, 80 + 19.5); track: s_z = sqrt(80 * 80) = 80, scale_z = 127 / 80.
    scale_z = 127 / 80
    # anchor (a=2 -> 64x64) at x index 14 -> +16 crop px; loc deltas 0 -> box (16, 0, 64, 64) in the crop.
    bx, bw = 16 / scale_z, 64 / scale_z
    penalty = math.exp(-((128 / (2 * 40 * scale_z)) - 1) * cfg.penalty_k)  # sz(64,64)=128; r_c = 1
    score = 1 / (1 + math.exp(-20))
    lr = penalty * score * cfg.lr
    cx, cy = 119.5 + bx, 99.5
    w = 40 * (1 - lr) + bw * lr
    np.testing.assert_allclose(box, [cx - w / 2, cy - w / 2, w, w], rtol=1e-6)
    assert tracker.state.best_score == pytest.approx(score)


def test_box_is_clipped_to_the_frame_and_minimum_size():
    tracker = SiamRPNTracker(_split(*_peak(2, 12, 24)), TrackerConfig(window_influence=0.0, lr=1.0))
    tracker.init(FRAME, np.array([300.0, 5.0, 12.0, 12.0]))
    for _ in range(5):  # keeps jumping right: cx clamps at W = 320
        box = tracker.track(FRAME)
    cx = box[0] + box[2] / 2
    assert cx == pytest.approx(320.0) and box[2] >= 10 and box[3] >= 10


def test_split_runs_the_template_once_per_init_and_single_every_frame():
    cls, loc = _peak(2, 12, 12)
    split = _split(cls, loc)
    t = SiamRPNTracker(split, TrackerConfig())
    t.init(FRAME, np.array([100.0, 80.0, 40.0, 40.0]))
    boxes_split = [t.track(FRAME) for _ in range(3)]
    assert len(split["template"].calls) == 1 and len(split["search"].calls) == 3
    assert split["search"].calls[0]["search"].shape == (1, 3, 255, 255)
    single = {"model": Stub(("template", "search"), {"cls": cls, "loc": loc})}
    s = SiamRPNTracker(single, TrackerConfig())
    s.init(FRAME, np.array([100.0, 80.0, 40.0, 40.0]))
    boxes_single = [s.track(FRAME) for _ in range(3)]
    assert len(single["model"].calls) == 3
    assert single["model"].calls[0]["template"].shape == (1, 3, 127, 127)
    np.testing.assert_array_equal(boxes_split, boxes_single)


def test_missing_backends_are_refused():
    with pytest.raises(ValueError, match="needs a 'model' backend"):
        SiamRPNTracker({"search": Stub(("search",), {})}, TrackerConfig())
    with pytest.raises(ValueError, match="split tracking needs"):
        SiamRPNTracker({"model": Stub(("template",), {})}, TrackerConfig(), split=True)


def test_published_runs_carry_their_tracker_values():
    b = SiamRPNBundle()
    assert b.tracker_config() == TrackerConfig(penalty_k=0.05, window_influence=0.42, lr=0.38)  # default: VOT config
    b.select_run("ascend310_defaults")
    assert (b.tracker_config().penalty_k, b.tracker_config().window_influence, b.tracker_config().lr) == (
        0.04, 0.44, 0.4)
    with pytest.raises(Exception, match="no published run 'nope'"):
        b.select_run("nope")


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match=r"unknown tracker key\(s\) \['penalty'\]"):
        TrackerConfig.from_mapping({"penalty": 0.1, "dataset": "VOT2016"})
    assert TrackerConfig.from_mapping({"lr": 0.3, "dataset": "VOT2016"}).lr == 0.3
