"""Tracker-generic pre-processing (crops, Hann window, anchors) and VOT dataset readers (spec siamrpn.md sections
5, 7, 8.2, 9): exact small cases, both dataset layouts, and every bad-input error naming the sequence and file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.errors import InputError
from common.tracking.crop import anchor_grid, anchor_shapes, crop_patch, frame_mean, hann_window, subwindow
from common.tracking.data import make_synthetic_vot, parse_groundtruth, read_vot

pytestmark = pytest.mark.timeout(120)
RATIOS, SCALES = (0.33, 0.5, 1.0, 2.0, 3.0), (8.0,)


# -- anchors and window -----------------------------------------------------------------------------------
def test_anchor_shapes_equal_the_spec_table():
    np.testing.assert_array_equal(anchor_shapes(8, RATIOS, SCALES),
                                  [[104, 32], [88, 40], [64, 64], [40, 80], [32, 96]])


def test_anchor_grid_order_and_centres():
    a = anchor_grid(8, RATIOS, SCALES, 25)
    assert a.shape == (3125, 4)
    # n = a*625 + y*25 + x; centres -96 + 8k
    np.testing.assert_array_equal(a[0], [-96, -96, 104, 32])
    np.testing.assert_array_equal(a[1], [-88, -96, 104, 32])
    np.testing.assert_array_equal(a[25], [-96, -88, 104, 32])
    np.testing.assert_array_equal(a[2 * 625 + 12 * 25 + 12], [0, 0, 64, 64])
    np.testing.assert_array_equal(a[3124], [96, 96, 32, 96])


def test_hann_window():
    w = hann_window(25, 5)
    assert w.shape == (3125,)
    assert w[12 * 25 + 12] == pytest.approx(1.0) and w[0] == 0.0 and w[24] == pytest.approx(0.0)
    np.testing.assert_array_equal(w[:625], w[625:1250])  # one copy per anchor


# -- crops ------------------------------------------------------------------------------------------------
def test_crop_inside_is_the_exact_patch():
    frame = np.arange(20 * 30 * 3, dtype=np.uint32).reshape(20, 30, 3).astype(np.uint8)
    # side 5 at centre (10.0, 8.0): x_min = floor(10 - 3 + 0.5) = 7, y_min = 5
    np.testing.assert_array_equal(crop_patch(frame, (10.0, 8.0), 5, np.zeros(3, np.uint8)), frame[5:10, 7:12])


def test_crop_outside_is_padded_with_the_truncated_mean():
    frame = np.zeros((4, 4, 3), np.uint8)
    frame[..., 0] = 200
    frame[0, 0] = (100, 101, 255)
    avg = frame_mean(frame)
    # channel 0: (15 * 200 + 100) / 16 = 193.75 -> 193 (truncated, as the uint8 canvas does)
    np.testing.assert_array_equal(avg, [193, 6, 15])
    patch = crop_patch(frame, (0.0, 0.0), 4, avg)  # x_min = y_min = floor(0 - 2.5 + 0.5) = -2
    assert patch.shape == (4, 4, 3)
    np.testing.assert_array_equal(patch[:2, :2], np.broadcast_to(avg, (2, 2, 3)))
    np.testing.assert_array_equal(patch[2:, 2:], frame[:2, :2])


def test_subwindow_resizes_to_float_chw():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    out = subwindow(frame, (40.0, 30.0), 127, 50, frame_mean(frame))
    assert out.shape == (1, 3, 127, 127) and out.dtype == np.float32 and out.max() <= 255
    same = subwindow(frame, (40.0, 30.0), 20, 20, frame_mean(frame))  # side == out: no resize, exact pixels
    np.testing.assert_array_equal(same[0].transpose(1, 2, 0), crop_patch(frame, (40.0, 30.0), 20, frame_mean(frame)))


# -- datasets ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vot_root(tmp_path_factory) -> Path:
    return make_synthetic_vot(tmp_path_factory.mktemp("vot") / "VOT2016", sequences=2, frames=6, size=(64, 48))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_synthetic_dataset_is_deterministic_and_in_the_official_layout(vot_root, tmp_path):
    assert (vot_root / "list.txt").read_text().split() == ["synth00", "synth01"]
    assert (vot_root / "synth00" / "color" / "00000006.jpg").is_file()
    assert len((vot_root / "synth00" / "groundtruth.txt").read_text().splitlines()) == 6
    again = make_synthetic_vot(tmp_path / "again", sequences=2, frames=6, size=(64, 48))
    assert (again / "synth01" / "groundtruth.txt").read_text() == (vot_root / "synth01" / "groundtruth.txt").read_text()


def test_read_official_layout(vot_root):
    seqs = read_vot(vot_root)
    assert [s.name for s in seqs] == ["synth00", "synth01"]
    s = seqs[0]
    assert len(s.frames) == 6 and s.polygons.shape == (6, 8) and s.size == (64, 48)
    assert s.load(0).shape == (48, 64, 3)


def test_read_pysot_json_layout_with_and_without_color(vot_root, tmp_path):
    root = _copy(vot_root, tmp_path / "VOT2016")
    (root / "list.txt").unlink()
    meta = {}
    for i, name in enumerate(("synth01", "synth00")):
        gt = [[float(v) for v in ln.split(",")] for ln in (root / name / "groundtruth.txt").read_text().splitlines()]
        # one entry lists `color/`, the other omits it (both exist in the wild, spec 9.1)
        sub = "color/" if i == 0 else ""
        meta[name] = {"video_dir": name, "init_rect": [0, 0, 1, 1], "gt_rect": gt,
                      "img_names": [f"{name}/{sub}{k:08d}.jpg" for k in range(1, 7)]}
    (root / "VOT2016.json").write_text(json.dumps(meta))
    seqs = read_vot(root)
    assert [s.name for s in seqs] == ["synth00", "synth01"]  # sorted, whatever the JSON order
    official = read_vot(vot_root)
    for a, b in zip(seqs, official, strict=True):
        np.testing.assert_array_equal(a.polygons, b.polygons)
        assert a.frames == tuple(Path(str(f).replace(str(vot_root), str(root))) for f in b.frames)


def test_four_value_groundtruth_is_converted_like_pysot():
    p = parse_groundtruth("10,20,30,40\n", Path("gt.txt"), "s")
    np.testing.assert_array_equal(p[0], [10, 20, 10, 59, 39, 59, 39, 20])


def test_bad_groundtruth_line_names_file_sequence_and_line(vot_root, tmp_path):
    root = _copy(vot_root, tmp_path / "v")
    gt = root / "synth01" / "groundtruth.txt"
    lines = gt.read_text().splitlines()
    lines[3] = "1,2,3,4,5,6"
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"synth01/groundtruth.txt: sequence synth01, line 4: expected 8 values"):
        read_vot(root)


def test_missing_frame_is_named(vot_root, tmp_path):
    root = _copy(vot_root, tmp_path / "v")
    (root / "synth00" / "color" / "00000003.jpg").unlink()
    with pytest.raises(InputError, match=r"synth00/color/00000003.jpg: sequence synth00: frame missing"):
        read_vot(root)


def test_empty_sequence_is_an_error(vot_root, tmp_path):
    root = _copy(vot_root, tmp_path / "v")
    (root / "synth00" / "groundtruth.txt").write_text("")
    with pytest.raises(InputError, match="sequence synth00: empty ground truth"):
        read_vot(root)
    root2 = _copy(vot_root, tmp_path / "w")
    for f in (root2 / "synth01" / "color").iterdir():
        f.unlink()
    with pytest.raises(InputError, match="sequence synth01: no frames"):
        read_vot(root2)


def test_listed_but_absent_sequence_is_named(vot_root, tmp_path):
    root = _copy(vot_root, tmp_path / "v")
    (root / "list.txt").write_text("synth00\nsynth01\nghost\n")
    with pytest.raises(InputError, match="ghost: sequence ghost: listed in list.txt but its directory is missing"):
        read_vot(root)


def test_not_a_dataset(tmp_path):
    with pytest.raises(InputError, match="not a VOT dataset"):
        read_vot(tmp_path)


def test_read_otb_json(vot_root, tmp_path):
    from common.tracking.data import read_otb_json

    root = _copy(vot_root, tmp_path / "OTB100")
    meta = {"b": {"img_names": [f"synth00/color/{k:08d}.jpg" for k in range(1, 7)], "gt_rect": [[1, 2, 3, 4]] * 6},
            "a": {"img_names": [f"synth01/color/{k:08d}.jpg" for k in range(1, 7)], "gt_rect": [[1, 2, 3, 4]] * 5}}
    (root / "OTB100.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="sequence a: 6 frames but 5 ground-truth lines"):
        read_otb_json(root)
    meta["a"]["gt_rect"].append([1, 2, 3, 4])
    (root / "OTB100.json").write_text(json.dumps(meta))
    seqs = read_otb_json(root)
    assert [s.name for s in seqs] == ["a", "b"] and seqs[0].boxes.shape == (6, 4)
