"""SiamRPN++ training-data curation (bundles/siamrpnpp/curate.py): the crop511 rule on hand cases, pysot's JSON
layout per dataset, resumption, and bad inputs that must be skipped and named.

OpenCV behaviour expected here: OpenCV >= 5, whose warpAffine bilinear interpolation is exact, so the crops match
a plain numpy bilinear reference within 1 level. With OpenCV 4.x (coordinates rounded to 1/32 pixel) the
reference comparisons fail by up to ~6 levels (spec 15.3); the geometry tests on single pixels still hold.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from bundles.siamrpnpp import curate as cur
from bundles.siamrpnpp.curate import (
    BAD_ANNOTATION,
    BAD_IMAGE,
    DEGENERATE,
    EMPTY_VIDEO,
    MISSING_IMAGE,
    OUTSIDE,
    VID_OVERWRITTEN,
    VID_SINGLE,
    YTBB_ABSENT,
    crop_like_pysot,
    curate,
    pysot_padding,
    search_region,
)
from bundles.siamrpnpp.synthetic import make_synthetic_raw
from common.errors import InputError


def _reference_crop(image: np.ndarray, box, out: int, pad) -> np.ndarray:
    """Independent numpy version of spec 5.1: side = s_z * out/127; output pixel u samples the source at
    x0 + u * side/(out-1) with x0 = cx - side/2; bilinear; constant `pad` outside the image."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    p = (w + h) / 2
    s_z = math.sqrt((w + p) * (h + p))
    side = s_z * out / 127
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    u = np.arange(out, dtype=np.float64)
    xs = cx - side / 2 + u * side / (out - 1)
    ys = cy - side / 2 + u * side / (out - 1)
    m = 2  # border of `pad` around the image, then sample the padded image
    padded = np.empty((image.shape[0] + 2 * m, image.shape[1] + 2 * m, 3), dtype=np.float64)
    padded[...] = np.asarray(pad, dtype=np.float64)
    padded[m:-m, m:-m] = image
    gx, gy = xs + m, ys + m
    fx, fy = np.floor(gx), np.floor(gy)
    wx, wy = (gx - fx)[None, :, None], (gy - fy)[:, None, None]
    ix0 = np.clip(fx.astype(int), 0, padded.shape[1] - 1)
    ix1 = np.clip(fx.astype(int) + 1, 0, padded.shape[1] - 1)
    iy0 = np.clip(fy.astype(int), 0, padded.shape[0] - 1)
    iy1 = np.clip(fy.astype(int) + 1, 0, padded.shape[0] - 1)
    top = padded[iy0][:, ix0] * (1 - wx) + padded[iy0][:, ix1] * wx
    bottom = padded[iy1][:, ix0] * (1 - wx) + padded[iy1][:, ix1] * wx
    return top * (1 - wy) + bottom * wy


def _texture(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


# -- the crop rule ------------------------------------------------------------------------------------------
def test_search_region_hand_numbers():
    # w=40, h=20: p=30, s_z = sqrt(70*50); the 511 side is s_z*511/127 (spec 5.1 step 3).
    cx, cy, s_z, side = search_region([100, 100, 140, 120])
    assert (cx, cy) == (120.0, 110.0)
    assert s_z == pytest.approx(math.sqrt(3500), rel=1e-15)
    assert side == pytest.approx(math.sqrt(3500) * 511 / 127, rel=1e-13)
    assert search_region([100, 100, 140, 120], 127)[3] == pytest.approx(s_z, rel=1e-15)  # template side = s_z


def test_crop_puts_box_centre_at_255():
    # A single white pixel at the box centre must land exactly on crop pixel (255, 255), symmetric around it.
    image = np.zeros((300, 400, 3), np.uint8)
    image[140, 210] = 255
    crop = crop_like_pysot(image, [190, 120, 230, 160])  # centre (210, 140)
    assert crop.shape == (511, 511, 3) and crop.dtype == np.uint8
    assert (crop[255, 255] == 255).all()
    for k in (1, 2):
        assert abs(int(crop[255, 255 - k, 0]) - int(crop[255, 255 + k, 0])) <= 1
        assert abs(int(crop[255 - k, 255, 0]) - int(crop[255 + k, 255, 0])) <= 1
    assert int(crop[255, 254, 0]) < 255  # magnified about 2x: the neighbours are interpolated


def test_crop_target_size_is_w_h_times_127_over_s_z():
    # A white w x h rectangle (pixels x1..x2-1, continuous extent exactly w) becomes (w, h) * 510/side wide,
    # i.e. ~ (w, h) * 127/s_z (spec 5.1 step 6).
    image = np.zeros((400, 500, 3), np.uint8)
    x1, y1, x2, y2 = 200, 150, 260, 190
    image[y1:y2, x1:x2] = 255
    crop = crop_like_pysot(image, [x1, y1, x2, y2])
    _, _, s_z, side = search_region([x1, y1, x2, y2])
    width = int((crop[255, :, 0] > 127).sum())
    height = int((crop[:, 255, 0] > 127).sum())
    assert abs(width - (x2 - x1) * 510 / side) <= 1.0
    assert abs(height - (y2 - y1) * 510 / side) <= 1.0
    assert width == pytest.approx((x2 - x1) * 127 / s_z, abs=1.5)
    assert height == pytest.approx((y2 - y1) * 127 / s_z, abs=1.5)


@pytest.mark.parametrize("box", [[285, 290, 315, 310], [-10, 5, 40, 60]], ids=["inside", "partly_outside"])
def test_crop_matches_numpy_bilinear_reference(box):
    # Inside: the 511 square lies inside the image (no padding used). Partly outside: the box crosses the
    # image's top-left corner and most of the crop is padding. Exact bilinear (OpenCV >= 5) within 1 level.
    image = _texture(1, 600, 600)
    pad = pysot_padding(image)
    crop = crop_like_pysot(image, box)
    ref = _reference_crop(image, box, 511, pad)
    assert np.abs(crop.astype(np.float64) - ref).max() <= 1.0
    is_pad = (crop == np.array(pad, np.uint8)).all(axis=2)
    if box[0] > 0:
        x0 = (box[0] + box[2]) / 2 - search_region(box)[3] / 2
        assert x0 > 0 and not is_pad[0, 0]
    else:
        assert is_pad[:100, :100].all() and not is_pad[255, 255]


def test_padding_is_channel_mean_rounded_half_to_even():
    # 10x10 image: B mean 100.5 -> 100 (half-up would give 101), G mean 101.5 -> 102 (truncation would give 101),
    # R mean 127.59 -> 128 (spec 15.4's example).
    image = np.empty((10, 10, 3), np.uint8)
    flat = image.reshape(-1, 3)
    flat[:, 0] = [100] * 50 + [101] * 50
    flat[:, 1] = [101] * 50 + [102] * 50
    flat[:, 2] = [128] * 59 + [127] * 41
    assert image.reshape(-1, 3).mean(axis=0).tolist() == [100.5, 101.5, 127.59]
    assert pysot_padding(image) == (100, 102, 128)
    crop = crop_like_pysot(image, [0, 0, 2, 2])  # the square [-7, 9]^2: its top-left part lies outside the image
    assert crop[0, 0].tolist() == [100, 102, 128]
    assert (crop[:150, :150] == np.array([100, 102, 128], np.uint8)).all()


def test_padding_equals_numpy_mean_rounding_on_random_images():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        image = rng.integers(0, 256, size=(int(rng.integers(1, 40)), int(rng.integers(1, 40)), 3), dtype=np.uint8)
        assert pysot_padding(image) == tuple(int(v) for v in np.rint(image.mean(axis=(0, 1))))


# -- raw-layout helpers -------------------------------------------------------------------------------------
def _vid_xml(path: Path, size: tuple[int, int], objects: list[tuple[int, tuple]]) -> None:
    objs = "".join(f"<object><trackid>{t}</trackid><name>n0</name><bndbox><xmax>{b[2]}</xmax><xmin>{b[0]}</xmin>"
                   f"<ymax>{b[3]}</ymax><ymin>{b[1]}</ymin></bndbox><occluded>0</occluded></object>"
                   for t, b in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height></size>{objs}"
                    "</annotation>")


def _jpg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def _vid_video(base: Path, sub: str, tracks: dict[int, list[int]], frames: int) -> dict[int, dict[int, tuple]]:
    """A VID video at Annotations/VID/<sub> + Data/VID/<sub>; track t present in frames tracks[t]."""
    boxes: dict[int, dict[int, tuple]] = {}
    for f in range(frames):
        objs = []
        for t, present in tracks.items():
            if f in present:
                b = (10 + 3 * f + 20 * t, 10 + 15 * t, 40 + 3 * f + 20 * t, 30 + 15 * t)
                objs.append((t, b))
                boxes.setdefault(t, {})[f] = b
        _vid_xml(base / "Annotations/VID" / sub / f"{f:06d}.xml", (160, 120), objs)
        _jpg(base / "Data/VID" / sub / f"{f:06d}.JPEG", _texture(f, 120, 160))
    return boxes


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())


# -- VID ----------------------------------------------------------------------------------------------------
def test_vid_runs_official_names_and_splits(tmp_path):
    base = tmp_path / "ILSVRC2015"
    tracks = {0: [0, 1, 2, 4, 5, 6], 1: [7], 2: list(range(8))}
    boxes = _vid_video(base, "train/ILSVRC2015_VID_train_0002/ILSVRC2015_train_00100000", tracks, 8)
    _vid_video(base, "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000", {0: [0, 1]}, 2)
    _vid_video(base, "val/ILSVRC2015_val_00000000", {3: [0, 1, 2]}, 3)
    rep = curate("vid", tmp_path, tmp_path / "out", workers=1, progress=False)  # finds ILSVRC2015/ itself
    train = _load_json(tmp_path / "out/vid/train.json")
    val = _load_json(tmp_path / "out/vid/val.json")
    assert sorted(train) == ["a/ILSVRC2015_train_00000000", "c/ILSVRC2015_train_00100000"]
    assert list(val) == ["e/ILSVRC2015_val_00000000"]
    video = train["c/ILSVRC2015_train_00100000"]
    # Track 0 has runs 0-2 and 4-6: pysot keeps the later run only. Track 1 (one frame) is dropped.
    assert sorted(video) == ["00", "02"]
    assert sorted(video["00"]) == ["000004", "000005", "000006"]
    assert video["00"]["000005"] == list(boxes[0][5])
    assert sorted(video["02"]) == [f"{f:06d}" for f in range(8)]
    assert rep.excluded == {VID_OVERWRITTEN: 3, VID_SINGLE: 1}
    assert rep.n_skipped == 0
    crops = tmp_path / "out/vid/crop511/c/ILSVRC2015_train_00100000"
    assert (crops / "000005.00.x.jpg").is_file() and (crops / "000007.02.x.jpg").is_file()
    assert not (crops / "000001.00.x.jpg").exists() and not (crops / "000007.01.x.jpg").exists()
    assert rep.crops_written == 3 + 8 + 2 + 3 and rep.crops_reused == 0
    assert rep.json_files["train.json"] == {"videos": 2, "tracks": 3, "frames": 13}
    assert (tmp_path / "out/vid/curation_report.json").is_file()


def test_vid_symlink_layout_gives_the_same_keys(tmp_path):
    official = tmp_path / "off" / "ILSVRC2015"
    links = tmp_path / "links"
    _vid_video(official, "train/ILSVRC2015_VID_train_0001/ILSVRC2015_train_00050000", {0: [0, 1, 2]}, 3)
    _vid_video(official, "val/ILSVRC2015_val_00000000", {0: [0, 1]}, 2)
    for kind in ("Annotations", "Data"):  # pysot's readme: b -> ILSVRC2015_VID_train_0001, e -> val
        (links / kind / "VID/train").mkdir(parents=True)
        (links / kind / "VID/train/b").symlink_to(official / kind / "VID/train/ILSVRC2015_VID_train_0001")
        (links / kind / "VID/train/e").symlink_to(official / kind / "VID/val")
    curate("vid", official, tmp_path / "o1", workers=1, progress=False)
    curate("vid", links, tmp_path / "o2", workers=1, progress=False)
    for name in ("train.json", "val.json"):
        assert (tmp_path / "o1/vid" / name).read_text() == (tmp_path / "o2/vid" / name).read_text()
    assert list(_load_json(tmp_path / "o2/vid/train.json")) == ["b/ILSVRC2015_train_00050000"]


def test_vid_bad_inputs_are_skipped_and_named(tmp_path, caplog):
    base = tmp_path / "ILSVRC2015"
    sub = "train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000000"
    _vid_video(base, sub, {0: list(range(6)), 1: list(range(6))}, 6)
    missing = base / "Data/VID" / sub / "000001.JPEG"
    missing.unlink()
    corrupt = base / "Data/VID" / sub / "000002.JPEG"
    corrupt.write_bytes(b"\xff\xd8 definitely not a jpeg")
    broken_xml = base / "Annotations/VID" / sub / "000004.xml"
    broken_xml.write_text(broken_xml.read_text()[:60])
    outside_xml = base / "Annotations/VID" / sub / "000005.xml"
    _vid_xml(outside_xml, (160, 120), [(0, (10, 10, 40, 30)), (1, (170, 10, 200, 30))])  # x1 >= width
    empty = base / "Annotations/VID/train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000001"
    empty.mkdir()
    (base / "Data/VID/train/ILSVRC2015_VID_train_0000/ILSVRC2015_train_00000001").mkdir()
    with caplog.at_level(logging.INFO, logger="zoo.siamrpnpp.curate"):
        rep = curate("vid", base, tmp_path / "out", workers=1, progress=False)
    files = {r: [f for f, _ in items] for r, items in rep.skipped.items()}
    assert files[MISSING_IMAGE] == [str(missing)] * 2  # both objects of that frame, naming the image
    assert files[BAD_IMAGE] == [str(corrupt)] * 2
    assert files[BAD_ANNOTATION] == [str(broken_xml)]
    assert files[OUTSIDE] == [str(outside_xml)]
    assert files[EMPTY_VIDEO] == [str(empty)]
    assert rep.n_skipped == 7
    summary = caplog.text
    assert "7 skipped" in summary and MISSING_IMAGE in summary and str(broken_xml) in summary
    video = _load_json(tmp_path / "out/vid/train.json")["a/ILSVRC2015_train_00000000"]
    # Frame 4's XML is unreadable, so it splits the tracks: frames 0-3 | 5 (track 0), 0-3 (track 1); frames 1
    # and 2 are dropped afterwards because their images are missing/corrupt.
    assert sorted(video["00"]) == ["000000", "000003"]
    assert sorted(video["01"]) == ["000000", "000003"]
    report = _load_json(tmp_path / "out/vid/curation_report.json")
    assert report["n_skipped"] == 7 and report["skipped"][EMPTY_VIDEO][0][0] == str(empty)


def test_missing_layout_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="Annotations/VID"):
        curate("vid", tmp_path, tmp_path / "out", workers=1, progress=False)
    with pytest.raises(InputError, match="instances_train2017.json"):
        curate("coco", tmp_path, tmp_path / "out", workers=1, progress=False)
    with pytest.raises(InputError, match="unknown dataset"):
        curate("got10k", tmp_path, tmp_path / "out")


def test_everything_skipped_raises(tmp_path):
    base = tmp_path / "ILSVRC2015"
    sub = "train/ILSVRC2015_VID_train_0000/v0"
    _vid_video(base, sub, {0: [0, 1]}, 2)
    for p in (base / "Data/VID" / sub).iterdir():
        p.unlink()
    with pytest.raises(InputError, match=r"all 2 objects were skipped \(2 image missing\)"):
        curate("vid", base, tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out/vid/train.json").exists()
    assert _load_json(tmp_path / "out/vid/curation_report.json")["n_skipped"] == 2


# -- COCO ---------------------------------------------------------------------------------------------------
def _coco(root: Path, anns: list[dict], images: list[dict] | None = None) -> Path:
    images = images or [{"id": 7, "file_name": "000000000007.jpg", "width": 160, "height": 120}]
    for im in images:
        _jpg(root / "train2017" / im["file_name"], _texture(im["id"], im["height"], im["width"]))
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    path = root / "annotations/instances_train2017.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return path


def test_coco_tracks_keep_annotation_index_and_crowd(tmp_path):
    ann_file = _coco(tmp_path, [
        {"id": 1, "image_id": 7, "bbox": [10.0, 10.0, 0.0, 20.0], "iscrowd": 0},  # w = 0: skipped, index kept
        {"id": 2, "image_id": 7, "bbox": [20.5, 30.0, 40.0, 25.5], "iscrowd": 0},
        {"id": 3, "image_id": 7, "bbox": [60.0, 40.0, 30.0, 30.0], "iscrowd": 1},  # crowd: kept
        {"id": 4, "image_id": 7, "bbox": [1, 2, 3]},  # malformed
        {"id": 5, "image_id": 99, "bbox": [1, 2, 3, 4]},  # unknown image
    ])
    rep = curate("coco", tmp_path, tmp_path / "out", workers=1, progress=False)
    js = _load_json(tmp_path / "out/coco/train2017.json")
    assert js == {"train2017/000000000007": {"01": {"000000": [20.5, 30.0, 60.5, 55.5]},
                                             "02": {"000000": [60.0, 40.0, 90.0, 70.0]}}}
    assert (tmp_path / "out/coco/crop511/train2017/000000000007/000000.01.x.jpg").is_file()
    assert [f for f, _ in rep.skipped[DEGENERATE]] == [str(ann_file)]
    assert "id 1" in rep.skipped[DEGENERATE][0][1]
    details = [d for _, d in rep.skipped[BAD_ANNOTATION]]
    assert [f for f, _ in rep.skipped[BAD_ANNOTATION]] == [str(ann_file)] * 2
    assert any("id 4" in d for d in details) and any("99" in d for d in details)
    assert not (tmp_path / "out/coco/val2017.json").exists()  # no val annotations given


def test_coco_malformed_json_names_the_file(tmp_path):
    path = _coco(tmp_path, [])
    path.write_text('{"images": [1, 2')
    with pytest.raises(InputError, match="instances_train2017.json.*not a readable COCO annotation JSON"):
        curate("coco", tmp_path, tmp_path / "out", workers=1, progress=False)
    path.write_text('{"images": {}}')
    with pytest.raises(InputError, match="instances_train2017.json"):
        curate("coco", tmp_path, tmp_path / "out", workers=1, progress=False)


# -- DET ----------------------------------------------------------------------------------------------------
def test_det_subsets_keys_and_bad_boxes(tmp_path):
    base = tmp_path / "ILSVRC"

    def det(sub: str, boxes: list[str], size=(160, 120), write_size=True) -> Path:
        xml = base / "Annotations/DET" / f"{sub}.xml"
        xml.parent.mkdir(parents=True, exist_ok=True)
        head = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if write_size else ""
        xml.write_text(f"<annotation>{head}"
                       + "".join(f"<object><name>n1</name>{b}</object>" for b in boxes) + "</annotation>")
        _jpg(base / "Data/DET" / f"{sub}.JPEG", _texture(len(sub), size[1], size[0]))
        return xml

    bb = "<bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox>".format
    det("train/ILSVRC2013_train/n01443537/n01443537_1", [bb(10, 10, 50, 40), bb(60, 20, 90, 70)])
    outside = det("train/ILSVRC2014_train_0000/ILSVRC2014_train_00000001", [bb(10, 200, 50, 240), bb(5, 5, 30, 30)])
    no_box = det("train/ILSVRC2014_train_0006/ILSVRC2014_train_00060001", ["<name>x</name>"])
    # No <size>: the decoded image (160x120) gives it, for the outside-the-image check too.
    no_size = det("train/ILSVRC2014_train_0006/ILSVRC2014_train_00060002", [bb(1, 2, 30, 40), bb(161, 2, 170, 40)],
                  write_size=False)
    det("val/ILSVRC2013_val_00000001", [bb(10, 10, 50, 40)])
    corrupt = base / "Data/DET/val/ILSVRC2013_val_00000002.JPEG"
    det("val/ILSVRC2013_val_00000002", [bb(10, 10, 50, 40)])
    corrupt.write_bytes(b"")
    rep = curate("det", base, tmp_path / "out", workers=1, progress=False)
    train = _load_json(tmp_path / "out/det/train.json")
    val = _load_json(tmp_path / "out/det/val.json")
    assert train == {"a/n01443537_1": {"00": {"000000": [10, 10, 50, 40]}, "01": {"000000": [60, 20, 90, 70]}},
                     "b/ILSVRC2014_train_00000001": {"01": {"000000": [5, 5, 30, 30]}},
                     "h/ILSVRC2014_train_00060002": {"00": {"000000": [1, 2, 30, 40]}}}
    assert list(val) == ["i/ILSVRC2013_val_00000001"]
    assert rep.skipped[OUTSIDE] == [  # sorted by file
        (str(outside), "object 0: box [10, 200, 50, 240] does not overlap the 160x120 image"),
        (str(no_size), "object 1: box [161, 2, 170, 40] does not overlap the 160x120 image")]
    assert rep.skipped[BAD_ANNOTATION][0][0] == str(no_box) and "bndbox" in rep.skipped[BAD_ANNOTATION][0][1]
    assert rep.skipped[BAD_IMAGE][0][0] == str(corrupt)


# -- YouTube-BB ---------------------------------------------------------------------------------------------
def test_ytbb_from_csv_and_frames(tmp_path):
    d = tmp_path / "yt_bb_detection_train"
    image = _texture(3, 90, 160)
    rows = []
    for ts in (0, 1000, 2000):
        rows.append(f"yid-_0,{ts},5,cow,0,present,0.1,0.5,0.2,0.6")
        _jpg(d / "5" / f"yid-_0_{ts}_5_0.jpg", image)
    rows.append("yid-_0,3000,5,cow,0,absent,-1,-1,-1,-1")
    rows.append("yid-_0,4000,5,cow,0,present,0.1,0.5,0.2,0.6")  # frame never downloaded
    rows.append("yid-_0,5000,5,cow,0,present,0.5,0.1,0.2,0.6")  # xmax < xmin
    _jpg(d / "5" / "yid-_0_5000_5_0.jpg", image)
    rows.append("yid-_0,6000,5,cow,zero,present,0.1,0.5,0.2,0.6")  # malformed
    (tmp_path / "yt_bb_detection_train.csv").write_text("\n".join(rows) + "\n")
    rep = curate("yt_bb", tmp_path, tmp_path / "out", workers=1, progress=False)
    js = _load_json(tmp_path / "out/yt_bb/train.json")
    # Key <d_set>/<class_id>/<youtube_id> (UNCERTAIN upstream "./" prefix not used); frame = seconds, %06d.
    assert list(js) == ["yt_bb_detection_train/5/yid-_0"]
    track = js["yt_bb_detection_train/5/yid-_0"]["00"]
    assert sorted(track) == ["000000", "000001", "000002"]
    assert track["000001"] == pytest.approx([16.0, 18.0, 80.0, 54.0])  # fractions x (160, 90)
    assert (tmp_path / "out/yt_bb/crop511/yt_bb_detection_train/5/yid-_0/000002.00.x.jpg").is_file()
    assert rep.excluded == {YTBB_ABSENT: 1}
    assert rep.skipped[MISSING_IMAGE][0][0] == str(d / "5" / "yid-_0_4000_5_0.jpg")
    assert rep.skipped[DEGENERATE][0][0] == str(tmp_path / "yt_bb_detection_train.csv")
    assert rep.skipped[DEGENERATE][0][1].startswith("line 6:")
    assert rep.skipped[BAD_ANNOTATION] == [(str(tmp_path / "yt_bb_detection_train.csv"),
                                            rep.skipped[BAD_ANNOTATION][0][1])]
    assert rep.skipped[BAD_ANNOTATION][0][1].startswith("line 7:")


# -- whole runs on the synthetic raw datasets ---------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    return make_synthetic_raw(tmp_path_factory.mktemp("raw"))


@pytest.mark.parametrize("name", cur.DATASETS)
def test_synthetic_curation_is_clean_and_crops_match_the_rule(synthetic, tmp_path, name):
    rep = curate(name, synthetic[name], tmp_path, workers=1, progress=False)
    assert rep.n_skipped == 0 and rep.crops_written > 0
    assert sorted(rep.json_files) == sorted(cur.JSON_NAMES[name])
    total = 0
    for json_name in cur.JSON_NAMES[name]:
        js = _load_json(tmp_path / name / json_name)
        assert js and all(k.count("/") >= 1 for k in js)
        for key, tracks in js.items():
            for track, frames in tracks.items():
                assert len(track) == 2 and track.isdigit()
                for frame, box in frames.items():
                    assert len(frame) == 6 and frame.isdigit() and len(box) == 4 and box[2] > box[0]
                    assert (tmp_path / name / "crop511" / key / f"{frame}.{track}.x.jpg").is_file()
                    total += 1
    assert total == rep.crops_written
    assert not list((tmp_path / name / "crop511").rglob("*.z.jpg"))  # the unused template crops are not written


def test_synthetic_crop_content_is_the_rule_applied_to_the_source(synthetic, tmp_path):
    curate("det", synthetic["det"], tmp_path, workers=1, progress=False)
    js = _load_json(tmp_path / "det/train.json")
    key = sorted(js)[0]
    box = js[key]["00"]["000000"]
    source = next(synthetic["det"].glob(f"Data/DET/train/*/*/{key.split('/')[1]}.JPEG"))
    expected = crop_like_pysot(cv2.imread(str(source)), box)
    got = cv2.imread(str(tmp_path / "det/crop511" / key / "000000.00.x.jpg"))
    assert got.shape == (511, 511, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 2.0  # JPEG quality 95


def test_resume_reuses_complete_crops_and_redoes_the_rest(synthetic, tmp_path):
    first = curate("vid", synthetic["vid"], tmp_path, workers=1, progress=False)
    reference = {n: (tmp_path / "vid" / n).read_text() for n in ("train.json", "val.json")}
    crop_dir = tmp_path / "vid/crop511/a/ILSVRC2015_train_00000000"
    (crop_dir / "000002.00.x.jpg").unlink()
    (crop_dir / "000003.00.x.jpg").write_bytes(b"")  # an empty file is not a finished crop
    stale = crop_dir / ".000004.00.x.jpg.12345.tmp"
    stale.write_bytes(b"\xff\xd8 half")
    second = curate("vid", synthetic["vid"], tmp_path, workers=1, progress=False)
    assert second.crops_written == 2
    assert second.crops_reused == first.crops_written - 2
    assert not stale.exists()
    assert all((tmp_path / "vid" / n).read_text() == t for n, t in reference.items())
    assert cv2.imread(str(crop_dir / "000003.00.x.jpg")).shape == (511, 511, 3)


class _Killed(BaseException):
    """Stands in for SIGINT / SIGKILL in the middle of a run."""


def test_interrupted_run_leaves_no_half_crop_and_resumes(synthetic, tmp_path, monkeypatch):
    real_replace = cur.os.replace
    calls = {"n": 0}

    def dying_replace(src, dst):
        calls["n"] += str(dst).endswith(".x.jpg")
        if calls["n"] == 5:  # the 5th crop is fully in its temporary file but never renamed
            raise _Killed()
        real_replace(src, dst)

    monkeypatch.setattr(cur.os, "replace", dying_replace)
    with pytest.raises(_Killed):
        curate("yt_bb", synthetic["yt_bb"], tmp_path / "run", workers=1, progress=False)
    monkeypatch.setattr(cur.os, "replace", real_replace)
    done = sorted((tmp_path / "run/yt_bb/crop511").rglob("*.x.jpg"))
    assert len(done) == 4 and not (tmp_path / "run/yt_bb/train.json").exists()
    assert len(list((tmp_path / "run/yt_bb/crop511").rglob("*.tmp"))) == 1
    resumed = curate("yt_bb", synthetic["yt_bb"], tmp_path / "run", workers=1, progress=False)
    assert resumed.crops_reused == 4
    assert not list((tmp_path / "run/yt_bb/crop511").rglob("*.tmp"))
    clean = curate("yt_bb", synthetic["yt_bb"], tmp_path / "clean", workers=1, progress=False)
    assert resumed.crops_written + 4 == clean.crops_written
    for n in ("train.json", "val.json"):
        assert (tmp_path / "run/yt_bb" / n).read_text() == (tmp_path / "clean/yt_bb" / n).read_text()


def test_parallel_run_equals_serial_run(synthetic, tmp_path):
    serial = curate("vid", synthetic["vid"], tmp_path / "s", workers=1, progress=False)
    parallel = curate("vid", synthetic["vid"], tmp_path / "p", workers=2, progress=False)
    assert parallel.workers == 2
    assert (parallel.crops_written, parallel.skipped, parallel.excluded) == \
           (serial.crops_written, serial.skipped, serial.excluded)
    for n in ("train.json", "val.json"):
        assert (tmp_path / "p/vid" / n).read_text() == (tmp_path / "s/vid" / n).read_text()
    for crop in (tmp_path / "s/vid/crop511").rglob("*.x.jpg"):
        other = tmp_path / "p/vid/crop511" / crop.relative_to(tmp_path / "s/vid/crop511")
        assert other.read_bytes() == crop.read_bytes()


def test_limit_keeps_the_first_videos_of_each_split(synthetic, tmp_path):
    rep = curate("coco", synthetic["coco"], tmp_path, workers=1, progress=False, limit=1)
    assert rep.json_files["train2017.json"]["videos"] == 1
    assert rep.json_files["val2017.json"]["videos"] == 1


def test_synthetic_raw_is_deterministic(tmp_path):
    a = make_synthetic_raw(tmp_path / "a", seed=3, videos=1, frames=3, images=1)
    b = make_synthetic_raw(tmp_path / "b", seed=3, videos=1, frames=3, images=1)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    assert set(a) == set(cur.DATASETS) and all(p.is_dir() for p in a.values())
    assert {k: v.relative_to(tmp_path / "a") for k, v in a.items()} == \
           {k: v.relative_to(tmp_path / "b") for k, v in b.items()}
