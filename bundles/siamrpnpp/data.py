"""SiamRPN++ training data (pysot `TrkDataset`), written from shared/specs/siamrpnpp_training.md sections 2, 5.2,
6, 7 and 10: the crop511 JSON indices with the loader filters, the pick lists, pair sampling, the template/search
augmentation, anchor targets (targets.py) and the torch Dataset that yields one training pair per index.

Deliberate deviation from upstream: pysot draws everything from the global numpy RNG, so an item depends on what
the worker drew before it. Here every random choice of item `i` comes from its own generator seeded by
(seed, i), so an index gives bit-identical arrays in any process, worker count, order or resumed run; the pick
lists are built once from `seed`. The distributions are upstream's; only the streams differ.

Layout (what the curation writes): <base>/{vid,yt_bb,det}/{crop511/, train.json} and
<base>/coco/{crop511/, train2017.json}; a crop is crop511/<video key>/<frame:06d>.<track>.x.jpg.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from bundles.siamrpnpp.targets import AnchorTarget
from common.errors import InputError
from common.imageio import load_image_bgr, single_thread_cv2
from common.tracking.crop import context_size

EXEMPLAR_SIZE = 127
SEARCH_SIZE = 255
CONTEXT_AMOUNT = 0.5
NAMES = ("VID", "YOUTUBEBB", "COCO", "DET")  # order fixes the global video index ranges
# colour jitter: offset = M @ n, n ~ N(0, I3) (spec 7.6); rows as listed there
COLOUR_MATRIX = np.array([[-0.55919361, 0.98062831, -0.41940627],
                          [1.72091413, 0.19879334, -1.82968581],
                          [4.64467907, 4.73710203, 4.88324118]], dtype=np.float64)
BLUR_SIZES = np.arange(5, 46, 2)  # 5, 7, ..., 45
# SeedSequence words that keep the item, sub-dataset-pick and stream-pick generators apart for one seed
_ITEM, _SUB_PICKS, _STREAM_PICKS = 0, 1, 2


# -- sources and indices ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SubDataset:
    """One crop511 training set: its crop root, JSON index, ±frame range for positive pairs and pick count
    (-1: every video once per round)."""

    name: str
    root: Path
    anno: Path
    frame_range: int
    num_use: int


def pysot_sources(base: Path) -> list[SubDataset]:
    """The recipe's four sub-datasets (spec section 2) in NAMES order, under `base` laid out as the curation
    writes it (pysot's `training_dataset/` without the prefix)."""
    base = Path(base)
    return [
        SubDataset("VID", base / "vid" / "crop511", base / "vid" / "train.json", 100, 100_000),
        SubDataset("YOUTUBEBB", base / "yt_bb" / "crop511", base / "yt_bb" / "train.json", 3, -1),
        SubDataset("COCO", base / "coco" / "crop511", base / "coco" / "train2017.json", 1, -1),
        SubDataset("DET", base / "det" / "crop511", base / "det" / "train.json", 1, -1),
    ]


@dataclass(frozen=True)
class Track:
    """One object track: frame numbers sorted as integers and their JSON boxes ([x1,y1,x2,y2] or [w,h])."""

    key: str  # as in the JSON ("00"); it names the crop file verbatim
    frames: tuple[int, ...]
    boxes: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class CropIndex:
    """A loaded, filtered sub-dataset: video keys in JSON order and their tracks."""

    source: SubDataset
    videos: tuple[str, ...]
    tracks: tuple[tuple[Track, ...], ...]

    def crop_path(self, video: int, track: int, position: int) -> Path:
        """The `.x.jpg` crop of frame number `position` (in the sorted list) of a track."""
        t = self.tracks[video][track]
        return self.source.root / self.videos[video] / f"{t.frames[position]:06d}.{t.key}.x.jpg"


def _box_size(box: Any) -> tuple[float, float] | None:
    """(w, h) of a 4-value corner box or a 2-value [w, h] entry; None when it is not one of those."""
    if not isinstance(box, list) or len(box) not in (2, 4):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box):
        return None
    return (box[2] - box[0], box[3] - box[1]) if len(box) == 4 else (box[0], box[1])


def load_index(source: SubDataset) -> CropIndex:
    """Read and filter a sub-dataset's JSON (spec 5.2): boxes with w <= 0 or h <= 0 are dropped, then empty tracks
    and videos; frame keys that are not all digits are ignored; frames are sorted as integers. A missing or
    malformed file, a malformed entry, or nothing left raises InputError naming the JSON."""
    anno = source.anno
    try:
        with open(anno, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise InputError(anno, f"{source.name} annotation file missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(anno, f"{source.name} annotation is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise InputError(anno, f"{source.name} annotation must be an object of videos, got {type(meta).__name__}")
    videos: list[str] = []
    all_tracks: list[tuple[Track, ...]] = []
    for video, tracks in meta.items():
        if not isinstance(tracks, dict):
            raise InputError(anno, f"video {video!r}: must be an object of tracks")
        kept: list[Track] = []
        for track, frames in tracks.items():
            if not isinstance(frames, dict):
                raise InputError(anno, f"video {video!r} track {track!r}: must be an object of frames")
            entries = []
            for frame, box in frames.items():
                if not (frame.isascii() and frame.isdigit()):
                    continue  # upstream ignores other keys (e.g. metadata)
                size = _box_size(box)
                if size is None:
                    raise InputError(anno, f"video {video!r} track {track!r} frame {frame!r}: box must be 4 "
                                           f"numbers [x1, y1, x2, y2] or 2 [w, h], got {box!r}")
                if size[0] > 0 and size[1] > 0:
                    entries.append((int(frame), tuple(float(v) for v in box)))
            if entries:
                entries.sort(key=lambda e: e[0])
                kept.append(Track(str(track), tuple(e[0] for e in entries), tuple(e[1] for e in entries)))
        if kept:
            videos.append(str(video))
            all_tracks.append(tuple(kept))
    if not videos:
        raise InputError(anno, f"{source.name}: no video with a valid box (all {len(meta)} empty after filtering)")
    return CropIndex(source, tuple(videos), tuple(all_tracks))


def crop_box(box: Sequence[float], image_shape: Sequence[int]) -> np.ndarray:
    """The target's corners inside a 511 crop before augmentation (spec 6.5): centre (imw//2, imh//2), size
    (w, h) * 127 / s_z with s_z from the JSON box at context 0.5. float64 (4,)."""
    w, h = (box[2] - box[0], box[3] - box[1]) if len(box) == 4 else (box[0], box[1])
    scale = EXEMPLAR_SIZE / context_size(w, h, CONTEXT_AMOUNT)
    w, h = w * scale, h * scale
    cx, cy = image_shape[1] // 2, image_shape[0] // 2
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=np.float64)


# -- pick lists (spec section 6) -----------------------------------------------------------------------------
def sub_dataset_picks(start: int, n_videos: int, num_use: int, rng: np.random.Generator) -> np.ndarray:
    """Global video indices start..start+n-1: shuffled permutations appended until `num_use` entries (-1: one
    permutation), truncated. int64."""
    if num_use == -1:
        num_use = n_videos
    if num_use < 0 or n_videos <= 0:
        raise ValueError(f"num_use must be -1 or >= 0 and n_videos > 0, got {num_use}, {n_videos}")
    rounds = -(-num_use // n_videos)
    perms = rng.permuted(np.tile(np.arange(start, start + n_videos, dtype=np.int64), (rounds, 1)), axis=1)
    return perms.ravel()[:num_use]


def stream_picks(sub_picks: Sequence[np.ndarray], total: int, rng: np.random.Generator) -> np.ndarray:
    """The dataset's pick list: the concatenated sub-dataset picks, shuffled anew each round and appended until
    `total` entries, truncated. int32 (12M entries for the recipe: half the memory of int64)."""
    joined = np.concatenate([np.asarray(p, dtype=np.int64) for p in sub_picks])
    if joined.size == 0:
        raise ValueError("every sub-dataset has an empty pick list")
    rounds = -(-total // joined.size)
    out = np.empty(rounds * joined.size, dtype=np.int32)
    for r in range(rounds):
        out[r * joined.size:(r + 1) * joined.size] = rng.permutation(joined)
    return out[:total]


# -- augmentation (spec section 7) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    """One branch's augmentation: shift in 511-crop pixels, relative scale, and the blur / flip / colour
    probabilities."""

    shift: float
    scale: float
    blur: float
    flip: float
    color: float

    def __post_init__(self):
        # the recipe never flips and the spec does not define a flip's geometry: refuse rather than guess
        if self.flip != 0:
            raise ValueError(f"flip augmentation is not supported (recipe value 0.0), got {self.flip}")


TEMPLATE_AUG = AugmentConfig(shift=4.0, scale=0.05, blur=0.0, flip=0.0, color=1.0)
SEARCH_AUG = AugmentConfig(shift=64.0, scale=0.18, blur=0.2, flip=0.0, color=1.0)


def crop_window(image_shape: Sequence[int], out_size: int, scale: tuple[float, float],
                shift: tuple[float, float]) -> tuple[np.ndarray, tuple[float, float]]:
    """The crop box (x1, y1, x2, y2) in the source image and the applied (s_x, s_y): the base box of side
    out - 1 around (rows//2, cols//2), scaled by `scale` (each capped at image_dim / box_dim), then shifted by
    `shift` clipped so the box stays inside [0, dim - 1]."""
    rows, cols = image_shape[0], image_shape[1]
    side = out_size - 1
    # upstream puts x at rows//2 and y at cols//2; the 511 crops are square, so this is (255, 255) either way
    cx, cy = rows // 2, cols // 2
    sx, sy = min(scale[0], cols / side), min(scale[1], rows / side)
    w, h = side * sx, side * sy
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    dx = max(-x1, min(cols - 1 - x2, shift[0]))
    dy = max(-y1, min(rows - 1 - y2, shift[1]))
    return np.array([x1 + dx, y1 + dy, x2 + dx, y2 + dy], dtype=np.float64), (sx, sy)


def map_box(box: np.ndarray, window: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """A box in source pixels -> output pixels of the crop `window`: (box - (x1, y1)) / (s_x, s_y)."""
    origin = np.array([window[0], window[1], window[0], window[1]])
    return (np.asarray(box, dtype=np.float64) - origin) / np.array([scale[0], scale[1], scale[0], scale[1]])


def crop_roi(image: np.ndarray, window: np.ndarray, out_size: int) -> np.ndarray:
    """Affine warp of [x1, x2] x [y1, y2] onto [0, out - 1]^2, bilinear, black border; same dtype as `image`."""
    a = (out_size - 1) / (window[2] - window[0])
    b = (out_size - 1) / (window[3] - window[1])
    mapping = np.array([[a, 0.0, -a * window[0]], [0.0, b, -b * window[1]]], dtype=np.float64)
    return cv2.warpAffine(image, mapping, (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def colour_offset(noise: Sequence[float]) -> np.ndarray:
    """The per-pixel BGR offset for three N(0, 1) draws: M @ n reversed (M is in RGB order)."""
    return (COLOUR_MATRIX @ np.asarray(noise, dtype=np.float64))[::-1].copy()


def colour_jitter(image: np.ndarray, noise: Sequence[float]) -> np.ndarray:
    """image - offset (subtracted, not added; float64, not clipped: values may leave 0..255), as upstream."""
    return image - colour_offset(noise)


def blur_kernel(size: int, wx: float) -> np.ndarray:
    """size x size, zero except the centre column (each + wx/size) and centre row (each + (1 - wx)/size)."""
    kernel = np.zeros((size, size), dtype=np.float64)
    c = size // 2
    kernel[:, c] += wx / size
    kernel[c, :] += (1.0 - wx) / size
    return kernel


def augment(image: np.ndarray, box: np.ndarray, out_size: int, config: AugmentConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Spec section 7 on a 511 crop (uint8 HWC BGR): scale, shift, box mapping, crop, colour, blur. Returns the
    float32 CHW patch (out, out) and the target corners in it (float64 (4,))."""
    u = rng.uniform(-1.0, 1.0, size=4)
    window, scale = crop_window(image.shape, out_size, (1.0 + u[0] * config.scale, 1.0 + u[1] * config.scale),
                                (u[2] * config.shift, u[3] * config.shift))
    new_box = map_box(box, window, scale)
    patch: np.ndarray = crop_roi(image, window, out_size)
    if rng.random() < config.color:
        patch = colour_jitter(patch, rng.standard_normal(3))  # float64, as upstream computes it
    if rng.random() < config.blur:
        # default border (reflect 101) as upstream; ddepth -1 keeps float64 (or uint8 without colour jitter)
        patch = cv2.filter2D(patch, -1, blur_kernel(int(rng.choice(BLUR_SIZES)), float(rng.random())))
    # HWC -> CHW and the float32 cast in one copy
    return np.ascontiguousarray(patch.transpose(2, 0, 1), dtype=np.float32), new_box


# -- the dataset ---------------------------------------------------------------------------------------------
class FrameRef(NamedTuple):
    """A frame of a track: sub-dataset, video, track and position in the track's sorted frame list."""

    sub: int
    video: int
    track: int
    position: int


class PairChoice(NamedTuple):
    neg: bool
    template: FrameRef
    search: FrameRef


class TrainPairs(torch.utils.data.Dataset):
    """Index i -> one training pair (spec sections 6, 7, 8, 10) as a dict of numpy arrays: template (3,127,127)
    and search (3,255,255) float32 BGR 0..255-ish, label_cls int64 (5,25,25), label_loc float32 (4,5,25,25),
    label_loc_weight float32 (5,25,25), bbox float32 (4,) (augmented search target corners), neg bool ()."""

    def __init__(self, sources: Sequence[SubDataset], *, videos_per_epoch: int, epochs: int, neg: float = 0.2,
                 template_aug: AugmentConfig = TEMPLATE_AUG, search_aug: AugmentConfig = SEARCH_AUG,
                 seed: int = 0):
        if videos_per_epoch <= 0 or epochs <= 0:
            raise ValueError(f"videos_per_epoch and epochs must be > 0, got {videos_per_epoch}, {epochs}")
        if not sources:
            raise ValueError("no sub-dataset given")
        self.seed, self.neg = int(seed), float(neg)
        self.template_aug, self.search_aug = template_aug, search_aug
        self.indices = tuple(load_index(s) for s in sources)
        sizes = [len(ix.videos) for ix in self.indices]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # global range of each sub-dataset
        self.sub_picks = tuple(
            sub_dataset_picks(int(self.starts[k]), sizes[k], ix.source.num_use,
                              np.random.default_rng([self.seed, _SUB_PICKS, k]))
            for k, ix in enumerate(self.indices))
        self.pick = stream_picks(self.sub_picks, videos_per_epoch * epochs,
                                 np.random.default_rng([self.seed, _STREAM_PICKS]))
        self.anchor_target = AnchorTarget()

    def __len__(self) -> int:
        return int(self.pick.size)

    def item_rng(self, index: int) -> np.random.Generator:
        """The only source of randomness of item `index` (see the module docstring)."""
        return np.random.default_rng([self.seed, _ITEM, int(index)])

    def _random_frame(self, rng: np.random.Generator, sub: int, video: int | None = None) -> FrameRef:
        ix = self.indices[sub]
        if video is None:
            video = int(rng.integers(len(ix.videos)))
        track = int(rng.integers(len(ix.tracks[video])))
        return FrameRef(sub, video, track, int(rng.integers(len(ix.tracks[video][track].frames))))

    def _choose(self, rng: np.random.Generator, index: int) -> PairChoice:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        global_video = int(self.pick[index])
        sub = int(np.searchsorted(self.starts, global_video, side="right")) - 1
        video = global_video - int(self.starts[sub])
        if rng.random() < self.neg:
            # negative: template from the indexed video, search from anywhere in a uniformly chosen sub-dataset
            template = self._random_frame(rng, sub, video)
            return PairChoice(True, template, self._random_frame(rng, int(rng.integers(len(self.indices)))))
        template = self._random_frame(rng, sub, video)
        n = len(self.indices[sub].tracks[video][template.track].frames)
        r = self.indices[sub].source.frame_range
        lo, hi = max(template.position - r, 0), min(template.position + r, n - 1)
        return PairChoice(False, template, template._replace(position=int(rng.integers(lo, hi + 1))))

    def sample(self, index: int) -> PairChoice:
        """Which frames item `index` pairs (without loading them): the first draws of its generator."""
        return self._choose(self.item_rng(index), index)

    def _load(self, ref: FrameRef) -> tuple[np.ndarray, np.ndarray]:
        ix = self.indices[ref.sub]
        image = load_image_bgr(ix.crop_path(ref.video, ref.track, ref.position))
        return image, crop_box(ix.tracks[ref.video][ref.track].boxes[ref.position], image.shape)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        single_thread_cv2()  # before the first OpenCV call in this process (see its docstring)
        rng = self.item_rng(index)
        choice = self._choose(rng, index)
        template_image, template_box = self._load(choice.template)
        search_image, search_box = self._load(choice.search)
        template, _ = augment(template_image, template_box, EXEMPLAR_SIZE, self.template_aug, rng)
        search, bbox = augment(search_image, search_box, SEARCH_SIZE, self.search_aug, rng)
        label_cls, label_loc, label_loc_weight = self.anchor_target(bbox, neg=choice.neg, rng=rng)
        return {"template": template, "search": search, "label_cls": label_cls, "label_loc": label_loc,
                "label_loc_weight": label_loc_weight, "bbox": bbox.astype(np.float32),
                "neg": np.array(choice.neg)}


# -- a tiny crop511 set for tests ----------------------------------------------------------------------------
def _synthetic_crop(rng: np.random.Generator, base_colour: np.ndarray, obj_colour: np.ndarray,
                    size: tuple[float, float]) -> np.ndarray:
    # low-frequency texture (a 16x16 noise image upscaled) so crops differ and JPEG stays cheap
    small = np.clip(rng.integers(-40, 41, size=(16, 16, 3)) + base_colour, 0, 255).astype(np.uint8)
    image = cv2.resize(small, (511, 511))
    w, h = size
    cv2.rectangle(image, (round(255 - w / 2), round(255 - h / 2)), (round(255 + w / 2), round(255 + h / 2)),
                  tuple(int(c) for c in obj_colour), thickness=-1)
    return image


def make_synthetic_crop511(base: Path, *, seed: int = 0, videos: int = 3, frames: int = 4) -> Path:
    """Write a tiny crop511 set with JSON indices for all four sub-datasets in the real layout under `base`
    (see pysot_sources): VID and YOUTUBEBB videos of `frames` frames (VID video 0 has two tracks), COCO and DET
    single-frame images (image 0 has two objects). Each crop shows a rectangle of the box's crop size at the
    centre, as the crop rule puts the target. Returns `base`."""
    base = Path(base)
    rng = np.random.default_rng(seed)
    layout = [  # (dataset dir, json name, video key, frame number of position p)
        ("vid", "train.json", lambda i: f"a/ILSVRC2015_train_{i:08d}", lambda p: p),
        ("yt_bb", "train.json", lambda i: f"yt_bb_detection_train/{i % 24}/synthetic{i:04d}", lambda p: 2 * p),
        ("coco", "train2017.json", lambda i: f"train2017/{i:012d}", None),
        ("det", "train.json", lambda i: f"b/ILSVRC2013_train_{i:08d}", None),
    ]
    for folder, anno_name, video_key, frame_no in layout:
        root = base / folder / "crop511"
        meta: dict[str, dict[str, dict[str, list[float]]]] = {}
        for i in range(videos):
            key = video_key(i)
            base_colour = rng.uniform(60, 190, size=3)
            tracks: dict[str, dict[str, list[float]]] = {}
            for t in range(2 if i == 0 else 1):
                obj_colour = rng.integers(0, 256, size=3)
                boxes: dict[str, list[float]] = {}
                for p in range(frames if frame_no else 1):
                    frame = frame_no(p) if frame_no else 0
                    w, h = (float(v) for v in rng.integers(20, 200, size=2))
                    x1, y1 = (float(v) for v in rng.integers(0, 300, size=2))
                    boxes[f"{frame:06d}"] = [x1, y1, x1 + w, y1 + h]
                    s = EXEMPLAR_SIZE / context_size(w, h, CONTEXT_AMOUNT)
                    path = root / key / f"{frame:06d}.{t:02d}.x.jpg"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    if not cv2.imwrite(str(path), _synthetic_crop(rng, base_colour, obj_colour, (w * s, h * s))):
                        raise OSError(f"cannot write {path}")
                tracks[f"{t:02d}"] = boxes
            meta[key] = tracks
        (base / folder / anno_name).write_text(json.dumps(meta, indent=1))
    return base
