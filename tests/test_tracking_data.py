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


# -- OTB (official layout) --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def otb_root(tmp_path_factory) -> Path:
    from common.tracking.data import make_synthetic_otb

    return make_synthetic_otb(tmp_path_factory.mktemp("otb") / "OTB100", sequences=3, frames=8, size=(64, 48))


def _raw_boxes(path: Path) -> np.ndarray:
    import re

    return np.array([[float(v) for v in re.split(r"[,\s]+", ln.strip())] for ln in path.read_text().splitlines()])


def test_synthetic_otb_is_deterministic_and_in_the_official_layout(otb_root, tmp_path):
    from common.tracking.data import make_synthetic_otb

    assert sorted(p.name for p in otb_root.iterdir() if p.is_dir()) == ["synth00", "synth01", "synth02"]
    assert sorted(p.name for p in (otb_root / "synth01" / "img").iterdir())[:2] == ["0001.jpg", "0002.jpg"]
    gts = [(otb_root / f"synth0{i}" / "groundtruth_rect.txt").read_text() for i in range(3)]
    assert "," in gts[0] and "\t" in gts[1] and " " in gts[2]  # every separator the real download uses
    assert len(gts[0].splitlines()) == 8
    again = make_synthetic_otb(tmp_path / "again", sequences=3, frames=8, size=(64, 48))
    assert (again / "synth02" / "groundtruth_rect.txt").read_text() == gts[2]


def test_read_otb_official_layout_is_0_based(otb_root):
    from common.tracking.data import read_otb

    seqs = read_otb(otb_root)
    assert [s.name for s in seqs] == ["synth00", "synth01", "synth02"]
    for s in seqs:
        raw = _raw_boxes(otb_root / s.name / "groundtruth_rect.txt")
        np.testing.assert_array_equal(s.boxes, raw - [1, 1, 0, 0])  # 1-based file -> 0-based boxes
        assert s.frames == tuple(otb_root / s.name / "img" / f"{k:04d}.jpg" for k in range(1, 9))
    assert seqs[0].load(3).shape == (48, 64, 3)
    # Only the object moves: outside both boxes (2 px margin for JPEG ringing) frames 0 and 7 agree.
    a, b = seqs[0].load(0).astype(int), seqs[0].load(7).astype(int)
    still = np.ones(a.shape[:2], bool)
    for x, y, w, h in seqs[0].boxes[[0, 7]].astype(int):
        still[max(y - 2, 0):y + h + 2, max(x - 2, 0):x + w + 2] = False
    assert still.sum() > 500 and np.abs(a - b)[still].mean() < 3
    x, y, w, h = seqs[0].boxes[7].astype(int)
    assert np.abs(a - b)[y + 2:y + h - 2, x + 2:x + w - 2].mean() > 10  # inside the box: the object
    assert [s.name for s in read_otb(otb_root, names=["synth01"])] == ["synth01"]
    with pytest.raises(InputError, match="not in the dataset: ghost"):
        read_otb(otb_root, names=["ghost"])


def _multi_target_root(otb_root: Path, root: Path) -> Path:
    """Real OTB names: Jogging (targets .1 and .2), Human4 (.1 empty, .2), Basketball (one target)."""
    shutil.copytree(otb_root / "synth00", root / "Basketball")
    for name in ("Jogging", "Human4"):
        shutil.copytree(otb_root / "synth01", root / name)
        (root / name / "groundtruth_rect.txt").unlink()
    raw = (otb_root / "synth01" / "groundtruth_rect.txt").read_text()  # tab separated
    (root / "Jogging" / "groundtruth_rect.1.txt").write_text(raw)
    second = _raw_boxes(otb_root / "synth01" / "groundtruth_rect.txt") + [5, 3, 0, 0]  # another target, commas
    (root / "Jogging" / "groundtruth_rect.2.txt").write_text("\n".join(",".join(f"{v:g}" for v in b) for b in second))
    (root / "Human4" / "groundtruth_rect.1.txt").write_text("\n")
    (root / "Human4" / "groundtruth_rect.2.txt").write_text(raw.replace("\t", " "))
    return root


def test_read_otb_multi_target_naming(otb_root, tmp_path):
    from common.tracking.data import read_otb

    root = _multi_target_root(otb_root, tmp_path / "OTB100")
    seqs = {s.name: s for s in read_otb(root)}
    assert sorted(seqs) == ["Basketball", "Human4", "Jogging-1", "Jogging-2"]
    assert seqs["Jogging-1"].frames == seqs["Jogging-2"].frames  # both targets run on Jogging/img
    raw = _raw_boxes(root / "Jogging" / "groundtruth_rect.2.txt")
    np.testing.assert_array_equal(seqs["Jogging-2"].boxes, raw - [1, 1, 0, 0])
    assert not np.array_equal(seqs["Jogging-1"].boxes, seqs["Jogging-2"].boxes)
    human4 = _raw_boxes(root / "Human4" / "groundtruth_rect.2.txt")
    np.testing.assert_array_equal(seqs["Human4"].boxes, human4 - [1, 1, 0, 0])
    assert [s.name for s in read_otb(root, names=["Jogging"])] == ["Jogging-1", "Jogging-2"]


def test_read_otb_agrees_with_got10k(otb_root, tmp_path):
    from conftest import import_oracle

    from common.tracking.data import read_otb

    got10k = import_oracle("got10k.datasets")
    root = _multi_target_root(otb_root, tmp_path / "OTB100")
    ours = read_otb(root)
    theirs = got10k.OTB(str(root), version=2015, download=False)  # warns about the 97 absent sequences
    # got10k names the second targets `Jogging.2`; pysot (and this reader) `Jogging-2`
    assert [n.replace(".", "-") for n in theirs.seq_names] == [s.name for s in ours]
    for s, (files, anno) in zip(ours, theirs, strict=True):
        assert [str(f) for f in s.frames] == files
        np.testing.assert_array_equal(s.boxes + [1, 1, 0, 0], anno)


def test_read_otb_frame_ranges(otb_root, tmp_path):
    from common.tracking.data import read_otb

    root = tmp_path / "OTB100"
    shutil.copytree(otb_root / "synth00", root / "David")
    gt = root / "David" / "groundtruth_rect.txt"
    gt.write_text("\n".join(gt.read_text().splitlines()[2:7]) + "\n")  # frames 3..7 annotated, 8 images
    with pytest.raises(InputError, match=r"David/groundtruth_rect.txt: sequence David: 8 frames in img/ but 5 "
                                         r"ground-truth lines; .*\(start, end\)"):
        read_otb(root)
    (s,) = read_otb(root, ranges={"David": (3, 7)})
    assert [f.name for f in s.frames] == ["0003.jpg", "0004.jpg", "0005.jpg", "0006.jpg", "0007.jpg"]
    with pytest.raises(InputError, match="frame range 3-8 holds 6 frames but the file has 5"):
        read_otb(root, ranges={"David": (3, 8)})
    (root / "David" / "img" / "0005.jpg").unlink()
    with pytest.raises(InputError, match=r"David/img/0005.jpg: sequence David: frame missing \(1 of 5 missing\)"):
        read_otb(root, ranges={"David": (3, 7)})


def test_read_otb_missing_frame_is_named(otb_root, tmp_path):
    from common.tracking.data import read_otb

    root = _copy(otb_root, tmp_path / "o")
    (root / "synth01" / "img" / "0004.jpg").unlink()
    with pytest.raises(InputError, match=r"synth01/img/0004.jpg: sequence synth01: frame missing"):
        read_otb(root)
    shutil.rmtree(root / "synth01" / "img")
    with pytest.raises(InputError, match=r"synth01/img: sequence synth01: img/ directory missing"):
        read_otb(root)


@pytest.mark.parametrize("line, problem", [("1,2,3", "line 4: expected 4 values"),
                                           ("1,2,x,4", "line 4: not numbers"),
                                           ("1,2,nan,4", "line 4: non-finite")])
def test_read_otb_malformed_groundtruth_names_file_and_line(otb_root, tmp_path, line, problem):
    from common.tracking.data import read_otb

    root = _copy(otb_root, tmp_path / "o")
    gt = root / "synth02" / "groundtruth_rect.txt"
    lines = gt.read_text().splitlines()
    lines[3] = line
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"synth02/groundtruth_rect.txt: sequence synth02, {problem}"):
        read_otb(root)


def test_read_otb_empty_and_not_a_dataset(otb_root, tmp_path):
    from common.tracking.data import read_otb

    root = _copy(otb_root, tmp_path / "o")
    (root / "synth00" / "groundtruth_rect.txt").write_text("")
    with pytest.raises(InputError, match="sequence synth00: empty ground truth"):
        read_otb(root)
    with pytest.raises(InputError, match="not an OTB dataset"):
        read_otb(tmp_path / "o" / "synth01" / "img")
    with pytest.raises(InputError, match="dataset directory not found"):
        read_otb(tmp_path / "absent")


def test_read_otb_pysot_json_form_matches_the_official_layout(otb_root, tmp_path):
    from common.tracking.data import read_otb

    root = _copy(otb_root, tmp_path / "OTB100")
    official = read_otb(root)
    # pysot's OTB100.json copies the raw (1-based) files' values
    meta = {s.name: {"video_dir": s.name, "init_rect": (s.boxes[0] + [1, 1, 0, 0]).tolist(),
                     "img_names": [f"{s.name}/img/{f.name}" for f in s.frames],
                     "gt_rect": (s.boxes + [1, 1, 0, 0]).tolist(), "attr": []} for s in official}
    (root / "OTB100.json").write_text(json.dumps(meta))
    from_json = read_otb(root)
    assert [s.name for s in from_json] == [s.name for s in official]
    for a, b in zip(from_json, official, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.frames == b.frames
    assert [s.name for s in read_otb(root, names=["synth02"])] == ["synth02"]
