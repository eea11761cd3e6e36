"""The SA-Siam tracker (SiamFC-TF `inference/tracker.py` semantics) on any backend: spec shared/specs/sa_siam.md
sections 2 and 10.

The model is anything with `exemplar` / `response` (ResponseModel): the bundle adapts ONNX Runtime, torch and
ais_bench graphs to it; the branch fusion (0.3 appearance + 0.7 semantic) happens inside the model. This module
owns the rest: the TF `crop_and_resize` search crops, the bicubic x16 upsampling, the scale choice and damping,
the Hann window and the displacement arithmetic.

Coordinates are 0-based pixel indices (pixel k covers k - 0.5 .. k + 0.5); boxes are [x, y, w, h] with the
(w - 1) / 2 centre convention of spec 10 step 9. Frames are HWC uint8, BGR by default (cv2 / load_frame); the
model sees float32 RGB 0..255 crops, as TF's JPEG decode gives.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from common.tracking.crop import context_size

MIN_SCALE, MAX_SCALE = 0.2, 5.0  # clamp of the size relative to the first frame's (spec 10 step 8)


@runtime_checkable
class ResponseModel(Protocol):
    """The two graphs of SA-Siam as the tracker calls them."""

    def exemplar(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """(1,3,255,255) float32 RGB 0..255 -> the exemplar features (whatever `response` needs)."""
        ...

    def response(self, crops: np.ndarray, exemplar: Mapping[str, np.ndarray]) -> np.ndarray:
        """(S,3,255,255) search crops + exemplar features -> (S,17,17) fused responses."""
        ...


@dataclass(frozen=True)
class TrackerConfig:
    """TRACK_CONFIG of spec 10. `z_image_size` only sets the crop scale; `c_appearance` is the fusion weight the
    model applies (recorded here so the run's config names it)."""

    x_image_size: int = 255
    z_image_size: int = 127
    num_scales: int = 3
    scale_step: float = 1.0375
    scale_penalty: float = 0.9745
    scale_damp: float = 0.59
    window_influence: float = 0.176
    upsample: int = 16
    response_size: int = 17
    stride: int = 8
    context: float = 0.5
    c_appearance: float = 0.3

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], *, source: str = "config") -> TrackerConfig:
        """From a manifest run's `config` table; an unknown key is an error (a typo must not run the defaults)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"{source}: unknown tracker key(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(config))

    @property
    def factors(self) -> np.ndarray:
        """Search scale factors scale_step^(i - num_scales // 2): 1.0375^{-1, 0, +1}."""
        return self.scale_step ** (np.arange(self.num_scales) - self.num_scales // 2)

    @property
    def upsampled_size(self) -> int:
        return self.response_size * self.upsample  # 272


# -- pre-processing -----------------------------------------------------------------------------------------
def _axis_samples(centre: float, sides: np.ndarray, out_size: int, extent: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TF crop_and_resize along one axis for each side S: `out_size` samples from centre - (S-1)/2 to
    centre + (S-1)/2 (both ends included). Returns lower / upper indices, the lerp weight and the in-frame mask,
    each (len(sides), out_size)."""
    half = (sides - 1.0) / 2.0
    coord = (centre - half)[:, None] + (2.0 * half)[:, None] * (np.arange(out_size) / (out_size - 1))[None]
    # TF extrapolates (here: 0 = the mean after it is added back) for a sample outside [0, extent - 1]; it does not
    # blend the border pixel with the padding as cv2's BORDER_CONSTANT does.
    inside = (coord >= 0) & (coord <= extent - 1)
    clipped = np.clip(coord, 0, extent - 1)
    lo = np.floor(clipped).astype(np.intp)
    hi = np.ceil(clipped).astype(np.intp)
    return lo, hi, (clipped - lo).astype(np.float32), inside


def search_crops(frame: np.ndarray, centre: tuple[float, float] | Sequence[float], base_s_x: float,
                 factors: Sequence[float] | np.ndarray, *, out_size: int = 255) -> np.ndarray:
    """(len(factors), C, out, out) float32 crops of side f * base_s_x (not rounded) centred on (cx, cy), with TF
    `crop_and_resize` semantics (spec 10): bilinear, samples spaced linearly end to end, computed on
    (frame - mean) with the mean added back, so samples outside the frame are the frame's per-channel float mean.
    Channel order is the frame's."""
    img = np.asarray(frame)
    if img.ndim != 3:
        raise ValueError(f"frame must be HxWxC, got shape {img.shape}")
    h, w, ch = img.shape
    if ch <= 4 and img.dtype in (np.uint8, np.float32):
        mean = np.array(cv2.mean(img)[:ch], dtype=np.float32)  # float64 accumulation, ~40x numpy's speed
    else:
        mean = img.reshape(-1, ch).mean(axis=0, dtype=np.float64).astype(np.float32)
    sides = np.asarray(factors, dtype=np.float64) * float(base_s_x)
    y0, y1, ly, in_y = _axis_samples(float(centre[1]), sides, out_size, h)
    x0, x1, lx, in_x = _axis_samples(float(centre[0]), sides, out_size, w)
    # Planar (C, H*W) so that every elementwise step below runs over contiguous 255-long rows, not 3-long pixels.
    planes = np.ascontiguousarray(img.transpose(2, 0, 1)).reshape(ch, -1)
    mean_c = mean[:, None, None, None]

    def corner(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        # float32(pixel) - mean per sample: the same values as gathering from a centred float32 frame
        out = np.take(planes, (rows * w)[:, :, None] + cols[:, None, :], axis=1).astype(np.float32)
        out -= mean_c
        return out

    lx4 = lx[None, :, None, :]
    # The same interpolation order as TF: along x on the top and bottom rows, then along y.
    top = corner(y0, x0)
    top += (corner(y0, x1) - top) * lx4
    out = corner(y1, x0)
    out += (corner(y1, x1) - out) * lx4
    out -= top
    out *= ly[None, :, :, None]
    out += top
    out *= in_y[None, :, :, None] & in_x[None, :, None, :]
    out += mean_c
    return np.ascontiguousarray(out.transpose(1, 0, 2, 3))


# -- post-processing ----------------------------------------------------------------------------------------
_CUBIC_A = -0.75  # TF1 resize_bicubic (no half-pixel centres) and torch bicubic both use a = -0.75


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """(N,4) cubic-convolution weights of the taps floor-1 .. floor+2 for fractional offsets t (N,)."""
    a = _CUBIC_A
    d = np.stack([t + 1, t, 1 - t, 2 - t], axis=1)  # distances of the four taps
    near = ((a + 2) * d - (a + 3)) * d * d + 1  # |d| <= 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a  # 1 < |d| < 2
    return np.where(d <= 1, near, far)


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix M such that M @ x @ M.T is the bicubic, align_corners=True resize of an n_in x n_in
    map (out-of-range taps clamped to the border, as TF and torch do)."""
    src = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
    base = np.floor(src).astype(np.intp)
    weights = _cubic_weights(src - base)
    m = np.zeros((n_out, n_in))
    taps = np.clip(base[:, None] + np.arange(-1, 3)[None], 0, n_in - 1)
    np.add.at(m, (np.repeat(np.arange(n_out), 4), taps.ravel()), weights.ravel())
    return m


def hann_window_2d(size: int) -> np.ndarray:
    """outer(hanning(size), hanning(size)) normalised to sum 1 (spec 10 step 4; numpy's hanning, zero ends)."""
    h = np.hanning(size)
    win = np.outer(h, h)
    return win / win.sum()


@dataclass
class TrackState:
    centre: np.ndarray  # (cx, cy), 0-based
    size: np.ndarray  # (w, h)
    first_size: np.ndarray  # (w0, h0): the aspect ratio is fixed to it


class SASiamTracker:
    """init(frame, [x, y, w, h]) / update(frame) -> [x, y, w, h] (0-based), or track(frames, box) -> (N,4).

    `update_s` / `cpu_s` accumulate the wall-clock and process CPU time of update() (crops + model +
    post-processing; frame decoding excluded) over `frames` tracked frames; `fps` = frames / update_s. Upstream
    divided by CPU time (`time.clock()`, a quirk): `cpu_fps` reports that figure."""

    def __init__(self, model: ResponseModel, config: TrackerConfig = TrackerConfig(), *, bgr: bool = True):
        self.model = model
        self.config = config
        self.bgr = bgr
        self.factors = config.factors
        # The centre scale keeps its peak; the others are penalised (spec 10 step 2).
        self.penalties = np.where(np.arange(config.num_scales) == config.num_scales // 2, 1.0, config.scale_penalty)
        self.window = hann_window_2d(config.upsampled_size)
        self._upsample = bicubic_matrix(config.response_size, config.upsampled_size)
        self.state: TrackState | None = None
        self.exemplar_features: dict[str, np.ndarray] = {}
        self.frames = 0
        self.update_s = 0.0
        self.cpu_s = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.update_s if self.update_s > 0 else float("nan")

    @property
    def cpu_fps(self) -> float:
        return self.frames / self.cpu_s if self.cpu_s > 0 else float("nan")

    def _crops(self, frame: np.ndarray, side: float, factors: Sequence[float] | np.ndarray) -> np.ndarray:
        """Search crops in RGB: cropped in the frame's order, then the channels reversed when it is BGR (the
        crop is per channel, so this equals cropping an RGB frame, and avoids copying the whole frame)."""
        assert self.state is not None
        crops = search_crops(frame, tuple(self.state.centre), side, factors, out_size=self.config.x_image_size)
        return np.ascontiguousarray(crops[:, ::-1]) if self.bgr else crops

    def _base_s_x(self) -> float:
        """Side of the centre-scale search region: s_z * x / z, s_z = sqrt((w + p)(h + p)), p = (w + h) / 2."""
        assert self.state is not None
        c = self.config
        w, h = self.state.size
        return context_size(float(w), float(h), c.context) * c.x_image_size / c.z_image_size

    def init(self, frame: np.ndarray, box: Sequence[float] | np.ndarray) -> None:
        """Set the state from a 0-based [x, y, w, h] box and embed the template (spec 10 "Template")."""
        x, y, w, h = (float(v) for v in box)
        if w <= 0 or h <= 0:
            raise ValueError(f"initial box must have a positive size, got {list(box)}")
        size = np.array([w, h])
        # Inverse of step 9's output convention, so that init -> output returns the given box exactly.
        self.state = TrackState(np.array([x + (w - 1) / 2, y + (h - 1) / 2]), size, size.copy())
        # Upstream embeds all three scale crops and keeps the centre one. Each crop is embedded independently
        # (inference-mode BN, per-exemplar attention), so embedding the centre crop alone gives the same features.
        self.exemplar_features = dict(self.model.exemplar(self._crops(frame, self._base_s_x(), [1.0])))

    def upsample(self, responses: np.ndarray) -> np.ndarray:
        """(S,17,17) -> (S,272,272): bicubic, align_corners=True (equal to torch's interpolate up to rounding)."""
        m = self._upsample
        return m[None] @ np.asarray(responses, dtype=np.float64) @ m.T[None]

    def update(self, frame: np.ndarray) -> np.ndarray:
        """Track one frame (spec 10 steps 1-9); returns the new 0-based [x, y, w, h]."""
        if self.state is None:
            raise RuntimeError("update() before init()")
        t0, c0 = time.perf_counter(), time.process_time()
        st, c = self.state, self.config
        base_s_x = self._base_s_x()
        base_scale_x = c.x_image_size / base_s_x
        crops = self._crops(frame, base_s_x, self.factors)
        raw = np.asarray(self.model.response(crops, self.exemplar_features))
        expected = (c.num_scales, c.response_size, c.response_size)
        if raw.size != np.prod(expected):
            raise ValueError(f"model response has shape {raw.shape}, expected {expected}")
        resp = self.upsample(raw.reshape(expected))  # step 1
        best = int(np.argmax(resp.reshape(c.num_scales, -1).max(axis=1) * self.penalties))  # step 2
        r = resp[best] - resp[best].min()  # step 3
        total = r.sum()
        # A flat response (sum 0) would make r NaN; zero it so that the window alone decides (the centre).
        r = r / total if total > 0 else np.zeros_like(r)
        r = (1 - c.window_influence) * r + c.window_influence * self.window  # step 4
        peak = np.array(np.unravel_index(int(np.argmax(r)), r.shape), dtype=np.float64)  # step 5: (row, col)
        centre = (c.upsampled_size - 1) / 2  # 135.5
        radius = int(c.upsampled_size / c.upsample / 2)  # 8 cells: never move beyond the response map
        disp_cells = np.clip((peak - centre) / c.upsample, -radius, radius)  # step 6
        f_best = float(self.factors[best])
        disp = disp_cells * c.stride / (base_scale_x / f_best)  # cells -> crop pixels -> frame pixels
        st.centre = st.centre + disp[::-1]  # step 7: (row, col) -> (cx, cy)
        t = st.size[1] / st.first_size[1]  # step 8
        t = min(max(t * ((1 - c.scale_damp) + c.scale_damp * f_best), MIN_SCALE), MAX_SCALE)
        st.size = st.first_size * t
        self.update_s += time.perf_counter() - t0
        self.cpu_s += time.process_time() - c0
        self.frames += 1
        return self.box()

    def box(self) -> np.ndarray:
        """The current state as a 0-based [x, y, w, h] (spec 10 step 9)."""
        assert self.state is not None
        (cx, cy), (w, h) = self.state.centre, self.state.size
        return np.array([cx - (w - 1) / 2, cy - (h - 1) / 2, w, h])

    def track(self, frames: Iterable[np.ndarray], init_box: Sequence[float] | np.ndarray) -> np.ndarray:
        """One-pass tracking: (N,4) 0-based boxes; row 0 is `init_box` itself (include_first False)."""
        boxes = []
        for i, frame in enumerate(frames):
            if i == 0:
                self.init(frame, init_box)
                boxes.append(np.asarray(init_box, dtype=np.float64))
            else:
                boxes.append(self.update(frame))
        if not boxes:
            raise ValueError("track() needs at least one frame")
        return np.stack(boxes)
