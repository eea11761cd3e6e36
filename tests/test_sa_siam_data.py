"""SA-Siam training data (bundles/sa_siam/data.py): the 255-crop curation rule on hand cases (window borders,
half-to-even rounding, padding = channel mean truncated), the curated layout and naming, resumption, bad inputs
named in the report, the imdb (sorted, relative, split), the pair rule, the augmentation geometry (TF1 legacy
bilinear resize, centre crop / zero pad, random crop) and per-index determinism."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bundles.sa_siam import data as D
from bundles.sa_siam.data import (
    VidPairs,
    augment,
    build_imdb,
    crop_window,
    crop_x,
    curate_vid,
    make_synthetic_vid,
    mean_padding,
    pair_frames,
    stretch_crop,
    stretch_size,
)
from bundles.siamrpnpp.curate import pysot_padding
from common.errors import InputError

Q90 = [cv2.IMWRITE_JPEG_QUALITY, 90]


# -- helpers ------------------------------------------------------------------------------------------------
def _texture(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    noise = rng.integers(-15, 16, size=(h, w, 3))
    return np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) + noise, 0, 255).astype(np.uint8)


def _xml(path: Path, filename: str, objects: list[tuple[object, tuple]], size=(160, 120)) -> Path:
    """A VID annotation: objects are (trackid, (xmin, ymin, xmax, ymax)); a None box leaves out <bndbox>."""
    objs = []
    for track, box in objects:
        bb = "" if box is None else (f"<bndbox><xmax>{box[2]}</xmax><xmin>{box[0]}</xmin><ymax>{box[3]}</ymax>"
                                     f"<ymin>{box[1]}</ymin></bndbox>")
        objs.append(f"<object><trackid>{track}</trackid><name>n01503061</name>{bb}<occluded>0</occluded>"
                    f"<generated>0</generated></object>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><folder>f</folder><filename>{filename}</filename><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height></size>{''.join(objs)}</annotation>")
    return path


def _video(base: Path, sub: str, frames: dict[str, list], size=(160, 120), seed: int = 0) -> None:
    """Frames `filename -> objects` of one video: <base>/Data/VID/<sub>/<filename>.JPEG + the XML beside it."""
    for k, (name, objects) in enumerate(frames.items()):
        image = base / "Data/VID" / sub / f"{name}.JPEG"
        image.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(image), _texture(seed + k, size[1], size[0]))
        _xml(base / "Annotations/VID" / sub / f"{name}.xml", name, objects, size)


def _expected_jpeg(source: Path, box) -> bytes:
    ok, jpg = cv2.imencode(".jpg", crop_x(cv2.imread(str(source)), box), Q90)
    assert ok
    return jpg.tobytes()


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.crop.x.jpg"))}


def _chw(image_hwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image_hwc.transpose(2, 0, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("sa_siam_vid")
    raw = make_synthetic_vid(base / "raw")
    curate_vid(raw, base / "cur", workers=1, progress=False)
    return base / "cur"


# -- the crop rule --------------------------------------------------------------------------------------------
def test_crop_window_hand_numbers_round_half_to_even():
    # w = 40, h = 20 (inclusive corners): p = 30, s_z = sqrt(70 * 50) = 59.16, s_x = 118.79 -> S = 119;
    # centre (29.5, 29.5): x_min = round(29.5 - 59) = round(-29.5) = -30 (half to even; floor(x + .5) gives -29)
    assert crop_window([10, 20, 49, 39]) == (-30, -30, 119)
    # centre (119.5, 109.5): 60.5 -> 60 and 50.5 -> 50 (floor(x + .5) gives 61 and 51)
    assert crop_window([100, 100, 139, 119]) == (60, 50, 119)
    # w = h = 63.5: s_z = 127 exactly, S = 255; centre 41.25 -> x_min = round(-85.75) = -86
    assert crop_window([10, 10, 72.5, 72.5]) == (-86, -86, 255)
    s_z = math.sqrt(70 * 50)
    assert crop_window([10, 20, 49, 39])[2] == round(s_z * 255 / 127)


def test_padding_is_channel_mean_truncated():
    image = np.zeros((10, 10, 3), np.uint8)
    image[..., 0].flat[:76], image[..., 0].flat[76:] = 128, 127  # mean 127.76
    image[..., 1].flat[:50], image[..., 1].flat[50:] = 127, 128  # mean 127.5
    image[..., 2].flat[0] = 99  # mean 0.99
    assert mean_padding(image) == (127, 127, 0)
    assert pysot_padding(image) == (128, 128, 1)  # SiamRPN++'s rule rounds; this one must not
    # box [0, 0, 1, 1]: S = 8, x_min = y_min = round(0.5 - 3.5) = -3: three rows / columns of padding, which
    # the 8 -> 255 bilinear resize spreads over the first ~47 output rows / columns
    crop = crop_x(image, [0, 0, 1, 1])
    assert crop.shape == (255, 255, 3) and crop.dtype == np.uint8
    assert (crop[:40, :40] == (127, 127, 0)).all()
    # window rows / columns 3..7 are image rows / columns 0..4, whose first channel is 128 (not the 127 pad)
    assert (crop[-40:, -40:, 0] == 128).all() and (crop[127, 127, 0] == 128).all()


def test_crop_borders_without_resize_by_hand():
    image = _texture(1, 120, 160)
    # S = 255 (no resize), window x [-86, 168], y [-86, 168]: image rows 0..119 land at crop rows 86..205 and
    # columns 0..159 at 86..245; the rest is the truncated mean
    crop = crop_x(image, [10, 10, 72.5, 72.5])
    pad = mean_padding(image)
    np.testing.assert_array_equal(crop[86:206, 86:246], image)
    assert (crop[:86] == pad).all() and (crop[206:] == pad).all()
    assert (crop[:, :86] == pad).all() and (crop[:, 246:] == pad).all()


@pytest.mark.parametrize("box", [[30, 40, 69, 59], [0, 0, 20, 100], [140, 5, 159, 119], [-40, -30, -10, -5],
                                 [50.5, 60.25, 80.75, 70], [5, 5, 5, 5]])
def test_crop_equals_an_independent_numpy_pad_reference(box):
    image = _texture(2, 120, 160)
    xmin, ymin, xmax, ymax = box
    w, h = xmax - xmin + 1, ymax - ymin + 1
    p = (w + h) / 2
    side = int(np.round(math.sqrt((w + p) * (h + p)) * 255 / 127))
    cx, cy = xmin + (w - 1) / 2, ymin + (h - 1) / 2
    x0, y0 = int(np.round(cx - (side - 1) / 2)), int(np.round(cy - (side - 1) / 2))
    m = side + 200
    # np.pad with the float mean casts it into the uint8 array: numpy truncates, which is upstream's behaviour
    padded = np.stack([np.pad(image[..., c], m, constant_values=image[..., c].mean()) for c in range(3)], axis=2)
    window = padded[y0 + m:y0 + m + side, x0 + m:x0 + m + side]
    expected = window if side == 255 else cv2.resize(window, (255, 255), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(crop_x(image, box), expected)


# -- curation -------------------------------------------------------------------------------------------------
def test_curation_names_every_object_official_layout(tmp_path):
    base = tmp_path / "ILSVRC2015"
    sub_b = "train/ILSVRC2015_VID_train_0001/ILSVRC2015_train_00042000"
    frames = {"000000": [(0, (20, 30, 60, 70)), (3, (100, 10, 159, 50))],  # trackid 3 -> "03", edge box
              "000001": [(0, (21, 30, 61, 70)), (7, (80, 80, 80, 80))],  # 1-pixel box: w = h = 1, kept
              "frame_x": [(12, (-20, -20, 10, 10))]}  # <filename> names the image and the crop
    _video(base, sub_b, frames)
    _video(base, "val/ILSVRC2015_val_00000007", {"000000": [(0, (40, 40, 90, 80))]}, seed=9)
    rep = curate_vid(tmp_path, tmp_path / "out", workers=1, progress=False)  # finds ILSVRC2015/ itself
    b = "Data/VID/train/b/ILSVRC2015_train_00042000"
    expected = {f"{b}/000000.00.crop.x.jpg": (sub_b, "000000", (20, 30, 60, 70)),
                f"{b}/000000.03.crop.x.jpg": (sub_b, "000000", (100, 10, 159, 50)),
                f"{b}/000001.00.crop.x.jpg": (sub_b, "000001", (21, 30, 61, 70)),
                f"{b}/000001.07.crop.x.jpg": (sub_b, "000001", (80, 80, 80, 80)),
                f"{b}/frame_x.12.crop.x.jpg": (sub_b, "frame_x", (-20, -20, 10, 10)),
                "Data/VID/train/e/ILSVRC2015_val_00000007/000000.00.crop.x.jpg":
                    ("val/ILSVRC2015_val_00000007", "000000", (40, 40, 90, 80))}
    got = _files(tmp_path / "out")
    assert sorted(got) == sorted(expected)
    for rel, (sub, frame, box) in expected.items():
        # the bytes of the rule applied to the decoded frame, JPEG quality 90
        assert got[rel] == _expected_jpeg(base / "Data/VID" / sub / f"{frame}.JPEG", box), rel
        assert cv2.imread(str(tmp_path / "out" / rel)).shape == (255, 255, 3)
    assert (rep.crops_written, rep.crops_reused, rep.n_skipped) == (6, 0, 0)
    report = json.loads((tmp_path / "out/curation_report.json").read_text())
    assert report["crops_written"] == 6 and report["skipped"] == {}
    assert report["json_files"]["train_imdb.json"] == {"videos": 2, "tracks": 5, "frames": 6}
    assert (tmp_path / "out/train_imdb.json").is_file() and (tmp_path / "out/validation_imdb.json").is_file()


def test_symlink_layout_gives_the_same_crops(tmp_path):
    official = tmp_path / "off" / "ILSVRC2015"
    _video(official, "train/ILSVRC2015_VID_train_0003/v0", {"000000": [(0, (20, 20, 50, 60))],
                                                           "000001": [(0, (22, 20, 52, 60))]})
    _video(official, "val/v9", {"000000": [(1, (30, 30, 70, 70))]}, seed=4)
    links = tmp_path / "links"
    for kind in ("Annotations", "Data"):  # SiamFC-TF / pysot readme: d -> ILSVRC2015_VID_train_0003, e -> val
        (links / kind / "VID/train").mkdir(parents=True)
        (links / kind / "VID/train/d").symlink_to(official / kind / "VID/train/ILSVRC2015_VID_train_0003")
        (links / kind / "VID/train/e").symlink_to(official / kind / "VID/val")
    curate_vid(official, tmp_path / "o1", workers=1, progress=False)
    curate_vid(links, tmp_path / "o2", workers=1, progress=False)
    assert _files(tmp_path / "o1") == _files(tmp_path / "o2")
    assert sorted(_files(tmp_path / "o2")) == ["Data/VID/train/d/v0/000000.00.crop.x.jpg",
                                               "Data/VID/train/d/v0/000001.00.crop.x.jpg",
                                               "Data/VID/train/e/v9/000000.01.crop.x.jpg"]


def test_resume_reuses_complete_crops_and_redoes_the_rest(curated, tmp_path):
    raw = make_synthetic_vid(curated.parent / "raw")  # idempotent: the fixture's raw set
    out = tmp_path / "cur"
    first = curate_vid(raw, out, workers=1, progress=False)
    reference = _files(out)
    assert first.crops_written == len(reference) == 60  # 4 videos x (8 + 7) objects: every object cropped
    video = out / "Data/VID/train/a/ILSVRC2015_train_00000000"
    (video / "000002.00.crop.x.jpg").unlink()
    (video / "000003.00.crop.x.jpg").write_bytes(b"")  # an empty file is not a finished crop
    stale = video / ".000004.00.crop.x.jpg.12345.tmp"
    stale.write_bytes(b"\xff\xd8 half")
    second = curate_vid(raw, out, workers=1, progress=False)
    assert (second.crops_written, second.crops_reused) == (2, 58)
    assert not stale.exists()
    assert _files(out) == reference
    assert _files(out) == _files(curated)
    third = curate_vid(raw, out, workers=1, progress=False)
    assert (third.crops_written, third.crops_reused) == (0, 60)


def test_parallel_run_equals_serial_run(curated, tmp_path):
    raw = make_synthetic_vid(curated.parent / "raw")
    rep = curate_vid(raw, tmp_path / "p", workers=2, progress=False)
    assert rep.workers == 2 and rep.crops_written == 60
    assert _files(tmp_path / "p") == _files(curated)
    for name in ("train_imdb.json", "validation_imdb.json"):
        assert (tmp_path / "p" / name).read_text() == (curated / name).read_text()


def test_bad_inputs_are_skipped_and_named(tmp_path, caplog):
    base = tmp_path / "ILSVRC2015"
    sub = "train/ILSVRC2015_VID_train_0000/v0"
    good = (20, 20, 60, 60)
    _video(base, sub, {"000000": [(0, good), (1, (70, 20, 100, 50))],
                       "000001": [(0, good), (1, (70, 20, 100, 50))],  # image deleted below
                       "000002": [(0, good)],  # image corrupted below
                       "000003": [(0, good)],  # XML truncated below
                       "000004": [(0, good), (1, None), ("x", good), (2, (50, 50, 40, 60)), (0, (1, 1, 9, 9))]})
    missing = base / "Data/VID" / sub / "000001.JPEG"
    missing.unlink()
    corrupt = base / "Data/VID" / sub / "000002.JPEG"
    corrupt.write_bytes(b"\xff\xd8 definitely not a jpeg")
    broken = base / "Annotations/VID" / sub / "000003.xml"
    broken.write_text(broken.read_text()[:70])
    odd = base / "Annotations/VID" / sub / "000004.xml"
    empty = base / "Annotations/VID/train/ILSVRC2015_VID_train_0000/v1"
    empty.mkdir()
    (base / "Data/VID/train/ILSVRC2015_VID_train_0000/v1").mkdir()
    with caplog.at_level(logging.INFO, logger="zoo.sa_siam.data"):
        rep = curate_vid(base, tmp_path / "out", workers=1, progress=False)
    files = {r: [f for f, _ in items] for r, items in rep.skipped.items()}
    assert files == {D.MISSING_IMAGE: [str(missing)] * 2, D.BAD_IMAGE: [str(corrupt)],
                     D.BAD_ANNOTATION: [str(broken), str(odd), str(odd)],  # whole file; no <bndbox>; trackid "x"
                     D.DEGENERATE: [str(odd)], D.DUPLICATE_TRACK: [str(odd)], D.EMPTY_VIDEO: [str(empty)]}
    details = " ".join(d for items in rep.skipped.values() for _, d in items)
    assert "object 1: missing <bndbox>" in details and "object 2: " in details and "w=-9" in details
    assert rep.n_skipped == 9 and rep.crops_written == 3  # frame 0 (2 objects) and frame 4 (object 0)
    assert "9 skipped" in caplog.text and str(missing) in caplog.text and str(broken) in caplog.text
    report = json.loads((tmp_path / "out/curation_report.json").read_text())
    assert report["n_skipped"] == 9 and report["skipped"][D.MISSING_IMAGE][0][0] == str(missing)
    assert sorted(_files(tmp_path / "out")) == [f"Data/VID/train/a/v0/{n}.crop.x.jpg"
                                                for n in ("000000.00", "000000.01", "000004.00")]


def test_layout_problems_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        curate_vid(tmp_path / "nope", tmp_path / "out", workers=1, progress=False)
    with pytest.raises(InputError, match="Annotations/VID"):
        curate_vid(tmp_path, tmp_path / "out", workers=1, progress=False)
    only_val = tmp_path / "v" / "ILSVRC2015"
    _video(only_val, "val/v0", {"000000": [(0, (1, 1, 9, 9))]})
    with pytest.raises(InputError, match="no VID training videos"):
        curate_vid(only_val, tmp_path / "out", workers=1, progress=False)
    base = tmp_path / "b" / "ILSVRC2015"
    _video(base, "train/ILSVRC2015_VID_train_0000/v0", {"000000": [(0, (1, 1, 9, 9))]})
    (base / "Data/VID/train/ILSVRC2015_VID_train_0000/v0/000000.JPEG").unlink()
    with pytest.raises(InputError, match=r"all 1 objects were skipped \(1 image missing\)") as e:
        curate_vid(base, tmp_path / "out2", workers=1, progress=False)
    assert "curation_report.json" in str(e.value)
    assert json.loads((tmp_path / "out2/curation_report.json").read_text())["n_skipped"] == 1


# -- the imdb -------------------------------------------------------------------------------------------------
def test_imdb_sorted_relative_natural_and_split(tmp_path):
    train = tmp_path / "Data/VID/train"
    # created out of order; frame names without zero padding so a plain sort would put 10 before 9
    layout = {"e/zz": ["0.00"], "b/m": ["10.00", "9.00", "2.00", "9.02", "1.02"], "a/y": ["3.01"], "a/x": ["0.05"],
              **{f"c/v{k}": ["0.00"] for k in range(6, 0, -1)}}
    for video, names in layout.items():
        (train / video).mkdir(parents=True)
        for n in names:
            (train / video / f"{n}.crop.x.jpg").write_bytes(b"x")
    (train / "c/v9_empty").mkdir()  # no crop: not a video of the index
    (train / "c/v1/.0.01.crop.x.jpg.5.tmp").write_bytes(b"")  # a half-written leftover is not a crop
    assert build_imdb(tmp_path) == tmp_path
    order = ["a/x", "a/y", "b/m", *(f"c/v{k}" for k in range(1, 7)), "e/zz"]  # 10 videos, sorted
    val = json.loads((tmp_path / "validation_imdb.json").read_text())
    tr = json.loads((tmp_path / "train_imdb.json").read_text())
    assert val == {"videos": [["Data/VID/train/a/x/0.05.crop.x.jpg"]], "n_videos": 1, "image_shape": [255, 255, 3]}
    p = "Data/VID/train/b/m/"
    assert tr["videos"][:3] == [["Data/VID/train/a/y/3.01.crop.x.jpg"],
                                [p + "2.00.crop.x.jpg", p + "9.00.crop.x.jpg", p + "10.00.crop.x.jpg"],
                                [p + "1.02.crop.x.jpg", p + "9.02.crop.x.jpg"]]  # one entry per trackid
    assert [v[0].split("/")[3] + "/" + v[0].split("/")[4] for v in tr["videos"][3:]] == order[3:]
    assert tr["n_videos"] == 10 and tr["image_shape"] == [255, 255, 3]
    build_imdb(tmp_path, validation_fraction=0.25)  # int(10 * 0.25) = 2 videos, 3 entries
    val = json.loads((tmp_path / "validation_imdb.json").read_text())
    assert val["n_videos"] == 2 and [v[0].split("/")[4] for v in val["videos"]] == ["x", "y"]
    with pytest.raises(InputError, match="not found") as e:
        build_imdb(tmp_path / "elsewhere")
    assert e.value.path == tmp_path / "elsewhere/Data/VID/train"


def test_relative_imdb_survives_moving_the_curated_root(curated, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(curated, moved)
    tr = json.loads((moved / "train_imdb.json").read_text())
    assert all(not p.startswith("/") and (moved / p).is_file() for v in tr["videos"] for p in v)
    a, b = VidPairs(curated, examples=5), VidPairs(moved, examples=5)
    for i in range(5):
        assert all(np.array_equal(a[i][k], b[i][k]) for k in ("exemplar", "instance"))


# -- pair sampling ---------------------------------------------------------------------------------------------
def test_pair_rule_small_tracks_and_gap_bounds():
    rng = np.random.default_rng(0)
    assert pair_frames(1, rng) == (0, 0) and pair_frames(2, rng) == (0, 1)
    for n, limit in ((3, 100), (5, 100), (40, 100), (250, 100), (250, 7)):
        pairs = np.array([pair_frames(n, rng, limit) for _ in range(3000)])
        gaps = pairs[:, 1] - pairs[:, 0]
        assert (gaps >= 1).all() and (gaps <= min(n - 1, limit)).all()  # exemplar = the earlier frame
        assert pairs.min() >= 0 and pairs.max() <= n - 1
        assert gaps.max() == min(n - 1, limit)
    # n = 5: d uniform in {1..5}, 5 -> 4: P(4) = 2/5; start uniform in {0..4-d}
    pairs = np.array([pair_frames(5, rng) for _ in range(20000)])
    freq = np.bincount(pairs[:, 1] - pairs[:, 0], minlength=5)[1:] / len(pairs)
    np.testing.assert_allclose(freq, [0.2, 0.2, 0.2, 0.4], atol=0.015)
    d1 = pairs[pairs[:, 1] - pairs[:, 0] == 1, 0]
    np.testing.assert_allclose(np.bincount(d1, minlength=4) / len(d1), [0.25] * 4, atol=0.03)


def _imdb(root: Path, lengths: list[int], name: str = "train_imdb.json") -> Path:
    videos = [[f"Data/VID/train/a/v{t}/{f:06d}.00.crop.x.jpg" for f in range(n)] for t, n in enumerate(lengths)]
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(json.dumps({"videos": videos, "n_videos": len(videos), "image_shape": [255, 255, 3]}))
    return root / name


def test_track_stream_is_seeded_permutations(tmp_path):
    _imdb(tmp_path, [3, 1, 2, 5, 8, 2, 4])
    ds = VidPairs(tmp_path, examples=30, seed=5)
    n = ds.n_tracks
    assert n == 7 and len(ds) == 30
    passes = [[ds.track_of(i) for i in range(p * n, (p + 1) * n)] for p in range(3)]
    for p, order in enumerate(passes):
        assert sorted(order) == list(range(n))  # every track once per pass
        assert order == np.random.default_rng([5, 1, p]).permutation(n).tolist()
    assert passes[0] != passes[1]
    assert ds.track_of(17) == VidPairs(tmp_path, examples=30, seed=5).track_of(17)  # no state needed
    for i in range(30):
        track, e, x = ds.sample(i)
        assert track == ds.track_of(i) and 0 <= e <= x < ds.track_length(track)
        assert (e, x) == pair_frames(ds.track_length(track), np.random.default_rng([5, 0, i]))
    with pytest.raises(IndexError):
        ds.sample(30)


# -- augmentation ------------------------------------------------------------------------------------------------
def _tf_legacy_reference(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """TF1 resize_bilinear (align_corners=False, legacy: src = dst * in / out) written per axis in float64."""
    c, h, w = image.shape
    ys, xs = np.arange(size[0]) * h / size[0], np.arange(size[1]) * w / size[1]
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    out = np.empty((c, *size))
    for k in range(c):
        im = image[k].astype(np.float64)
        top = im[y0][:, x0] * (1 - wx) + im[y0][:, x1] * wx
        bottom = im[y1][:, x0] * (1 - wx) + im[y1][:, x1] * wx
        out[k] = top * (1 - wy) + bottom * wy
    return out


def _crop_or_pad_reference(image: np.ndarray, target: int) -> np.ndarray:
    """tf.image.resize_image_with_crop_or_pad, square target."""
    c, h, w = image.shape
    out = np.zeros((c, target, target))
    oy, ox = max((h - target) // 2, 0), max((w - target) // 2, 0)
    py, px = max((target - h) // 2, 0), max((target - w) // 2, 0)
    hh, ww = min(h, target), min(w, target)
    out[:, py:py + hh, px:px + ww] = image[:, oy:oy + hh, ox:ox + ww]
    return out


def test_scale_one_is_a_plain_centre_and_random_crop():
    image = _chw(_texture(3, 255, 255))
    for dy, dx in ((0, 0), (7, 7), (3, 5)):
        np.testing.assert_array_equal(stretch_crop(image, (255, 255), (dy, dx)),
                                      image[:, 4 + dy:4 + dy + 239, 4 + dx:4 + dx + 239])


def test_stretched_smaller_is_zero_padded_and_larger_is_cropped():
    image = _chw(_texture(4, 255, 255)) + 1  # no zero pixel of its own
    # 242: CenterCrop pads 2 before and 3 after (tf's (247 - 242) // 2)
    out = stretch_crop(image, (242, 242), (0, 0))
    assert (out[:, :2] == 0).all() and (out[:, :, :2] == 0).all() and (out[:, 2:, 2:] > 0).all()
    out = stretch_crop(image, (242, 242), (7, 7))  # canvas rows 7..245; rows 244, 245 are padding
    assert (out[:, 237:] == 0).all() and (out[:, :, 237:] == 0).all() and (out[:, :237, :237] > 0).all()
    for size, off in (((242, 242), (0, 0)), ((242, 242), (7, 2)), ((268, 268), (0, 0)), ((268, 268), (5, 7)),
                      ((250, 250), (4, 1))):
        canvas = _crop_or_pad_reference(_tf_legacy_reference(image, size), 247)
        expected = canvas[:, off[0]:off[0] + 239, off[1]:off[1] + 239]
        np.testing.assert_allclose(stretch_crop(image, size, off), expected, atol=2e-3, err_msg=str(size))


def test_resize_is_tf1_legacy_not_half_pixel():
    ramp = np.tile(np.arange(255, dtype=np.float32), (1, 255, 1))  # value = column
    out = stretch_crop(ramp, (268, 268), (0, 0))
    # output column 0 = canvas column 0 = stretched column (268 - 247) // 2 = 10: source 10 * 255/268 = 9.5149
    # (half-pixel centres, as cv2.resize, would sample (10.5) * 255/268 - 0.5 = 9.4907)
    assert out[0, 0, 0] == pytest.approx(10 * 255 / 268, abs=1e-4)
    assert out[0, 5, 100] == pytest.approx(110 * 255 / 268, abs=1e-3)


def test_stretch_size_and_augment_draws():
    assert (stretch_size(0.0), stretch_size(0.05), stretch_size(-0.05), stretch_size(0.0499)) == \
           (255, 268, 242, 268)
    image = _chw(_texture(5, 255, 255))
    offsets, sizes = set(), set()
    for seed in range(200):
        r = np.random.default_rng(seed)
        u = r.uniform(-0.05, 0.05)
        dy, dx = r.integers(0, 8, size=2)
        offsets |= {int(dy), int(dx)}
        sizes.add(stretch_size(u))
        if seed < 5:  # augment = those draws, in that order
            np.testing.assert_array_equal(augment(image, np.random.default_rng(seed)),
                                          stretch_crop(image, (stretch_size(u),) * 2, (int(dy), int(dx))))
    assert offsets == set(range(8)) and min(sizes) >= 242 and max(sizes) <= 268


# -- the dataset ---------------------------------------------------------------------------------------------------
def test_item_is_two_augmented_frames_of_one_track_in_rgb(curated):
    ds = VidPairs(curated, examples=100, seed=3)
    assert ds.n_tracks == 8  # 4 videos x 2 tracks; 4 videos -> int(0.4) = 0 validation videos
    for i in (0, 9, 57):
        item = ds[i]
        assert set(item) == {"exemplar", "instance"}
        for v in item.values():
            assert v.shape == (3, 239, 239) and v.dtype == np.float32 and 0 <= v.min() and v.max() <= 255
        track, e, x = ds.sample(i)
        assert e < x  # every track here has >= 7 frames; the exemplar is the earlier one
        rng = ds.item_rng(i)
        pair_frames(ds.track_length(track), rng)
        for key, pos in (("exemplar", e), ("instance", x)):
            rgb = _chw(cv2.cvtColor(cv2.imread(str(ds.crop_path(track, pos))), cv2.COLOR_BGR2RGB))
            np.testing.assert_array_equal(item[key], augment(rgb, rng), err_msg=f"{i} {key}")


def test_same_index_same_arrays_in_any_order_process_or_instance(curated):
    ds = VidPairs(curated, examples=40, seed=7)
    first = {i: ds[i] for i in (3, 11, 30)}
    assert cv2.getNumThreads() == 1  # set before the first OpenCV call (forked workers deadlock otherwise)
    again = VidPairs(curated, examples=40, seed=7)
    for i in (30, 11, 3):
        for k, v in again[i].items():
            assert np.array_equal(v, first[i][k]), (i, k)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, [3, 11, 30]), batch_size=None, num_workers=2)
    for i, item in zip((3, 11, 30), loader, strict=True):
        for k, v in item.items():
            assert np.array_equal(v.numpy(), first[i][k]), (i, k)
    assert not np.array_equal(VidPairs(curated, examples=40, seed=8)[3]["instance"], first[3]["instance"])
    assert not np.array_equal(ds[4]["instance"], first[3]["instance"])
    with pytest.raises(IndexError):
        ds[40]


# -- bad inputs at load --------------------------------------------------------------------------------------------
def test_missing_or_corrupt_crop_names_the_file(curated, tmp_path):
    root = tmp_path / "cur"
    shutil.copytree(curated, root)
    ds = VidPairs(root, examples=10)
    track, e, _ = ds.sample(0)
    path = ds.crop_path(track, e)
    path.unlink()
    with pytest.raises(InputError, match="missing") as err:
        ds[0]
    assert err.value.path == path and str(path) in str(err.value)
    path.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="decode") as err:
        ds[0]
    assert err.value.path == path


def test_bad_imdb_names_the_json(tmp_path):
    with pytest.raises(InputError, match="imdb missing") as e:
        VidPairs(tmp_path, examples=1)
    assert e.value.path == tmp_path / "train_imdb.json"
    path = _imdb(tmp_path, [], name="validation_imdb.json")
    with pytest.raises(InputError, match="empty imdb") as e:
        VidPairs(tmp_path, split="validation", examples=1)
    assert e.value.path == path
    path.write_text('{"videos": [[')
    with pytest.raises(InputError, match="JSON") as e:
        VidPairs(tmp_path, split="validation", examples=1)
    assert e.value.path == path
    path.write_text(json.dumps({"videos": [["/home/ysp/data/a.crop.x.jpg"]], "n_videos": 1}))
    with pytest.raises(InputError, match="relative") as e:
        VidPairs(tmp_path, split="validation", examples=1)
    assert e.value.path == path
    with pytest.raises(ValueError, match="split"):
        VidPairs(tmp_path, split="val", examples=1)
