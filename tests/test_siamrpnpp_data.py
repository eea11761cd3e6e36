"""SiamRPN++ training data (spec siamrpnpp_training.md sections 5.2, 6, 7, 8, 10): anchor targets on hand cases,
augmentation geometry, loader filters, pick lists, pair sampling, per-index determinism and bad inputs naming the
file."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bundles.siamrpnpp.data import (
    NAMES,
    SEARCH_AUG,
    TEMPLATE_AUG,
    AugmentConfig,
    SubDataset,
    TrainPairs,
    augment,
    blur_kernel,
    colour_jitter,
    colour_offset,
    crop_box,
    crop_roi,
    crop_window,
    load_index,
    make_synthetic_crop511,
    map_box,
    pysot_sources,
    stream_picks,
    sub_dataset_picks,
)
from bundles.siamrpnpp.targets import AnchorTarget
from common.errors import InputError
from common.imageio import load_image_bgr

pytestmark = pytest.mark.timeout(120)
NO_AUG = AugmentConfig(shift=0.0, scale=0.0, blur=0.0, flip=0.0, color=0.0)
CENTRE_64 = (95.0, 95.0, 159.0, 159.0)  # 64 x 64 at the crop centre (127, 127): anchor a=2 of cell (12, 12)


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    return make_synthetic_crop511(tmp_path_factory.mktemp("crop511"), seed=3, videos=3, frames=4)


def sources_with(base: Path, **changes: dict) -> list[SubDataset]:
    """pysot_sources with per-name field changes, e.g. VID={"num_use": 5}."""
    return [dataclasses.replace(s, **changes.get(s.name, {})) for s in pysot_sources(base)]


# -- anchor targets (section 8) --------------------------------------------------------------------------------
def test_anchor_grid_is_31_plus_8k_with_the_spec_shapes():
    at = AnchorTarget()
    cx, cy, w, h = at.centers
    assert at.centers.shape == (4, 5, 25, 25)
    np.testing.assert_array_equal(cx[0, 0], 31 + 8 * np.arange(25))
    np.testing.assert_array_equal(cy[3, :, 7], 31 + 8 * np.arange(25))
    np.testing.assert_array_equal(w[:, 0, 0], [104, 88, 64, 40, 32])
    np.testing.assert_array_equal(h[:, 0, 0], [32, 40, 64, 80, 96])
    np.testing.assert_array_equal(at.corners[:, 2, 12, 12], CENTRE_64)


def test_positive_pair_labels_on_a_hand_case():
    at = AnchorTarget()
    cls, loc, weight = at(CENTRE_64, neg=False, rng=np.random.default_rng(0))
    assert cls.dtype == np.int64 and loc.dtype == np.float32 and weight.dtype == np.float32
    assert cls.shape == weight.shape == (5, 25, 25) and loc.shape == (4, 5, 25, 25)
    # IoU > 0.6 only for the 64x64 anchors shifted by <= 8 px in x and y: 56*56 / (2*4096 - 3136) = 0.62
    expected = np.zeros((5, 25, 25), dtype=bool)
    expected[2, 11:14, 11:14] = True
    np.testing.assert_array_equal(cls == 1, expected)
    assert weight[expected] == pytest.approx(np.float32(1 / (9 + 1e-6)))
    assert weight[~expected].max() == 0
    assert (cls == 0).sum() == 48  # TOTAL 64 - POS 16
    # ignore band: a 16-px shift has IoU 48*64 / (8192 - 3072) = 0.6 exactly, which is not > 0.6 (plain areas;
    # with +1 areas it would be 0.602); the 88x40 anchor has IoU 0.506; both are neither positive nor negative
    assert at.iou(CENTRE_64)[2, 12, 14] == 0.6
    assert cls[2, 12, 14] == -1 and cls[2, 14, 12] == -1 and cls[1, 12, 12] == -1
    assert 0.3 < at.iou(CENTRE_64)[1, 12, 12] < 0.6
    # negatives only below 0.3
    assert at.iou(CENTRE_64)[cls == 0].max() < 0.3
    # regression targets for every anchor
    np.testing.assert_array_equal(loc[:, 2, 12, 12], [0, 0, 0, 0])
    np.testing.assert_allclose(loc[:, 2, 12, 13], [-8 / 64, 0, 0, 0])
    np.testing.assert_allclose(loc[:, 0, 0, 0], [(127 - 31) / 104, (127 - 31) / 32, math.log(64 / 104),
                                                 math.log(64 / 32)], rtol=1e-6)


def test_positive_and_negative_subsampling():
    at = AnchorTarget(pos_num=4)
    cls, _, weight = at(CENTRE_64, neg=False, rng=np.random.default_rng(1))
    assert (cls == 1).sum() == 4 and set(zip(*np.nonzero(cls == 1), strict=True)) <= {
        (2, y, x) for y in (11, 12, 13) for x in (11, 12, 13)}
    assert weight[cls == 1] == pytest.approx(np.float32(1 / (4 + 1e-6)))
    assert (cls == 0).sum() == 60  # TOTAL - POS, whatever the number of positives
    # no positive at all (a 10x10 target): still 48 negatives, no loc weight
    cls, _, weight = AnchorTarget()((122, 122, 132, 132), neg=False, rng=np.random.default_rng(1))
    assert (cls == 1).sum() == 0 and (cls == 0).sum() == 48 and weight.max() == 0
    # a different generator picks a different subset
    a = at(CENTRE_64, neg=False, rng=np.random.default_rng(1))[0]
    b = at(CENTRE_64, neg=False, rng=np.random.default_rng(2))[0]
    assert not np.array_equal(a, b)


def test_negative_pair_cell_window_and_count():
    # centre 127: cx = 12 + ceil(0 + 0.5) = 13 -> cells 10..16 in both axes, all 5 anchors = 245 candidates
    everything = AnchorTarget(neg_num=10_000)
    cls, loc, weight = everything(CENTRE_64, neg=True, rng=np.random.default_rng(0))
    expected = np.zeros((5, 25, 25), dtype=bool)
    expected[:, 10:17, 10:17] = True
    np.testing.assert_array_equal(cls == 0, expected)
    assert (cls == 1).sum() == 0 and not loc.any() and not weight.any()
    # near the left edge: tcx = 31 -> cx = 12 + ceil(-12 + 0.5) = 1 -> columns [0, 5)
    cls = everything((21, 117, 41, 137), neg=True, rng=np.random.default_rng(0))[0]
    expected[:] = False
    expected[:, 10:17, 0:5] = True
    np.testing.assert_array_equal(cls == 0, expected)
    # far outside the map: no candidate at all
    assert (everything((-400, -400, -380, -380), neg=True, rng=np.random.default_rng(0))[0] == -1).all()
    # the recipe keeps 16 of them, inside the window
    cls, loc, weight = AnchorTarget()(CENTRE_64, neg=True, rng=np.random.default_rng(0))
    assert (cls == 0).sum() == 16 and (cls == 1).sum() == 0
    assert (cls[:, 10:17, 10:17] == 0).sum() == 16 and not loc.any() and not weight.any()


# -- augmentation (section 7) ----------------------------------------------------------------------------------
def test_configs_are_the_recipe_values():
    assert (TEMPLATE_AUG.shift, TEMPLATE_AUG.scale, TEMPLATE_AUG.blur, TEMPLATE_AUG.flip, TEMPLATE_AUG.color) == (
        4, 0.05, 0.0, 0.0, 1.0)
    assert (SEARCH_AUG.shift, SEARCH_AUG.scale, SEARCH_AUG.blur, SEARCH_AUG.flip, SEARCH_AUG.color) == (
        64, 0.18, 0.2, 0.0, 1.0)
    with pytest.raises(ValueError, match="flip"):
        AugmentConfig(shift=0, scale=0, blur=0, flip=0.5, color=0)


def test_no_scale_no_shift_gives_the_centred_crop_and_shifted_box():
    image = np.random.default_rng(0).integers(0, 256, (511, 511, 3), dtype=np.uint8)
    box = np.array([200.0, 210.0, 300.0, 320.0])
    for out, origin in ((255, 128), (127, 192)):  # side out - 1 around 255
        patch, new_box = augment(image, box, out, NO_AUG, np.random.default_rng(0))
        assert patch.dtype == np.float32 and patch.shape == (3, out, out) and patch.flags.c_contiguous
        np.testing.assert_array_equal(patch, image[origin:origin + out, origin:origin + out].transpose(2, 0, 1))
        np.testing.assert_array_equal(new_box, box - origin)


def test_crop_window_scale_shift_and_clipping_by_hand():
    window, scale = crop_window((511, 511, 3), 255, (1.1, 0.9), (10.0, -20.0))
    assert scale == (1.1, 0.9)
    # 254 * 1.1 = 279.4 wide, 254 * 0.9 = 228.6 tall around 255, then +10 / -20
    np.testing.assert_allclose(window, [255 - 139.7 + 10, 255 - 114.3 - 20, 255 + 139.7 + 10, 255 + 114.3 - 20])
    np.testing.assert_allclose(map_box([200, 200, 300, 300], window, scale),
                               [(200 - 125.3) / 1.1, (200 - 120.7) / 0.9, (300 - 125.3) / 1.1,
                                (300 - 120.7) / 0.9])
    # a huge shift is clipped to keep the box inside [0, dim - 1]
    window, _ = crop_window((511, 511, 3), 255, (1.0, 1.0), (1000.0, -1000.0))
    np.testing.assert_allclose(window, [510 - 254, 0, 510, 254])
    # scale capped at image_dim / box_dim
    _, scale = crop_window((300, 300, 3), 255, (1.5, 1.0), (0.0, 0.0))
    assert scale == (300 / 254, 1.0)


def test_augmented_box_bounds_the_object_in_the_output():
    image = np.zeros((511, 511, 3), dtype=np.uint8)
    image[230:290, 200:320] = 255  # pixels x 200..319, y 230..289: continuous edges +- 0.5
    box = np.array([199.5, 229.5, 319.5, 289.5])
    geometry_only = dataclasses.replace(SEARCH_AUG, blur=0.0, color=0.0)
    for seed in range(5):
        patch, new_box = augment(image, box, 255, geometry_only, np.random.default_rng(seed))
        ys, xs = np.nonzero(patch[0] > 127)
        # the first/last output pixel centres inside the object are within one pixel of the mapped edges
        assert abs(xs.min() - new_box[0]) <= 1 and abs(xs.max() - new_box[2]) <= 1
        assert abs(ys.min() - new_box[1]) <= 1 and abs(ys.max() - new_box[3]) <= 1
    # outside the source image the border is black (0), not the mean
    window = np.array([-100.0, -100.0, 154.0, 154.0])
    assert crop_roi(np.full((511, 511, 3), 200, np.uint8), window, 255)[:90, :90].max() == 0


def test_colour_offset_is_subtracted_in_bgr_order_unclipped():
    offset = colour_offset([1.0, 0.0, 0.0])  # M's first column, reversed: (B, G, R)
    np.testing.assert_allclose(offset, [4.64467907, 1.72091413, -0.55919361])
    out = colour_jitter(np.zeros((2, 2, 3), np.uint8), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(out[1, 1], [-4.64467907, -1.72091413, 0.55919361])  # negative values stay
    # through augment: a per-channel constant shift of the plain crop
    image = np.random.default_rng(1).integers(0, 256, (511, 511, 3), dtype=np.uint8)
    colour_only = dataclasses.replace(NO_AUG, color=1.0)
    patch, _ = augment(image, np.zeros(4), 127, colour_only, np.random.default_rng(4))
    diff = image[192:319, 192:319].transpose(2, 0, 1) - patch.astype(np.float64)
    assert np.ptp(diff.reshape(3, -1), axis=1).max() < 1e-4 and np.abs(diff).max() > 0.01


def test_blur_kernel_and_blur_is_a_cross():
    k = blur_kernel(5, 0.25)
    expected = np.zeros((5, 5))
    expected[:, 2] = 0.25 / 5
    expected[2, :] = 0.75 / 5
    expected[2, 2] = 1 / 5
    np.testing.assert_allclose(k, expected)
    assert k.sum() == pytest.approx(1.0)
    image = np.zeros((511, 511, 3), dtype=np.uint8)
    image[255, 255] = 255
    blur_only = dataclasses.replace(NO_AUG, blur=1.0)
    patch, _ = augment(image, np.zeros(4), 255, blur_only, np.random.default_rng(0))
    ys, xs = np.nonzero(patch[0])
    assert ((ys == 127) | (xs == 127)).all() and len(ys) > 1  # spread along the centre row/column only


# -- loader (section 5.2) --------------------------------------------------------------------------------------
def write_json(path: Path, meta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return path


def test_loader_filters(tmp_path):
    anno = write_json(tmp_path / "train.json", {
        "v1": {
            "00": {"000010": [0, 0, 10, 10], "9": [1, 1, 5, 5], "000002": [5, 5, 5, 9], "meta": "x",
                   "000001": [2, 2, 8, 12]},
            "01": {"000000": [3, 3, 1, 5]},  # w < 0: track dropped
        },
        "v2": {"00": {"000000": [0, 7]}},  # 2-value [w, h] with w = 0: video dropped
        "v3": {"00": {"000000": [20, 30]}, "01": {}},
        "v4": {},
    })
    ix = load_index(SubDataset("X", tmp_path / "crop511", anno, 1, -1))
    assert ix.videos == ("v1", "v3")
    assert [t.key for t in ix.tracks[0]] == ["00"] and [t.key for t in ix.tracks[1]] == ["00"]
    assert ix.tracks[0][0].frames == (1, 9, 10)  # integers, not strings ("10" < "9")
    assert ix.tracks[0][0].boxes == ((2, 2, 8, 12), (1, 1, 5, 5), (0, 0, 10, 10))
    assert ix.crop_path(0, 0, 1) == tmp_path / "crop511" / "v1" / "000009.00.x.jpg"


def test_crop_box_uses_context_half():
    # w 100, h 50: p = 75, s_z = sqrt(175 * 125); centre (imw//2, imh//2)
    s = 127 / math.sqrt(175 * 125)
    expected = [255 - 50 * s, 255 - 25 * s, 255 + 50 * s, 255 + 25 * s]
    np.testing.assert_allclose(crop_box((10, 20, 110, 70), (511, 511, 3)), expected)
    np.testing.assert_allclose(crop_box((100, 50), (511, 511, 3)), expected)
    assert crop_box((100, 50), (400, 600, 3))[[0, 1]] == pytest.approx([300 - 50 * s, 200 - 25 * s])


def test_pysot_sources_layout(tmp_path):
    s = pysot_sources(tmp_path)
    assert tuple(x.name for x in s) == NAMES == ("VID", "YOUTUBEBB", "COCO", "DET")
    assert [(x.root, x.anno, x.frame_range, x.num_use) for x in s] == [
        (tmp_path / "vid/crop511", tmp_path / "vid/train.json", 100, 100_000),
        (tmp_path / "yt_bb/crop511", tmp_path / "yt_bb/train.json", 3, -1),
        (tmp_path / "coco/crop511", tmp_path / "coco/train2017.json", 1, -1),
        (tmp_path / "det/crop511", tmp_path / "det/train.json", 1, -1)]


def test_synthetic_set_loads_and_matches_its_boxes(crops):
    for src in pysot_sources(crops):
        ix = load_index(src)
        assert len(ix.videos) == 3 and len(ix.tracks[0]) == 2
        assert all(len(t.frames) == (4 if src.name in ("VID", "YOUTUBEBB") else 1) for v in ix.tracks for t in v)
        image = load_image_bgr(ix.crop_path(1, 0, 0))
        assert image.shape == (511, 511, 3)
        x1, y1, x2, y2 = crop_box(ix.tracks[1][0].boxes[0], image.shape)
        inside = image[round(y1) + 3:round(y2) - 3, round(x1) + 3:round(x2) - 3].reshape(-1, 3)
        assert np.ptp(inside.astype(int), axis=0).max() < 40  # the flat object rectangle sits at the box


# -- pick lists (section 6) ------------------------------------------------------------------------------------
def test_sub_dataset_and_stream_picks():
    p = sub_dataset_picks(10, 3, 7, np.random.default_rng(0))
    assert len(p) == 7 and sorted(p[:3]) == sorted(p[3:6]) == [10, 11, 12] and p[6] in (10, 11, 12)
    assert sorted(sub_dataset_picks(5, 4, -1, np.random.default_rng(0))) == [5, 6, 7, 8]
    a, b = np.array([0, 0, 1]), np.array([7, 8])
    s = stream_picks([a, b], 12, np.random.default_rng(0))
    assert len(s) == 12
    for r in range(2):  # every full round is the same multiset in a new order
        assert Counter(s[5 * r:5 * r + 5].tolist()) == Counter([0, 0, 1, 7, 8])
    assert not np.array_equal(s, stream_picks([a, b], 12, np.random.default_rng(1)))


def test_dataset_pick_list_composition_and_length(crops):
    ds = TrainPairs(sources_with(crops, VID={"num_use": 5}), videos_per_epoch=10, epochs=3, seed=1)
    assert len(ds) == 30
    np.testing.assert_array_equal(ds.starts, [0, 3, 6, 9, 12])
    assert [len(p) for p in ds.sub_picks] == [5, 3, 3, 3]
    np.testing.assert_array_equal(sorted(ds.sub_picks[1]), [3, 4, 5])  # YOUTUBEBB: every video once
    round_ = Counter(np.concatenate(ds.sub_picks).tolist())
    assert Counter(ds.pick[:14].tolist()) == round_ and Counter(ds.pick[14:28].tolist()) == round_
    assert Counter(ds.pick[28:].tolist()) <= round_
    # the recipe's VID count dominates a tiny set: 100,000 VID picks vs 3 per other dataset
    ds = TrainPairs(pysot_sources(crops), videos_per_epoch=50, epochs=2)
    assert len(ds) == 100 and [len(p) for p in ds.sub_picks] == [100_000, 3, 3, 3]


# -- pair sampling ---------------------------------------------------------------------------------------------
def test_positive_pairs_respect_the_frame_range(tmp_path):
    base = make_synthetic_crop511(tmp_path, videos=2, frames=12)
    vid = sources_with(base, VID={"frame_range": 2})[:1]
    ds = TrainPairs(vid, videos_per_epoch=400, epochs=1, neg=0.0)
    deltas = Counter()
    for i in range(len(ds)):
        c = ds.sample(i)
        assert not c.neg and c.template[:3] == c.search[:3]
        assert c.template.video == ds.pick[i]
        deltas[c.search.position - c.template.position] += 1
    assert set(deltas) == {-2, -1, 0, 1, 2}
    coco = sources_with(base)[2:3]
    ds = TrainPairs(coco, videos_per_epoch=20, epochs=1, neg=0.0)
    assert all(ds.sample(i).template == ds.sample(i).search for i in range(20))  # single frame: same image


def test_negative_pairs_search_any_sub_dataset(crops):
    ds = TrainPairs(pysot_sources(crops), videos_per_epoch=200, epochs=1, neg=1.0)
    subs = Counter()
    for i in range(len(ds)):
        c = ds.sample(i)
        assert c.neg and (c.template.sub, c.template.video) == (0, int(ds.pick[i]))
        subs[c.search.sub] += 1
    assert set(subs) == {0, 1, 2, 3}
    item = ds[0]
    assert item["neg"] and (item["label_cls"] == 1).sum() == 0 and 0 < (item["label_cls"] == 0).sum() <= 16
    assert not item["label_loc"].any() and not item["label_loc_weight"].any()
    ds = TrainPairs(pysot_sources(crops), videos_per_epoch=200, epochs=1, neg=0.2)
    assert 15 < sum(ds.sample(i).neg for i in range(200)) < 65


# -- items (section 10) ----------------------------------------------------------------------------------------
def test_item_layout(crops):
    ds = TrainPairs(pysot_sources(crops), videos_per_epoch=4, epochs=1, neg=0.0)
    item = ds[1]
    shapes = {"template": ((3, 127, 127), np.float32), "search": ((3, 255, 255), np.float32),
              "label_cls": ((5, 25, 25), np.int64), "label_loc": ((4, 5, 25, 25), np.float32),
              "label_loc_weight": ((5, 25, 25), np.float32), "bbox": ((4,), np.float32), "neg": ((), np.bool_)}
    assert {k: (v.shape, v.dtype) for k, v in item.items()} == shapes
    assert set(np.unique(item["label_cls"])) <= {-1, 0, 1} and not item["neg"]
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_unaugmented_item_is_the_centred_crop(crops):
    coco = sources_with(crops)[2:3]
    ds = TrainPairs(coco, videos_per_epoch=3, epochs=1, neg=0.0, template_aug=NO_AUG, search_aug=NO_AUG)
    item, c = ds[0], ds.sample(0)
    image = load_image_bgr(ds.indices[0].crop_path(*c.template[1:]))
    np.testing.assert_array_equal(item["template"], image[192:319, 192:319].transpose(2, 0, 1))
    np.testing.assert_array_equal(item["search"], image[128:383, 128:383].transpose(2, 0, 1))
    box = ds.indices[0].tracks[c.template.video][c.template.track].boxes[0]
    np.testing.assert_allclose(item["bbox"], crop_box(box, image.shape) - 128, rtol=1e-6)


def test_same_index_same_arrays_in_any_order_process_or_instance(crops):
    sources = sources_with(crops, VID={"num_use": 4})
    ds = TrainPairs(sources, videos_per_epoch=20, epochs=2, seed=7)
    first = {i: ds[i] for i in (3, 11, 30)}
    again = TrainPairs(sources, videos_per_epoch=20, epochs=2, seed=7)
    for i in (30, 11, 3):  # another instance, reverse order
        for k, v in again[i].items():
            assert v.dtype == first[i][k].dtype and np.array_equal(v, first[i][k]), (i, k)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, [3, 11, 30]), batch_size=None,
                                         num_workers=2)
    for i, item in zip((3, 11, 30), loader, strict=True):
        for k, v in item.items():
            assert np.array_equal(v.numpy(), first[i][k]), (i, k)
    other = TrainPairs(sources, videos_per_epoch=20, epochs=2, seed=8)
    assert not np.array_equal(other.pick, ds.pick)
    assert not np.array_equal(other[3]["search"], first[3]["search"])
    assert not np.array_equal(ds[4]["search"], first[3]["search"])


# -- bad inputs ------------------------------------------------------------------------------------------------
def test_malformed_json_names_the_file(tmp_path):
    anno = write_json(tmp_path / "vid" / "train.json", '{"a/v": {"00": ')
    with pytest.raises(InputError, match="not valid JSON") as e:
        load_index(SubDataset("VID", tmp_path / "vid" / "crop511", anno, 100, -1))
    assert e.value.path == anno
    write_json(anno, {"a/v": {"00": {"000000": [1, 2, 3]}}})
    with pytest.raises(InputError, match="000000") as e:
        load_index(SubDataset("VID", tmp_path, anno, 100, -1))
    assert e.value.path == anno
    with pytest.raises(InputError, match="missing") as e:
        load_index(SubDataset("VID", tmp_path, tmp_path / "nope.json", 100, -1))
    assert e.value.path == tmp_path / "nope.json"


@pytest.mark.parametrize("meta", [{}, {"v": {"00": {"000000": [5, 5, 5, 9]}}, "w": {"00": {"x": [0, 0, 1, 1]}}}])
def test_json_with_every_video_empty_names_the_file(tmp_path, meta):
    anno = write_json(tmp_path / "train.json", meta)
    with pytest.raises(InputError, match="no video") as e:
        TrainPairs([SubDataset("DET", tmp_path, anno, 1, -1)], videos_per_epoch=1, epochs=1)
    assert e.value.path == anno


def test_missing_crop_names_the_crop_file(tmp_path):
    base = make_synthetic_crop511(tmp_path, videos=1, frames=1)
    coco = sources_with(base)[2:3]
    ds = TrainPairs(coco, videos_per_epoch=2, epochs=1, neg=0.0)
    shutil.rmtree(coco[0].root)
    with pytest.raises(InputError, match="missing") as e:
        ds[0]
    assert e.value.path.name.endswith(".x.jpg") and e.value.path.is_relative_to(coco[0].root)
    assert e.value.path == ds.indices[0].crop_path(*ds.sample(0).template[1:])
    assert str(e.value.path) in str(e.value)


def test_corrupt_crop_names_the_crop_file(tmp_path):
    base = make_synthetic_crop511(tmp_path, videos=1, frames=1)
    det = sources_with(base)[3:4]
    ds = TrainPairs(det, videos_per_epoch=2, epochs=1, neg=0.0)
    for p in det[0].root.rglob("*.x.jpg"):
        p.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="decode") as e:
        ds[1]
    assert e.value.path.name.endswith(".x.jpg")


def test_loading_a_pair_makes_opencv_single_threaded(crops):
    """Before its first OpenCV call a process loading pairs goes single-threaded: a DataLoader worker forked from
    a parent whose OpenCV pool had started deadlocks (common.imageio.single_thread_cv2)."""
    import subprocess
    import sys

    code = ("import cv2, sys; from pathlib import Path; from bundles.siamrpnpp.data import TrainPairs, pysot_sources;"
            "TrainPairs(pysot_sources(Path(sys.argv[1])), videos_per_epoch=1, epochs=1)[0];"
            "print(cv2.getNumThreads())")
    out = subprocess.run([sys.executable, "-c", code, str(crops)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
