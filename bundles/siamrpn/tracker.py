"""The SiamRPN++ tracker (pysot `SiamRPNTracker`) on any backend: spec shared/specs/siamrpn.md sections 5, 7, 8.

Runs either the seed's single graph (`model`: template + search every frame) or the split pair (`template` once
per (re)init, `search` per frame). The decode, penalties, window and smoothing are SiamRPN-specific and live here;
crops, the Hann window and the anchor grid come from common.tracking.crop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from bundles.siamrpn.model import EXEMPLAR_SIZE, INSTANCE_SIZE, KERNEL_NAMES
from common.backends.base import Backend
from common.tracking.crop import anchor_grid, context_size, frame_mean, hann_window, subwindow


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker hyper-parameters. Defaults are the VOT config of experiments/siamrpn_r50_l234_dwxcorr (spec 8.1);
    pysot's code defaults are 0.04 / 0.44 / 0.4."""

    penalty_k: float = 0.05
    window_influence: float = 0.42
    lr: float = 0.38
    context_amount: float = 0.5
    exemplar_size: int = EXEMPLAR_SIZE
    instance_size: int = INSTANCE_SIZE
    stride: int = 8
    ratios: tuple[float, ...] = (0.33, 0.5, 1.0, 2.0, 3.0)
    scales: tuple[float, ...] = (8.0,)

    # keys a published run's `config` table may carry that are not tracker values
    NON_TRACKER_KEYS = frozenset({"dataset", "graphs", "epoch"})  # epoch: which snapshot a training row is

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], *, source: str = "config") -> TrackerConfig:
        """From a manifest run's `config` table; an unknown key is an error (a typo must not silently run the
        defaults)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known - cls.NON_TRACKER_KEYS)
        if unknown:
            raise ValueError(f"{source}: unknown tracker key(s) {unknown}; known: {sorted(known)}")
        values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in known}
        return cls(**values)

    @property
    def score_size(self) -> int:
        return (self.instance_size - self.exemplar_size) // self.stride + 1 + 8  # 25, spec section 5


def _change(r: np.ndarray) -> np.ndarray:
    return np.maximum(r, 1.0 / r)


def _sz(w: np.ndarray | float, h: np.ndarray | float) -> np.ndarray | float:
    pad = (w + h) * 0.5
    return np.sqrt((w + pad) * (h + pad))


@dataclass
class TrackState:
    centre: np.ndarray  # (cx, cy)
    size: np.ndarray  # (w, h)
    avg: np.ndarray  # padding colour (uint8 per channel) from the (re)init frame
    best_score: float = 0.0


class SiamRPNTracker:
    """init(frame, [x, y, w, h]) / track(frame) -> [x, y, w, h] on BGR uint8 frames.

    `backends` maps graph names to backends: {"template", "search"} for the split path, or {"model"} for the
    seed's single graph. `preprocess_s` and `frame_s` accumulate the crop+resize and the whole per-call time."""

    def __init__(self, backends: Mapping[str, Backend], config: TrackerConfig = TrackerConfig(), *,
                 split: bool | None = None):
        has_split = "template" in backends and "search" in backends
        self.split = has_split if split is None else split
        if self.split and not has_split:
            raise ValueError(f"split tracking needs 'template' and 'search' backends, got {sorted(backends)}")
        if not self.split and "model" not in backends:
            raise ValueError(f"single-graph tracking needs a 'model' backend, got {sorted(backends)}")
        self.backends = backends
        self.config = config
        size = config.score_size
        self.window = hann_window(size, len(config.ratios) * len(config.scales)).astype(np.float32)
        self.anchors = anchor_grid(config.stride, config.ratios, config.scales, size)  # (A*S*S, 4) float32
        self.state: TrackState | None = None
        self._template: dict[str, np.ndarray] = {}
        self.preprocess_s = 0.0
        self.frame_s = 0.0
        self.frames = 0

    # -- pysot init / track --------------------------------------------------------------------------------
    def init(self, frame: np.ndarray, box: np.ndarray) -> None:
        t0 = time.perf_counter()
        x, y, w, h = (float(v) for v in box)
        c = self.config
        centre = np.array([x + (w - 1) / 2, y + (h - 1) / 2])
        avg = frame_mean(frame)
        s_z = round(context_size(w, h, c.context_amount))  # rounded here, unrounded in track (upstream)
        z = subwindow(frame, (centre[0], centre[1]), c.exemplar_size, s_z, avg)
        t1 = time.perf_counter()
        if self.split:
            out = self.backends["template"].run({"template": z})
            self._template = {k: out[k] for k in KERNEL_NAMES}
        else:
            self._template = {"template": z}
        self.state = TrackState(centre, np.array([w, h]), avg)
        self.preprocess_s += t1 - t0
        self.frame_s += time.perf_counter() - t0

    def track(self, frame: np.ndarray) -> np.ndarray:
        if self.state is None:
            raise RuntimeError("track() before init()")
        t0 = time.perf_counter()
        st, c = self.state, self.config
        w, h = st.size
        s_z = context_size(w, h, c.context_amount)
        scale_z = c.exemplar_size / s_z
        s_x = s_z * c.instance_size / c.exemplar_size
        x = subwindow(frame, (st.centre[0], st.centre[1]), c.instance_size, round(s_x), st.avg)
        t1 = time.perf_counter()
        if self.split:
            out = self.backends["search"].run({"search": x, **self._template})
        else:
            out = self.backends["model"].run({"template": self._template["template"], "search": x})
        box, best_score = self._update(out["cls"], out["loc"], scale_z, frame.shape[1], frame.shape[0])
        st.best_score = best_score
        self.preprocess_s += t1 - t0
        self.frame_s += time.perf_counter() - t0
        self.frames += 1
        return box

    def _update(self, cls: np.ndarray, loc: np.ndarray, scale_z: float, img_w: int, img_h: int
                ) -> tuple[np.ndarray, float]:
        """Decode, penalise, pick, smooth and clip (spec 8.2 steps 3-10); updates the state in place."""
        st, c = self.state, self.config
        assert st is not None
        n_anchor = len(self.anchors)
        logits = cls.reshape(2, n_anchor).astype(np.float32)  # row 0: channels 0-4 (bg), row 1: 5-9 (fg)
        delta = loc.reshape(4, n_anchor).astype(np.float32)  # row k: channels 5k..5k+4 (dx, dy, dw, dh)
        m = np.maximum(logits[0], logits[1])
        e0, e1 = np.exp(logits[0] - m), np.exp(logits[1] - m)
        score = e1 / (e0 + e1)
        a = self.anchors
        pcx = delta[0] * a[:, 2] + a[:, 0]
        pcy = delta[1] * a[:, 3] + a[:, 1]
        pw = np.exp(delta[2]) * a[:, 2]
        ph = np.exp(delta[3]) * a[:, 3]
        w, h = st.size
        s_c = _change(_sz(pw, ph) / _sz(w * scale_z, h * scale_z))
        r_c = _change((w / h) / (pw / ph))
        penalty = np.exp(-(r_c * s_c - 1) * c.penalty_k)
        pscore = penalty * score * (1 - c.window_influence) + self.window * c.window_influence
        best = int(np.argmax(pscore))
        bx, by, bw, bh = pcx[best] / scale_z, pcy[best] / scale_z, pw[best] / scale_z, ph[best] / scale_z
        lr = float(penalty[best] * score[best] * c.lr)
        cx, cy = st.centre[0] + bx, st.centre[1] + by
        nw, nh = w * (1 - lr) + bw * lr, h * (1 - lr) + bh * lr
        cx, cy = max(0.0, min(float(cx), img_w)), max(0.0, min(float(cy), img_h))
        nw, nh = max(10.0, min(float(nw), img_w)), max(10.0, min(float(nh), img_h))
        st.centre = np.array([cx, cy])
        st.size = np.array([nw, nh])
        return np.array([cx - nw / 2, cy - nh / 2, nw, nh]), float(score[best])

