"""Small deterministic raw training datasets in the real layouts (ImageNet VID 2015, YouTube-BB, COCO 2017,
ImageNet DET), for the demo and the tests of the curation (`bundles/siamrpnpp/curate.py`).

Textured objects on textured backgrounds with known integer boxes; a VID track disappears for one frame (so
pysot's keep-the-last-run rule shows), a COCO annotation is a crowd, a YouTube-BB row is `absent`. Everything
else is clean: curating these datasets skips nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

_VID_SIZE = (160, 120)  # (W, H)
_YTBB_SIZE = (160, 90)
_SYNSETS = ("n01443537", "n02084071")
_YTBB_CLASSES = ((0, "person"), (23, "car"))


def _texture(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random colour field plus pixel noise: structure at two scales, so crops are not flat."""
    coarse = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-20, 21, size=(h, w, 3))
    return np.clip(smooth.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def _paint(canvas: np.ndarray, texture: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Paste `texture` resized to the box [x1, y1, x2, y2) (integer corners, inside the canvas)."""
    x1, y1, x2, y2 = box
    canvas[y1:y2, x1:x2] = cv2.resize(texture, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)


def _jpeg(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"cannot write {path}")


def _moving_box(t: int, frames: int, size: tuple[int, int], obj: tuple[int, int], lane: float,
                phase: float) -> tuple[int, int, int, int]:
    """An object of size `obj` crossing the frame left to right along a horizontal lane."""
    w_img, h_img = size
    ow, oh = obj
    u = (t / max(frames - 1, 1) + phase) % 2.0
    u = u if u <= 1.0 else 2.0 - u  # back and forth: no jump between frames
    x1 = int(round(4 + (w_img - ow - 8) * (0.15 + 0.7 * u)))
    y1 = int(round((h_img - oh) * lane))
    return x1, y1, x1 + ow, y1 + oh


def _xml(folder: str, filename: str, size: tuple[int, int], objects: list[tuple[int | None, str, tuple]]) -> str:
    """ImageNet VID/DET annotation XML; `trackid` only for VID objects."""
    parts = [f"<annotation>\n\t<folder>{folder}</folder>\n\t<filename>{filename}</filename>\n"
             f"\t<source>\n\t\t<database>ILSVRC_2015</database>\n\t</source>\n"
             f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n\t</size>\n"]
    for trackid, name, (x1, y1, x2, y2) in objects:
        track = f"\t\t<trackid>{trackid}</trackid>\n" if trackid is not None else ""
        extra = "\t\t<occluded>0</occluded>\n\t\t<generated>0</generated>\n" if trackid is not None else ""
        parts.append(f"\t<object>\n{track}\t\t<name>{name}</name>\n\t\t<bndbox>\n\t\t\t<xmax>{x2}</xmax>\n"
                     f"\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymax>{y2}</ymax>\n\t\t\t<ymin>{y1}</ymin>\n\t\t</bndbox>\n"
                     f"{extra}\t</object>\n")
    parts.append("</annotation>\n")
    return "".join(parts)


def _vid_video(rng: np.random.Generator, ann_dir: Path, data_dir: Path, folder: str, frames: int) -> None:
    """Track 0 crosses every frame; track 1 is missing from frame 2 (two runs: pysot keeps the later one)."""
    size = _VID_SIZE
    bg = _texture(rng, size[1], size[0], 6)
    textures = [_texture(rng, 24, 24, 3) for _ in range(2)]
    dims = [(int(rng.integers(28, 44)), int(rng.integers(24, 40))) for _ in range(2)]
    ann_dir.mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        image = bg.copy()
        objects = []
        for track in range(2):
            if track == 1 and t == 2 and frames >= 5:
                continue
            box = _moving_box(t, frames, size, dims[track], 0.1 + 0.55 * track, 0.5 * track)
            _paint(image, textures[track], box)
            objects.append((track, _SYNSETS[track], box))
        _jpeg(data_dir / f"{t:06d}.JPEG", image)
        (ann_dir / f"{t:06d}.xml").write_text(_xml(folder, f"{t:06d}", size, objects))


def _make_vid(root: Path, rng: np.random.Generator, videos: int, frames: int) -> Path:
    base = root / "ILSVRC2015"
    for i in range(videos):
        sub = f"train/ILSVRC2015_VID_train_{i % 4:04d}/ILSVRC2015_train_{i:08d}"
        _vid_video(rng, base / "Annotations/VID" / sub, base / "Data/VID" / sub, sub[6:], frames)
    sub = "val/ILSVRC2015_val_00000000"
    _vid_video(rng, base / "Annotations/VID" / sub, base / "Data/VID" / sub, sub, frames)
    return base


def _still(rng: np.random.Generator, size: tuple[int, int], n_objects: int) -> tuple[np.ndarray, list[tuple]]:
    """A textured image with `n_objects` textured rectangles side by side; returns it and their boxes."""
    w_img, h_img = size
    image = _texture(rng, h_img, w_img, 5)
    boxes = []
    slot = w_img // n_objects
    for k in range(n_objects):
        ow, oh = int(rng.integers(slot // 3, slot - 8)), int(rng.integers(h_img // 4, h_img // 2))
        x1 = k * slot + int(rng.integers(2, slot - ow - 2))
        y1 = int(rng.integers(2, h_img - oh - 2))
        box = (x1, y1, x1 + ow, y1 + oh)
        _paint(image, _texture(rng, 20, 20, 3), box)
        boxes.append(box)
    return image, boxes


def _make_det(root: Path, rng: np.random.Generator, images: int) -> Path:
    base = root / "ILSVRC"
    entries = []
    for k in range(images):
        # Image 0 in ILSVRC2013_train/<synset>/ (pysot's subset a, with sub-folders), the rest in ILSVRC2014_train_0000.
        sub = (f"train/ILSVRC2013_train/{_SYNSETS[0]}/{_SYNSETS[0]}_{k:08d}" if k == 0
               else f"train/ILSVRC2014_train_0000/ILSVRC2014_train_{k:08d}")
        entries.append(sub)
    entries.append("val/ILSVRC2013_val_00000001")
    for k, sub in enumerate(entries):
        size = (160, 120) if k % 2 == 0 else (120, 160)
        image, boxes = _still(rng, size, 1 + k % 2)
        _jpeg(base / "Data/DET" / f"{sub}.JPEG", image)
        ann = base / "Annotations/DET" / f"{sub}.xml"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(_xml(str(Path(sub).parent.name), Path(sub).name, size,
                            [(None, _SYNSETS[j % 2], b) for j, b in enumerate(boxes)]))
    return base


def _make_coco(root: Path, rng: np.random.Generator, images: int) -> Path:
    next_id = 1
    for split, n in (("train2017", images), ("val2017", 1)):
        imgs, anns = [], []
        for k in range(n):
            image_id = 1000 * (split == "val2017") + k + 1
            size = (160, 120) if k % 2 == 0 else (120, 160)
            image, boxes = _still(rng, size, 2)
            name = f"{image_id:012d}.jpg"
            _jpeg(root / split / name, image)
            imgs.append({"id": image_id, "file_name": name, "width": size[0], "height": size[1]})
            for j, (x1, y1, x2, y2) in enumerate(boxes):
                # COCO boxes are [x, y, w, h] floats; the second object of each image is a crowd (pysot keeps it).
                anns.append({"id": next_id, "image_id": image_id, "category_id": 1 + j, "iscrowd": int(j == 1),
                             "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                             "area": float((x2 - x1) * (y2 - y1))})
                next_id += 1
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"info": {"description": "synthetic"}, "images": imgs, "annotations": anns,
             "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}))
    return root


def _youtube_id(rng: np.random.Generator) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=11))


def _make_ytbb(root: Path, rng: np.random.Generator, videos: int, frames: int) -> Path:
    """CSV rows `youtube_id,timestamp_ms,class_id,class_name,object_id,object_presence,xmin,xmax,ymin,ymax`
    (fractions of the frame size), frames at `<d_set>/<class_id>/<yid>_<ms>_<class_id>_<obj>.jpg` (one file per
    annotated object, as the download scripts write them). Object 1 of every video is `absent` at its 2nd frame."""
    w_img, h_img = _YTBB_SIZE
    for d_set, n_videos in (("yt_bb_detection_train", videos), ("yt_bb_detection_validation", 1)):
        rows = []
        for v in range(n_videos):
            yid = _youtube_id(rng)
            class_id, class_name = _YTBB_CLASSES[v % len(_YTBB_CLASSES)]
            bg = _texture(rng, h_img, w_img, 6)
            textures = [_texture(rng, 20, 20, 3) for _ in range(2)]
            dims = [(int(rng.integers(24, 40)), int(rng.integers(20, 34))) for _ in range(2)]
            for t in range(frames):
                ts = 1000 * t
                image = bg.copy()
                boxes = [_moving_box(t, frames, _YTBB_SIZE, dims[k], 0.1 + 0.5 * k, 0.4 * k) for k in range(2)]
                absent = frames >= 3 and t == 1
                for k, box in enumerate(boxes):
                    if not (k == 1 and absent):
                        _paint(image, textures[k], box)
                for k, (x1, y1, x2, y2) in enumerate(boxes):
                    if k == 1 and absent:
                        rows.append(f"{yid},{ts},{class_id},{class_name},{k},absent,-1.0,-1.0,-1.0,-1.0")
                        continue
                    rows.append(f"{yid},{ts},{class_id},{class_name},{k},present,"
                                f"{x1 / w_img:.6f},{x2 / w_img:.6f},{y1 / h_img:.6f},{y2 / h_img:.6f}")
                    _jpeg(root / d_set / str(class_id) / f"{yid}_{ts}_{class_id}_{k}.jpg", image)
        root.mkdir(parents=True, exist_ok=True)
        (root / f"{d_set}.csv").write_text("\n".join(rows) + "\n")
    return root


def make_synthetic_raw(root: Path, *, seed: int = 0, videos: int = 2, frames: int = 6,
                       images: int = 3) -> dict[str, Path]:
    """Write the four raw datasets under `root` and return the folder `curate()` takes for each name:
    `vid` (ILSVRC2015/ with Annotations/VID and Data/VID, `videos` train videos + 1 val video of `frames`
    frames), `det` (ILSVRC/ with `images` train images + 1 val), `coco` (annotations/instances_*2017.json +
    images, `images` train + 1 val), `yt_bb` (the two CSVs + frames, `videos` train videos + 1 validation).
    Deterministic in `seed`; idempotent (an existing complete set with the same parameters is left as is)."""
    root = Path(root)
    paths = {"vid": root / "vid" / "ILSVRC2015", "yt_bb": root / "yt_bb", "coco": root / "coco",
             "det": root / "det" / "ILSVRC"}
    marker = root / ".complete"
    params = f"seed={seed} videos={videos} frames={frames} images={images}"
    if marker.is_file() and marker.read_text() == params:
        return paths
    if videos < 1 or frames < 2 or images < 1:
        raise ValueError("need videos >= 1, frames >= 2 (a VID track needs two consecutive frames), images >= 1")
    rng_vid, rng_ytbb, rng_coco, rng_det = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))
    _make_vid(root / "vid", rng_vid, videos, frames)
    _make_ytbb(root / "yt_bb", rng_ytbb, videos, frames)
    _make_coco(root / "coco", rng_coco, images)
    _make_det(root / "det", rng_det, images)
    marker.write_text(params)
    return paths
