"""SA-Siam tracker (spec sa_siam.md sections 2 and 10) with a fake response model: TF crop_and_resize crops,
bicubic upsampling, scale choice / damping / clamp and the displacement arithmetic on hand cases."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest

from bundles.sa_siam.tracker import (
    MAX_SCALE,
    MIN_SCALE,
    ResponseModel,
    SASiamTracker,
    TrackerConfig,
    bicubic_matrix,
    hann_window_2d,
    search_crops,
)

pytestmark = pytest.mark.timeout(120)


class FakeModel:
    """Returns scripted (3,17,17) responses, one per update; records what the tracker passed in."""

    def __init__(self, responses: list[np.ndarray] | None = None):
        self.responses = list(responses or [])
        self.exemplar_crops: list[np.ndarray] = []
        self.search_shapes: list[tuple[int, ...]] = []

    def exemplar(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        self.exemplar_crops.append(crops)
        return {"z": crops.mean(axis=(2, 3))}

    def response(self, crops: np.ndarray, exemplar: Mapping[str, np.ndarray]) -> np.ndarray:
        assert crops.dtype == np.float32 and "z" in exemplar
        self.search_shapes.append(crops.shape)
        return self.responses.pop(0) if self.responses else np.zeros((3, 17, 17), np.float32)


def _delta(cell: tuple[int, int], amplitudes: tuple[float, float, float]) -> np.ndarray:
    """A single positive cell per scale, with a per-scale height."""
    r = np.zeros((3, 17, 17), np.float32)
    r[:, cell[0], cell[1]] = amplitudes
    return r


def _frame(h: int = 160, w: int = 200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _s_z(w: float, h: float) -> float:
    p = (w + h) / 2
    return math.sqrt((w + p) * (h + p))


# -- configuration, window, upsampling ----------------------------------------------------------------------
def test_config_is_the_spec_table():
    c = TrackerConfig()
    assert (c.x_image_size, c.z_image_size, c.num_scales, c.upsample, c.response_size, c.stride) == (
        255, 127, 3, 16, 17, 8)
    assert (c.scale_step, c.scale_penalty, c.scale_damp, c.window_influence, c.context, c.c_appearance) == (
        1.0375, 0.9745, 0.59, 0.176, 0.5, 0.3)
    np.testing.assert_allclose(c.factors, [1 / 1.0375, 1.0, 1.0375])
    assert c.upsampled_size == 272
    assert TrackerConfig.from_mapping({"window_influence": 0.2}).window_influence == 0.2
    with pytest.raises(ValueError, match="unknown tracker key"):
        TrackerConfig.from_mapping({"window_infl": 0.2})
    assert isinstance(FakeModel(), ResponseModel)


def test_hann_window():
    w = hann_window_2d(272)
    assert w.shape == (272, 272) and w.sum() == pytest.approx(1.0)
    assert w[0].max() == 0.0 and w[:, -1].max() == 0.0  # numpy's hanning has zero ends
    np.testing.assert_allclose(w, w[::-1, ::-1], atol=1e-18)
    assert w[135, 135] == pytest.approx(w.max())


def test_upsampling_equals_torch_bicubic_align_corners():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(1).normal(size=(3, 17, 17)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(r)[:, None], size=(272, 272), mode="bicubic",
                                               align_corners=True)[:, 0].numpy()
    got = SASiamTracker(FakeModel()).upsample(r)
    assert got.shape == (3, 272, 272)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    # align_corners: the corner cells land exactly on the corner pixels; each output row's weights sum to 1
    np.testing.assert_allclose(got[:, [0, 0, -1, -1], [0, -1, 0, -1]], r[:, [0, 0, -1, -1], [0, -1, 0, -1]],
                               atol=1e-6)
    np.testing.assert_allclose(bicubic_matrix(17, 272).sum(axis=1), 1.0, atol=1e-12)


# -- search crops -------------------------------------------------------------------------------------------
def _tf_crop_and_resize(img: np.ndarray, box: tuple[float, float, float, float], out: int) -> np.ndarray:
    """Scalar reference written from TF's crop_and_resize definition: normalised box (y1, x1, y2, x2), samples
    in_y = y1 (H-1) + i (y2 - y1)(H-1)/(out-1), bilinear, 0 outside [0, H-1] x [0, W-1]."""
    h, w, ch = img.shape
    y1, x1, y2, x2 = box
    res = np.zeros((out, out, ch))
    for i in range(out):
        in_y = y1 * (h - 1) + i * (y2 - y1) * (h - 1) / (out - 1)
        if in_y < 0 or in_y > h - 1:
            continue
        t, b = math.floor(in_y), math.ceil(in_y)
        for j in range(out):
            in_x = x1 * (w - 1) + j * (x2 - x1) * (w - 1) / (out - 1)
            if in_x < 0 or in_x > w - 1:
                continue
            left, right = math.floor(in_x), math.ceil(in_x)
            top = img[t, left] + (img[t, right] - img[t, left]) * (in_x - left)
            bottom = img[b, left] + (img[b, right] - img[b, left]) * (in_x - left)
            res[i, j] = top + (bottom - top) * (in_y - t)
    return res


def test_search_crop_equals_tf_crop_and_resize_on_image_minus_mean():
    frame = _frame(37, 53, seed=2)
    mean = frame.reshape(-1, 3).mean(axis=0)
    cx, cy, side = 45.3, 4.7, 61.9  # partly outside on the right and the top
    s = (side - 1) / 2
    box = ((cy - s) / 36, (cx - s) / 52, (cy + s) / 36, (cx + s) / 52)
    expected = _tf_crop_and_resize(frame.astype(np.float64) - mean, box, 13) + mean
    got = search_crops(frame, (cx, cy), side, [1.0], out_size=13)
    assert got.shape == (1, 3, 13, 13) and got.dtype == np.float32
    np.testing.assert_allclose(got[0].transpose(1, 2, 0), expected, atol=2e-3)


def test_search_crop_border_is_the_float_frame_mean():
    frame = np.zeros((30, 40, 3), np.uint8)
    frame[..., 0] = 200
    frame[:7, :11] = (13, 90, 255)  # per-channel means with fractional parts
    mean = frame.reshape(-1, 3).mean(axis=0)
    assert not np.allclose(mean, np.trunc(mean))  # the crop must not truncate it (the curation does, spec 15)
    crops = search_crops(frame, (0.0, 0.0), 100.0, [0.9, 1.0], out_size=255)
    # Samples at coordinate -49.5 .. -0.0x are outside: the first ~127 rows and columns hold the mean exactly.
    for c in range(3):
        np.testing.assert_allclose(crops[:, c, :120, :], mean[c], rtol=1e-6)
        np.testing.assert_allclose(crops[:, c, :, :120], mean[c], rtol=1e-6)
    # A sample exactly on the last row / column is inside (TF's test is coord > H - 1), not blended with the mean.
    edge = search_crops(frame, (39.0, 29.0), 3.0, [1.0], out_size=3)
    np.testing.assert_array_equal(edge[0].transpose(1, 2, 0)[1, 1], frame[29, 39])
    np.testing.assert_allclose(edge[0, :, 2, :], mean[:, None].repeat(3, 1), rtol=1e-6)


def test_search_crop_at_unit_scale_is_the_exact_pixels():
    frame = _frame(300, 320, seed=3)
    # side 255 around an integer centre: samples cy - 127 .. cy + 127 fall on pixel centres
    crops = search_crops(frame, (150.0, 140.0), 255.0, [1.0])
    np.testing.assert_array_equal(crops[0].transpose(1, 2, 0), frame[13:268, 23:278].astype(np.float32))


# -- tracking hand cases ------------------------------------------------------------------------------------
BOX = (40.0, 30.0, 20.0, 30.0)  # 0-based x, y, w, h -> centre (49.5, 44.5)


def test_init_template_and_first_frame():
    frame = _frame()
    frame[...] = (10, 20, 30)  # BGR
    model = FakeModel()
    tracker = SASiamTracker(model)
    boxes = tracker.track([frame], BOX)
    np.testing.assert_array_equal(boxes, [BOX])  # include_first False: frame 0 is the given box
    np.testing.assert_allclose(tracker.state.centre, [49.5, 44.5])
    (z,) = model.exemplar_crops  # the centre-scale crop only, embedded once
    assert z.shape == (1, 3, 255, 255) and z.dtype == np.float32
    np.testing.assert_allclose(z[0, :, 100, 100], [30, 20, 10])  # RGB for the model
    np.testing.assert_allclose(tracker.box(), BOX)  # state -> box inverts the init convention


def test_scale_choice_damping_and_displacement_by_hand():
    # Delta responses at cell (10, 5) in every scale. Peaks: scale 0 (f = 1/1.0375) 1.0 * 0.9745 = 0.9745 beats the
    # centre's 0.97, so frame 1 shrinks; in frame 2 the centre's 0.98 beats 0.9745: no scale change.
    model = FakeModel([_delta((10, 5), (1.0, 0.97, 0.5)), _delta((10, 5), (1.0, 0.98, 0.5))])
    tracker = SASiamTracker(model)
    boxes = tracker.track([_frame(seed=k) for k in range(3)], BOX)
    assert model.search_shapes == [(3, 3, 255, 255)] * 2
    # Cell k lands at upsampled pixel k * 271 / 16; the kernel decreases with distance, so the peak is the
    # nearest pixel: row 10 -> 169.375 -> 169, col 5 -> 84.6875 -> 85 (the window's slope, ~1e-7, cannot move it).
    d_row, d_col = (169 - 135.5) / 16, (85 - 135.5) / 16  # 2.09375, -3.15625 cells, inside the +-8 clamp
    # frame 1: scale_x = (255 / base_s_x) / f = 127 / (s_z f); crop pixels = cells * 8
    f = 1 / 1.0375
    s_z = _s_z(20, 30)  # sqrt(45 * 55)
    cx = 49.5 + d_col * 8 * s_z * f / 127
    cy = 44.5 + d_row * 8 * s_z * f / 127
    t = (1 - 0.59) + 0.59 * f
    w, h = 20 * t, 30 * t
    np.testing.assert_allclose(boxes[1], [cx - (w - 1) / 2, cy - (h - 1) / 2, w, h], rtol=1e-12)
    # frame 2: centre scale (f = 1), s_z from the new size, same size
    s_z2 = _s_z(w, h)
    cx += d_col * 8 * s_z2 / 127
    cy += d_row * 8 * s_z2 / 127
    np.testing.assert_allclose(boxes[2], [cx - (w - 1) / 2, cy - (h - 1) / 2, w, h], rtol=1e-12)


def test_displacement_is_clamped_to_8_cells():
    # Top-right cell: pixel (0, 271), i.e. -8.47 / +8.47 cells from 135.5 -> clamped to -8 / +8.
    model = FakeModel([_delta((0, 16), (0.0, 1.0, 0.0))])
    tracker = SASiamTracker(model)
    boxes = tracker.track([_frame(), _frame(seed=1)], BOX)
    step = 8 * 8 * _s_z(20, 30) / 127  # 8 cells x stride 8 / scale_x (centre scale, f = 1)
    cx, cy = 49.5 + step, 44.5 - step
    np.testing.assert_allclose(boxes[1], [cx - 9.5, cy - 14.5, 20, 30], rtol=1e-12)
    unclamped = (271 - 135.5) / 16 * 8 * _s_z(20, 30) / 127
    assert abs(boxes[1][0] - (49.5 + unclamped - 9.5)) > 1.0  # the clamp did something


def test_scale_is_clamped_and_aspect_fixed():
    # scale_step 2 so that the clamps are reached in a few frames (0.41 + 0.59 / 2 = 0.705 and 1.59 per frame);
    # the default 1.0375 would need ~72 frames.
    config = TrackerConfig(scale_step=2.0)
    n = 8
    model = FakeModel([_delta((8, 8), (1.0, 0.0, 0.0)) for _ in range(n)])
    boxes = SASiamTracker(model, config).track([_frame(64, 80, seed=k % 3) for k in range(n + 1)], BOX)
    w, h = boxes[:, 2], boxes[:, 3]
    np.testing.assert_allclose(w / h, 20 / 30)
    np.testing.assert_allclose(h[:5], 30 * 0.705 ** np.arange(5))  # damped: 0.41 + 0.59 f
    assert h[-1] == pytest.approx(MIN_SCALE * 30) and h[-3] == pytest.approx(MIN_SCALE * 30)
    grow = SASiamTracker(FakeModel([_delta((8, 8), (0.0, 0.0, 1.0)) for _ in range(n)]), config)
    hs = grow.track([_frame(64, 80)] * (n + 1), BOX)[:, 3]
    np.testing.assert_allclose(hs[:4], 30 * 1.59 ** np.arange(4))
    assert hs[-1] == pytest.approx(MAX_SCALE * 30) and hs[-3] == pytest.approx(MAX_SCALE * 30)


def test_bad_response_shape_is_an_error():
    tracker = SASiamTracker(FakeModel([np.zeros((3, 15, 15), np.float32)]))
    with pytest.raises(ValueError, match=r"response has shape \(3, 15, 15\), expected \(3, 17, 17\)"):
        tracker.track([_frame(), _frame()], BOX)
    with pytest.raises(RuntimeError, match="before init"):
        SASiamTracker(FakeModel()).update(_frame())


def test_track_timing():
    rng = np.random.default_rng(0)
    model = FakeModel([rng.normal(size=(3, 17, 17)).astype(np.float32) for _ in range(15)])
    tracker = SASiamTracker(model)
    frames = [_frame(240, 320, seed=k) for k in range(16)]
    boxes = tracker.track(frames, (100.0, 80.0, 40.0, 50.0))
    assert boxes.shape == (16, 4) and np.isfinite(boxes).all()
    assert tracker.frames == 15 and tracker.fps > 0 and tracker.cpu_fps > 0
