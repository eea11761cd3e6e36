"""SiamRPN++ training-data curation: crop511 images and pysot's JSON indices from the raw datasets in their standard
layouts (ImageNet VID 2015, YouTube-BB, COCO 2017, ImageNet DET). Facts: shared/specs/siamrpnpp_training.md
section 5 and established facts 15.3, 15.4 and 15.8; written from the spec, not from upstream's scripts.

Output, per dataset `name`:
- `<out_root>/<name>/crop511/<video key>/<frame:06d>.<track:02d>.x.jpg` (511 x 511, OpenCV default JPEG quality);
- `<out_root>/<name>/<json>`: `{video key: {track %02d: {frame %06d: [x1, y1, x2, y2]}}}` (pysot's names:
  VID / YouTube-BB / DET `train.json` + `val.json`, COCO `train2017.json` + `val2017.json`);
- `<out_root>/<name>/curation_report.json`: crops written / reused and every skipped object with its file and why.

The 127 x 127 `.z.jpg` crop that upstream also writes is NOT written: training never reads it (spec 5.1), and
it would double the file count (hundreds of thousands of extra inodes for COCO and DET).

Resumable: each crop is written under a temporary name in its directory and renamed into place, so a file with a
final name is complete and is reused by the next run; leftovers of an interrupted write are deleted. The JSON
files and the report are written (atomically) only at the end of a run. One curation per output folder at a time.

Per-object problems (missing or corrupt image, malformed XML / JSON / CSV entry, degenerate box, box outside the
image, empty video, duplicate annotation) are skipped and recorded with the file and the reason; objects dropped
by a pysot rule (VID single-frame runs, YouTube-BB absent rows ...) are counted separately. Problems with the
layout itself (missing annotation root, unreadable COCO annotation file) raise InputError.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing
import os
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.curation import (
    BAD_ANNOTATION,
    BAD_IMAGE,
    DEGENERATE,
    DUPLICATE,
    EMPTY_VIDEO,
    MISSING_IMAGE,
    OUTSIDE,
    VID_SUBSETS,
    CurationProgress,
    CurationReport,
    Malformed,
    TaskResult,
    default_workers,
    ilsvrc_root,
    run_tasks,
    scan_crops,
    subset_dirs,
    write_atomic,
    write_json,
    xml_number,
)
from common.errors import InputError

log = logging.getLogger("zoo.siamrpnpp.curate")

DATASETS = ("vid", "yt_bb", "coco", "det")
JSON_NAMES = {
    "vid": ("train.json", "val.json"),
    "yt_bb": ("train.json", "val.json"),
    "coco": ("train2017.json", "val2017.json"),
    "det": ("train.json", "val.json"),
}
EXEMPLAR = 127  # template side; the search crop side is derived from it (spec 5.1 step 3)
INSTANCE = 511
CONTEXT = 0.5
CROP_DIR = "crop511"
REPORT_NAME = "curation_report.json"
PARAMS_NAME = ".crop_params.json"
# Objects dropped by a pysot rule (not a problem with the input: counted).
VID_SINGLE = "VID box in a single-frame run (pysot drops isolated frames)"
VID_OVERWRITTEN = "VID box in an earlier run of its track (pysot keeps only the last run per trackid)"
VID_NO_RUN = "VID video without a multi-frame track"
NO_OBJECTS = "image without objects"
YTBB_ABSENT = "YouTube-BB row with object_presence=absent"

# DET subsets. The spec names only a..i ("a has sub-folders", "val = i/"); which official folder each letter is
# comes from pysot's DET readme symlinks (a = ILSVRC2013_train, b..h = ILSVRC2014_train_0000..0006, i = val).
_DET_SUBSETS = {
    "a": ("train/ILSVRC2013_train",),
    **{chr(ord("b") + k): (f"train/ILSVRC2014_train_{k:04d}",) for k in range(7)},
    "i": ("val",),
}
_YTBB_SPLITS = (("train.json", "yt_bb_detection_train"), ("val.json", "yt_bb_detection_validation"))
_YTBB_COLUMNS = 10  # youtube_id, timestamp_ms, class_id, class_name, object_id, object_presence, xmin, xmax, ymin, ymax


# -- the crop rule (spec 5.1) -------------------------------------------------------------------------------
def search_region(box: Sequence[float], out_size: int = INSTANCE) -> tuple[float, float, float, float]:
    """(cx, cy, s_z, side) for a box [x1, y1, x2, y2]: s_z = sqrt((w + p)(h + p)), p = (w + h)/2, and the side of
    the square that becomes an out_size crop, s_z + 2 * ((out_size - 127)/2) / (127 / s_z) = s_z * out_size/127
    (written as spec 5.1 step 3 states it so the floating-point value is upstream's)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    p = CONTEXT * (w + h)
    s_z = math.sqrt((w + p) * (h + p))
    side = s_z + 2 * ((out_size - EXEMPLAR) / 2) / (EXEMPLAR / s_z)
    return (x1 + x2) / 2, (y1 + y2) / 2, s_z, side


def pysot_padding(image: np.ndarray) -> tuple[int, ...]:
    """Per-channel image mean rounded half-to-even (127.5 -> 128, 126.5 -> 126), the crop511 border (spec 15.4;
    the tracker's crop truncates instead). The sum is exact (integers) and divided once, as numpy's mean does:
    cv2.mean multiplies by 1/n, which can land an exact x.5 one ulp low and round it the other way."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    sums = cv2.sumElems(image)[:channels]
    n = image.shape[0] * image.shape[1]
    return tuple(int(v) for v in np.rint(np.array(sums, dtype=np.float64) / n))


def crop_like_pysot(image: np.ndarray, box: Sequence[float], out_size: int = INSTANCE, *,
                    padding: Sequence[float] | None = None) -> np.ndarray:
    """The crop511 rule (spec 5.1): the square of side s_z*out_size/127 centred on the box, warped bilinearly
    (cv2.warpAffine) onto [0, out_size-1]^2 with scale a = (out_size-1)/side and shift -a*(c - side/2); outside
    the image the constant `padding` (default: the image's channel means rounded half-to-even). The target
    lands at the crop centre ((out_size-1)/2 = 255) with size (w, h) * (out_size-1)/side ~ (w, h) * 127/s_z.
    out_size=127 gives the (unused) template crop. OpenCV >= 5 interpolates exactly; 4.x differs (spec 15.3)."""
    cx, cy, _, side = search_region(box, out_size)
    # The mapping is computed from the corners of the square, as "maps [c - s/2, c + s/2] onto [0, out-1]" reads.
    x0, y0, x1, y1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    ax, ay = (out_size - 1) / (x1 - x0), (out_size - 1) / (y1 - y0)
    mapping = np.array([[ax, 0.0, -ax * x0], [0.0, ay, -ay * y0]], dtype=np.float64)
    pad = pysot_padding(image) if padding is None else tuple(float(v) for v in padding)
    return cv2.warpAffine(image, mapping, (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=pad)


def crop_name(frame: int, track: int) -> str:
    """`<frame:06d>.<track:02d>.x.jpg`, the crop file of one object in one frame."""
    return f"{frame:06d}.{track:02d}.x.jpg"


# -- report -------------------------------------------------------------------------------------------------


# -- work units ---------------------------------------------------------------------------------------------
@dataclass
class _Object:
    track: int
    box: tuple[float, ...]  # [x1, y1, x2, y2] as annotated (YouTube-BB: fractions of the frame size)
    source: str  # annotation file
    where: str  # entry within it ("object 2", "annotation id 17", "line 40")


@dataclass
class _Frame:
    image: str
    frame: int
    objects: list[_Object]
    size: tuple[int, int] | None  # (W, H) from the annotation; None: from the decoded image
    normalized: bool = False  # YouTube-BB boxes are fractions of the frame size


@dataclass
class _Unit:
    key: str
    frames: list[_Frame]


def _box_problem(box: Sequence[float], size: tuple[int, int] | None) -> tuple[str, str] | None:
    """(reason, detail) when a pixel box cannot be cropped; a box partly outside the image is fine (padded).
    With no size (not known yet) only the box itself is checked."""
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box) or x2 - x1 <= 0 or y2 - y1 <= 0:
        return DEGENERATE, f"box {_fmt(box)}"
    if size is None:
        return None
    w, h = size
    if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
        return OUTSIDE, f"box {_fmt(box)} does not overlap the {w}x{h} image"
    return None


def _fmt(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def _load(path: str) -> tuple[np.ndarray | None, str | None]:
    if not os.path.isfile(path):
        return None, MISSING_IMAGE
    image = cv2.imread(path, cv2.IMREAD_COLOR)  # pysot reads with cv2.imread's default (3-channel BGR)
    return (image, None) if image is not None else (None, BAD_IMAGE)


def _crop_unit(unit: _Unit, crop_root: str, res: TaskResult) -> None:
    """Crop every object of one video (or image) unless its crop exists, and add its JSON entries."""
    crop_dir = os.path.join(crop_root, unit.key)
    existing = scan_crops(crop_dir)
    tracks: dict[str, dict[str, list[float]]] = {}
    made_dir = bool(existing)
    for fr in unit.frames:
        names = [crop_name(fr.frame, o.track) for o in fr.objects]
        # An image is decoded only when a crop is missing, or when its size is needed for the boxes.
        need = fr.size is None or fr.normalized or any(existing.get(n, 0) <= 0 for n in names)
        image, problem = _load(fr.image) if need else (None, None)
        if problem:
            for o in fr.objects:
                res.skip(problem, fr.image, f"{unit.key} frame {fr.frame:06d} track {o.track:02d} "
                                            f"({o.where} of {o.source})")
            continue
        size = (image.shape[1], image.shape[0]) if fr.size is None or fr.normalized else fr.size
        padding = None
        for o, name in zip(fr.objects, names, strict=True):
            box = o.box
            if fr.normalized:
                box = (box[0] * size[0], box[1] * size[1], box[2] * size[0], box[3] * size[1])
            bad = _box_problem(box, size)
            if bad:
                res.skip(bad[0], o.source, f"{o.where}: {bad[1]}")
                continue
            if existing.get(name, 0) > 0:
                res.reused += 1
            else:
                if padding is None:
                    padding = pysot_padding(image)
                crop = crop_like_pysot(image, box, INSTANCE, padding=padding)
                ok, jpg = cv2.imencode(".jpg", crop)  # OpenCV's default quality (95), as upstream
                if not ok:
                    raise RuntimeError(f"cv2.imencode failed for {fr.image}")
                if not made_dir:
                    os.makedirs(crop_dir, exist_ok=True)
                    made_dir = True
                write_atomic(os.path.join(crop_dir, name), jpg.tobytes())
                res.written += 1
            tracks.setdefault(f"{o.track:02d}", {})[f"{fr.frame:06d}"] = list(box)
    if tracks:
        res.entries[unit.key] = tracks


# -- XML (VID, DET) -----------------------------------------------------------------------------------------


def _xml_size(root: ET.Element) -> tuple[int, int] | None:
    """(W, H) from <size>; None when absent or not positive numbers: the decoded image then gives the size
    (a metadata slip is no reason to lose the boxes)."""
    size = root.find("size")
    try:
        w, h = xml_number(size.findtext("width"), "width"), xml_number(size.findtext("height"), "height")
    except (Malformed, AttributeError):
        return None
    return (int(w), int(h)) if w > 0 and h > 0 else None


def _xml_box(obj: ET.Element) -> tuple[float, ...]:
    bb = obj.find("bndbox")
    if bb is None:
        raise Malformed("missing <bndbox>")
    return tuple(xml_number(bb.findtext(t), t) for t in ("xmin", "ymin", "xmax", "ymax"))


def _parse_xml(path: str, res: TaskResult) -> tuple[ET.Element, tuple[int, int] | None] | None:
    try:
        root = ET.parse(path).getroot()
        return root, _xml_size(root)
    except (ET.ParseError, OSError) as e:
        res.skip(BAD_ANNOTATION, path, f"whole file: {e}")
        return None


def _runs(frames: list[int]) -> list[list[int]]:
    """Split sorted frame numbers into runs of consecutive numbers."""
    runs = [[frames[0]]]
    for f in frames[1:]:
        if f == runs[-1][-1] + 1:
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


def _vid_unit(key: str, ann_dir: str, data_dir: str, res: TaskResult) -> _Unit | None:
    """One VID video: every valid box of every frame's XML, then pysot's parse_vid/gen_json track rule."""
    try:
        xmls = sorted(n for n in os.listdir(ann_dir) if n.endswith(".xml"))
    except OSError as e:
        res.skip(EMPTY_VIDEO, ann_dir, f"cannot list the video's annotations: {e}")
        return None
    if not xmls:
        res.skip(EMPTY_VIDEO, ann_dir, f"{key}: no annotation (.xml) files")
        return None
    boxes: dict[int, dict[int, _Object]] = defaultdict(dict)  # trackid -> frame -> object
    sizes: dict[int, tuple[int, int] | None] = {}
    stems: dict[int, str] = {}  # the image is <stem>.JPEG beside the XML's mirror folder
    for name in xmls:
        path = os.path.join(ann_dir, name)
        stem = name[:-4]
        if not stem.isdigit():
            res.skip(BAD_ANNOTATION, path, "file name is not a frame number")
            continue
        parsed = _parse_xml(path, res)
        if parsed is None:
            continue
        root, size = parsed
        frame = int(stem)
        sizes[frame], stems[frame] = size, stem
        for k, obj in enumerate(root.findall("object")):
            try:
                track = int(xml_number(obj.findtext("trackid"), "trackid"))
                box = _xml_box(obj)
            except Malformed as e:
                res.skip(BAD_ANNOTATION, path, f"object {k}: {e}")
                continue
            bad = _box_problem(box, size)
            if bad:
                res.skip(bad[0], path, f"object {k} (trackid {track}): {bad[1]}")
                continue
            if frame in boxes[track]:
                # pysot keeps the last box of a trackid within a frame (its lookup loop does not stop at a match).
                prev = boxes[track][frame]
                res.skip(DUPLICATE, path, f"{prev.where}: trackid {track} appears again in this frame")
            boxes[track][frame] = _Object(track, box, path, f"object {k} (trackid {track})")
    if not boxes:
        if sizes:
            res.skip(EMPTY_VIDEO, ann_dir, f"{key}: no usable object in {len(sizes)} annotated frames")
        return None
    per_frame: dict[int, list[_Object]] = defaultdict(list)
    for track in sorted(boxes):
        runs = _runs(sorted(boxes[track]))
        long = [r for r in runs if len(r) > 1]
        res.excluded[VID_SINGLE] += len(runs) - len(long)
        if not long:
            continue
        # pysot quirk (gen_json): every run is stored under the same trackid key, so a later run overwrites the
        # earlier ones and only the last run of a track reaches the JSON. Reproduced; the rest is counted.
        res.excluded[VID_OVERWRITTEN] += sum(len(r) for r in long[:-1])
        for f in long[-1]:
            per_frame[f].append(boxes[track][f])
    if not per_frame:
        res.excluded[VID_NO_RUN] += 1
        return None
    return _Unit(key, [_Frame(os.path.join(data_dir, f"{stems[f]}.JPEG"), f, objs, sizes[f])
                       for f, objs in sorted(per_frame.items())])


def _det_unit(key: str, xml: str, image: str, res: TaskResult) -> _Unit | None:
    """One DET image: every object, track = its index in the XML, frame 000000."""
    parsed = _parse_xml(xml, res)
    if parsed is None:
        return None
    root, size = parsed
    objs = root.findall("object")
    if not objs:
        res.excluded[NO_OBJECTS] += 1  # DET has negative images
        return None
    objects = []
    for k, obj in enumerate(objs):
        try:
            objects.append(_Object(k, _xml_box(obj), xml, f"object {k}"))
        except Malformed as e:
            res.skip(BAD_ANNOTATION, xml, f"object {k}: {e}")
    return _Unit(key, [_Frame(image, 0, objects, size)]) if objects else None


# -- tasks run in the worker processes (module-level, picklable arguments) ----------------------------------
def _task_vid(jobs: list[tuple[str, str, str]], crop_root: str) -> TaskResult:
    res = TaskResult()
    for key, ann_dir, data_dir in jobs:
        unit = _vid_unit(key, ann_dir, data_dir, res)
        if unit is not None:
            _crop_unit(unit, crop_root, res)
        res.units += 1
    return res


def _task_det(jobs: list[tuple[str, str, str]], crop_root: str) -> TaskResult:
    res = TaskResult()
    for key, xml, image in jobs:
        unit = _det_unit(key, xml, image, res)
        if unit is not None:
            _crop_unit(unit, crop_root, res)
        res.units += 1
    return res


def _task_units(units: list[_Unit], crop_root: str) -> TaskResult:
    res = TaskResult()
    for unit in units:
        _crop_unit(unit, crop_root, res)
        res.units += 1
    return res


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core; OpenCV's own threads would oversubscribe them


# -- per-dataset enumeration (main process) -----------------------------------------------------------------
@dataclass
class _Split:
    json_name: str
    task: Callable[[list, str], TaskResult]
    jobs: list  # one entry per video / image
    chunk: int  # jobs per task
    pre: TaskResult = field(default_factory=TaskResult)  # problems found while enumerating


def _vid_splits(raw_root: Path, limit: int | None) -> list[_Split]:
    base = ilsvrc_root(raw_root, "VID")
    by_split: dict[str, list] = {"train.json": [], "val.json": []}
    found = []
    for letter, official in VID_SUBSETS.items():
        dirs = subset_dirs(base, "VID", letter, official)
        if dirs is None:
            continue
        found.append(letter)
        ann, data = dirs
        # train.json = a..d ("train" in the key), val.json = e ("val").
        target = by_split["val.json" if letter == "e" else "train.json"]
        for video in sorted(p.name for p in ann.iterdir() if p.is_dir()):
            target.append((f"{letter}/{video}", str(ann / video), str(data / video)))
    if not by_split["train.json"]:
        raise InputError(base / "Annotations" / "VID" / "train",
                         "no VID training videos: expected sub-folders a..d (pysot's symlinks) or "
                         "ILSVRC2015_VID_train_0000..0003, each holding <video>/<frame>.xml")
    log.info("vid: subsets %s found in %s", ",".join(found), base)
    return [_Split(name, _task_vid, jobs[:limit], 1) for name, jobs in by_split.items() if jobs]


def _det_splits(raw_root: Path, limit: int | None) -> list[_Split]:
    base = ilsvrc_root(raw_root, "DET")
    by_split: dict[str, list] = {"train.json": [], "val.json": []}
    for letter, official in _DET_SUBSETS.items():
        dirs = subset_dirs(base, "DET", letter, official)
        if dirs is None:
            continue
        ann, data = dirs
        # Subset a (ILSVRC2013_train) has one sub-folder per synset; the key drops it: <subset>/<xml stem>.
        xmls = sorted(ann.glob("*/*.xml")) if letter == "a" else sorted(ann.glob("*.xml"))
        target = by_split["val.json" if letter == "i" else "train.json"]  # pysot: val = keys with "i/"
        for x in xmls:
            target.append((f"{letter}/{x.stem}", str(x), str((data / x.relative_to(ann)).with_suffix(".JPEG"))))
    if not by_split["train.json"]:
        raise InputError(base / "Annotations" / "DET" / "train",
                         "no DET training annotations: expected sub-folders a..h (pysot's symlinks) or "
                         "ILSVRC2013_train/<synset>/*.xml and ILSVRC2014_train_000k/*.xml")
    return [_Split(name, _task_det, jobs[:limit], 64) for name, jobs in by_split.items() if jobs]


def _finite_numbers(values: object, n: int) -> list[float] | None:
    if not isinstance(values, (list, tuple)) or len(values) != n:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return None
    return list(values)


def _coco_split(ann_file: Path, img_dir: Path, split: str, limit: int | None) -> _Split:
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(ann_file, f"not a readable COCO annotation JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise InputError(ann_file, "expected a JSON object with 'images' and 'annotations' lists (COCO instances)")
    pre = TaskResult()
    src = str(ann_file)
    images: dict[object, tuple[str, tuple[int, int] | None]] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            pre.skip(BAD_ANNOTATION, src, f"images[{i}]: needs 'id' and 'file_name'")
            continue
        wh = _finite_numbers([im.get("width"), im.get("height")], 2)
        images[im["id"]] = (im["file_name"], (int(wh[0]), int(wh[1])) if wh and min(wh) > 0 else None)
    per_image: dict[object, list[tuple[int, dict]]] = defaultdict(list)
    for j, ann in enumerate(data["annotations"]):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if image_id not in images:
            pre.skip(BAD_ANNOTATION, src, f"annotations[{j}]: image_id {image_id!r} is not in 'images'")
            continue
        per_image[image_id].append((j, ann))
    units = []
    for image_id, (file_name, size) in images.items():
        anns = per_image.get(image_id)
        if not anns:
            pre.excluded[NO_OBJECTS] += 1
            continue
        objects = []
        # Track = index of the annotation within its image, crowd included; skipped ones keep their index.
        for track, (j, ann) in enumerate(anns):
            where = f"annotations[{j}] (id {ann.get('id')!r}, image {file_name})"
            bbox = _finite_numbers(ann.get("bbox"), 4)
            if bbox is None:
                pre.skip(BAD_ANNOTATION, src, f"{where}: 'bbox' is not 4 finite numbers: {ann.get('bbox')!r}")
                continue
            x, y, w, h = bbox
            objects.append(_Object(track, (x, y, x + w, y + h), src, where))
        if objects:
            units.append(_Unit(f"{split}/{Path(file_name).stem}", [_Frame(str(img_dir / file_name), 0, objects,
                                                                          size)]))
    units.sort(key=lambda u: u.key)
    return _Split(f"{split}.json", _task_units, units[:limit], 32, pre)


def _coco_splits(raw_root: Path, limit: int | None) -> list[_Split]:
    splits = []
    for split in ("train2017", "val2017"):
        ann_file = raw_root / "annotations" / f"instances_{split}.json"
        if not ann_file.is_file():
            if split == "train2017":
                raise InputError(ann_file, "COCO training annotations missing (expected annotations/"
                                           "instances_train2017.json and images in train2017/)")
            log.info("coco: %s absent; %s.json not written", ann_file, split)
            continue
        if not (raw_root / split).is_dir():
            raise InputError(raw_root / split, f"COCO image folder missing (annotations are in {ann_file})")
        splits.append(_coco_split(ann_file, raw_root / split, split, limit))
    return splits


def _ytbb_split(csv_path: Path, frames_dir: Path, json_name: str, limit: int | None) -> _Split:
    """YouTube-BB from the CSV and the downloaded frames `<d_set>/<class_id>/<yid>_<ms>_<class_id>_<obj>.jpg`
    (the layout of the YouTube-BB download scripts pysot uses). Written from spec 5.2: upstream's par_crop fails
    on Python 3 (spec 15.8)."""
    pre = TaskResult()
    d_set = frames_dir.name
    src = str(csv_path)
    videos: dict[str, dict[tuple[int, int], _Frame]] = defaultdict(dict)
    try:
        f = open(csv_path, newline="")
    except OSError as e:
        raise InputError(csv_path, f"cannot read: {e}") from None
    with f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if not row or (line_no == 1 and row[0] == "youtube_id"):
                continue  # the official CSVs have no header; tolerate one
            where = f"line {line_no}"
            if len(row) != _YTBB_COLUMNS:
                pre.skip(BAD_ANNOTATION, src, f"{where}: expected {_YTBB_COLUMNS} columns, got {len(row)}")
                continue
            yid, ts, class_id, _, obj, presence = (c.strip() for c in row[:6])
            if presence == "absent":
                pre.excluded[YTBB_ABSENT] += 1
                continue
            try:
                ts_ms, track = int(ts), int(obj)
                xmin, xmax, ymin, ymax = (float(v) for v in row[6:10])
            except ValueError:
                pre.skip(BAD_ANNOTATION, src, f"{where}: timestamp, object id or box not numbers: {row!r}")
                continue
            if not yid or not class_id or ts_ms < 0:
                pre.skip(BAD_ANNOTATION, src, f"{where}: empty youtube_id / class_id or negative timestamp")
                continue
            # UNCERTAIN (spec 5.2 / 14.4): upstream's key may carry a "./" prefix; written without one here, the
            # form the crop paths and the loader agree on.
            key = f"{d_set}/{class_id}/{yid}"
            frame = ts_ms // 1000  # spec: timestamp_ms/1000 as %06d (seconds; the video is annotated at ~1 fps)
            image = frames_dir / class_id / f"{yid}_{ts}_{class_id}_{obj}.jpg"
            entry = _Frame(str(image), frame, [_Object(track, (xmin, ymin, xmax, ymax), src, where)], None, True)
            prev = videos[key].get((track, frame))
            if prev is not None:
                pre.skip(DUPLICATE, src, f"{prev.objects[0].where}: object {track} at second {frame} again in "
                                         f"{where}")
            videos[key][(track, frame)] = entry
    units = [_Unit(k, [v[t] for t in sorted(v, key=lambda tf: (tf[1], tf[0]))]) for k, v in sorted(videos.items())]
    return _Split(json_name, _task_units, units[:limit], 16, pre)


def _ytbb_splits(raw_root: Path, limit: int | None) -> list[_Split]:
    splits = []
    for json_name, d_set in _YTBB_SPLITS:
        csv_path = raw_root / f"{d_set}.csv"
        if not csv_path.is_file():
            if json_name == "train.json":
                raise InputError(csv_path, "YouTube-BB training CSV missing (expected yt_bb_detection_train.csv "
                                           "and the frames in yt_bb_detection_train/<class_id>/)")
            log.info("yt_bb: %s absent; %s not written", csv_path, json_name)
            continue
        if not (raw_root / d_set).is_dir():
            raise InputError(raw_root / d_set, "YouTube-BB frame folder missing (expected <class_id>/"
                                               "<youtube_id>_<timestamp_ms>_<class_id>_<object_id>.jpg)")
        splits.append(_ytbb_split(csv_path, raw_root / d_set, json_name, limit))
    return splits


_ENUMERATE = {"vid": _vid_splits, "det": _det_splits, "coco": _coco_splits, "yt_bb": _ytbb_splits}
_UNIT_WORD = {"vid": "videos", "yt_bb": "videos", "coco": "images", "det": "images"}


# -- running ------------------------------------------------------------------------------------------------


def _check_params(crop_root: Path) -> None:
    """Record how the crops are made; warn when resuming crops made by another OpenCV (spec 15.3: 4.x and 5.x
    crops differ by up to 6 levels, so a mix is not one consistent data set)."""
    params = {"out_size": INSTANCE, "context": CONTEXT, "opencv": cv2.__version__, "jpeg_quality": 95,
              "padding": "channel mean rounded half-to-even"}
    path = crop_root / PARAMS_NAME
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("opencv", "").split(".")[0] != cv2.__version__.split(".")[0]:
            log.warning("%s: existing crops were made with OpenCV %s, this run uses %s (spec 15.3: the bilinear "
                        "warp differs); delete %s to re-crop everything", path, old.get("opencv"), cv2.__version__,
                        crop_root)
        return
    crop_root.mkdir(parents=True, exist_ok=True)
    write_json(path, params, indent=1)


def _json_counts(entries: dict) -> dict[str, int]:
    tracks = sum(len(t) for t in entries.values())
    frames = sum(len(fr) for t in entries.values() for fr in t.values())
    return {"videos": len(entries), "tracks": tracks, "frames": frames}


def _curate_split(dataset: str, split: _Split, crop_root: str, pool: ProcessPoolExecutor | None, workers: int,
                  progress: bool, report: CurationReport, skipped: list, excluded: Counter) -> dict[str, dict]:
    """Run one split's tasks; add their tallies to report / skipped / excluded; return its JSON entries."""
    skipped.extend(split.pre.skipped)
    excluded.update(split.pre.excluded)
    entries: dict[str, dict] = {}
    tasks = [(split.task, split.jobs[i:i + split.chunk]) for i in range(0, len(split.jobs), split.chunk)]
    bar = CurationProgress(f"{dataset} {split.json_name}", len(split.jobs), _UNIT_WORD[dataset], progress)
    results = run_tasks(tasks, crop_root, pool, workers)
    try:
        for res in results:
            for key, tracks in res.entries.items():
                if key in entries:  # e.g. the same DET file name in two synset folders
                    skipped.append((DUPLICATE, key, f"video key {key} produced twice; the later one is kept"))
                entries[key] = tracks
            skipped.extend(res.skipped)
            excluded.update(res.excluded)
            report.crops_written += res.written
            report.crops_reused += res.reused
            bar.add(res)
    except KeyboardInterrupt:
        log.warning("%s: interrupted; the %d crops written so far are kept; run again to resume (the JSON files "
                    "are written only by a complete run)", dataset, report.crops_written)
        raise
    finally:
        results.close()  # cancels what has not started, also on an error or an interruption
        bar.close()
    return entries


def curate(dataset: str, raw_root: Path, out_root: Path, *, workers: int | None = None, progress: bool = True,
           limit: int | None = None) -> CurationReport:
    """Crop every object of a raw dataset (`vid`, `yt_bb`, `coco`, `det`, standard layout under `raw_root`) into
    `<out_root>/<dataset>/crop511/` and write pysot's JSON indices and `curation_report.json` there.

    Resumes: crops already present are reused. `limit` keeps the first `limit` videos/images of each split
    (sorted by key), for demos and smoke tests. Skipped objects are listed in the report and summarised in the
    log; raises InputError when the layout is wrong or nothing at all could be used."""
    if dataset not in DATASETS:
        raise InputError(None, f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    raw_root, out_root = Path(raw_root), Path(out_root)
    if not raw_root.is_dir():
        raise InputError(raw_root, f"{dataset} raw dataset folder not found")
    start = time.monotonic()
    workers = max(1, workers or default_workers())
    out_dir = out_root / dataset
    crop_root = out_dir / CROP_DIR
    splits = _ENUMERATE[dataset](raw_root, limit)
    _check_params(crop_root)

    report = CurationReport(dataset, workers=workers)
    skipped: list[tuple[str, str, str]] = []
    excluded: Counter = Counter()
    outputs: dict[str, dict] = {}
    # spawn, not fork: a forked OpenCV thread pool can deadlock; one pool serves every split.
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
            if workers > 1 else None)
    try:
        for split in splits:
            outputs[split.json_name] = _curate_split(dataset, split, str(crop_root), pool, workers, progress,
                                                     report, skipped, excluded)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    report.skipped = {}
    for reason, path, detail in sorted(skipped):
        report.skipped.setdefault(reason, []).append((path, detail))
    report.excluded = {k: v for k, v in excluded.items() if v}
    report.json_files = {name: _json_counts(e) for name, e in outputs.items()}
    report.seconds = time.monotonic() - start
    crops = report.crops_written + report.crops_reused
    if crops == 0:
        why = "no annotated object found"
        if report.n_skipped:
            why = f"all {report.n_skipped} objects were skipped (" + ", ".join(
                f"{len(v)} {r}" for r, v in sorted(report.skipped.items())) + ")"
        write_json(out_dir / REPORT_NAME, report.to_dict(), indent=1)
        raise InputError(raw_root, f"{dataset}: nothing to curate: {why}; the files are listed in "
                                   f"{out_dir / REPORT_NAME}")
    for name, entries in outputs.items():
        write_json(out_dir / name, entries)
    write_json(out_dir / REPORT_NAME, report.to_dict(), indent=1)
    (log.warning if report.n_skipped else log.info)("%s", report.summary())
    return report
