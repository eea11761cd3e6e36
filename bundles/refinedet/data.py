"""PASCAL VOC2007 test data for RefineDet (shared/specs/refinedet.md sections 3, 5.2, 5.3, 6).

Reading the VOCdevkit layout, the exact pre-processing, the per-class detection files (their 3-decimal score and
+1 coordinate rounding is part of the metric) and a deterministic synthetic VOCdevkit for the demo.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bundles.refinedet.post import IMAGE_SIZE
from common.errors import InputError
from common.metrics.voc import ClassDetections, ClassGroundTruth

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # network class j <-> VOC_CLASSES[j - 1]
MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)


# -- dataset layout --------------------------------------------------------------------------------------------
def find_voc2007(root: Path) -> Path:
    """The VOC2007 directory under `root` (accepts the tarball root, VOCdevkit/, or VOC2007/ itself)."""
    for cand in (root / "VOCdevkit" / "VOC2007", root / "VOC2007", root):
        if (cand / "ImageSets" / "Main" / "test.txt").is_file():
            return cand
    raise InputError(root / "VOCdevkit/VOC2007/ImageSets/Main/test.txt", "missing: not a VOCdevkit with VOC2007 test")


def read_image_ids(voc: Path) -> list[str]:
    """Image ids in test.txt order (this order defines everything downstream)."""
    path = voc / "ImageSets" / "Main" / "test.txt"
    if not path.is_file():
        raise InputError(path, "missing: the VOC2007 test split list is required")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise InputError(path, "is empty: no test images listed")
    return ids


@dataclass(frozen=True)
class VocObject:
    label: int  # 1..20, network class index
    difficult: bool
    box: tuple[float, float, float, float]  # xml pixel coordinates minus 1 (spec 5.3)


def parse_annotation(path: Path) -> list[VocObject]:
    """Objects of one Annotations XML; only name, difficult and bndbox are required (upstream also needed
    pose/truncated and crashed on custom XML without them)."""
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise InputError(path, "annotation file missing") from None
    except ET.ParseError as e:
        raise InputError(path, f"malformed XML: {e}") from None
    objects = []
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise InputError(path, f"object {i}: unknown class {name!r}")
        try:
            bb = obj.find("bndbox")
            coords = tuple(int(float(bb.findtext(k))) - 1 for k in ("xmin", "ymin", "xmax", "ymax"))
            difficult = bool(int(obj.findtext("difficult") or 0))
        except (AttributeError, TypeError, ValueError):
            raise InputError(path, f"object {i} ({name}): bndbox needs integer xmin, ymin, xmax, ymax") from None
        objects.append(VocObject(VOC_CLASSES.index(name) + 1, difficult, coords))
    return objects


# -- pre-processing --------------------------------------------------------------------------------------------
def preprocess(image_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 (H,W,3) -> float32 (3,320,320): resize (INTER_LINEAR), subtract the BGR mean, then RGB order."""
    resized = cv2.resize(image_bgr, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    resized -= MEAN_BGR
    return np.ascontiguousarray(resized[:, :, ::-1].transpose(2, 0, 1))


# -- detection files (spec 5.2) --------------------------------------------------------------------------------
def detection_file(results_dir: Path, label: int) -> Path:
    return results_dir / f"det_test_{VOC_CLASSES[label - 1]}.txt"


def read_detection_files(results_dir: Path, image_ids: Sequence[str]) -> dict[str, ClassDetections]:
    """Parse det_test_<class>.txt back (upstream reads the rounded strings with float()). Coordinates stay as
    written (+1 convention); a missing class file means no detections for that class."""
    index = {image_id: i for i, image_id in enumerate(image_ids)}
    out = {}
    for label, name in enumerate(VOC_CLASSES, start=1):
        path = detection_file(results_dir, label)
        rows = [line.split() for line in path.read_text().splitlines()] if path.is_file() else []
        bad = next((i for i, r in enumerate(rows) if len(r) != 6 or r[0] not in index), None)
        if bad is not None:
            raise InputError(path, f"line {bad + 1}: expected '<image id from test.txt> score x1 y1 x2 y2'")
        values = np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 5)
        out[name] = ClassDetections(
            image_index=np.array([index[r[0]] for r in rows], dtype=np.int64),
            scores=values[:, 0],
            boxes=values[:, 1:],
        )
    return out


# -- ground truth in the run directory -------------------------------------------------------------------------
def write_ground_truth(path: Path, image_ids: Sequence[str], objects: Sequence[Sequence[VocObject]]) -> None:
    """JSON with every test image's objects (label, difficult, box already at xml-1) in test.txt order, so
    `zoo verify` can recompute the metric from the run directory alone."""
    payload = {
        "image_ids": list(image_ids),
        "objects": [[[o.label, int(o.difficult), *o.box] for o in objs] for objs in objects],
    }
    path.write_text(json.dumps(payload, separators=(",", ":")))


def read_ground_truth(path: Path) -> tuple[list[str], list[list[VocObject]]]:
    """Inverse of `write_ground_truth`: image ids and their objects."""
    try:
        payload = json.loads(path.read_text())
        objects = [[VocObject(o[0], bool(o[1]), tuple(o[2:])) for o in objs] for objs in payload["objects"]]
        return payload["image_ids"], objects
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise InputError(path, f"unreadable ground truth: {e}") from None


def ground_truth_by_class(objects: Sequence[Sequence[VocObject]]) -> dict[str, ClassGroundTruth]:
    """Per-class ground truth for the VOC metric (same image list for every class)."""
    per_class: dict[str, ClassGroundTruth] = {}
    for label, name in enumerate(VOC_CLASSES, start=1):
        rows = [[o for o in objs if o.label == label] for objs in objects]
        per_class[name] = ClassGroundTruth(
            boxes=[np.array([o.box for o in r], dtype=np.float64).reshape(-1, 4) for r in rows],
            difficult=[np.array([o.difficult for o in r], dtype=bool) for r in rows],
        )
    return per_class


# -- synthetic VOCdevkit for the demo --------------------------------------------------------------------------
def make_synthetic_voc(root: Path, *, n_images: int = 8, seed: int = 0) -> Path:
    """A deterministic VOCdevkit/VOC2007 with textured backgrounds and coloured shapes as objects (real layout:
    JPEGImages, Annotations with difficult flags, ImageSets/Main/test.txt). Returns the VOC2007 directory."""
    voc = root / "VOCdevkit" / "VOC2007"
    if (voc / "ImageSets" / "Main" / "test.txt").is_file():
        return voc
    rng = np.random.default_rng(seed)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"{i:06d}" for i in sorted(rng.choice(np.arange(1, 10 * n_images), n_images, replace=False))]
    for image_id in ids:
        h, w = int(rng.integers(240, 400)), int(rng.integers(300, 500))
        noise = rng.integers(0, 60, size=(h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        image = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR) + rng.integers(60, 140, 3).astype(np.uint8)
        objs = []
        for k in range(int(rng.integers(1, 5))):
            bw, bh = int(rng.integers(w // 8, w // 2)), int(rng.integers(h // 8, h // 2))
            x1, y1 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            cv2.rectangle(image, (x1, y1), (x1 + bw - 1, y1 + bh - 1), colour, thickness=-1)
            objs.append((VOC_CLASSES[int(rng.integers(0, 20))], int(k == 2), (x1 + 1, y1 + 1, x1 + bw, y1 + bh)))
        cv2.imwrite(str(voc / "JPEGImages" / f"{image_id}.jpg"), image)
        (voc / "Annotations" / f"{image_id}.xml").write_text(_annotation_xml(image_id, w, h, objs))
    (voc / "ImageSets" / "Main" / "test.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc


def _annotation_xml(image_id: str, w: int, h: int, objs: Sequence[tuple[str, int, tuple[int, ...]]]) -> str:
    parts = [f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>",
             f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"]
    for name, difficult, (x1, y1, x2, y2) in objs:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>\n"


def ground_truth_as_detections(objects: Sequence[Sequence[VocObject]], image_ids: Sequence[str]
                               ) -> Mapping[int, list[str]]:
    """Every non-difficult GT box written as a score-1.000 detection line (+1 back to xml coordinates): an
    honest sanity check, the metric must then report AP 1 for every class that has ground truth."""
    lines: dict[int, list[str]] = {}
    for image_id, objs in zip(image_ids, objects, strict=True):
        for o in objs:
            if not o.difficult:
                x1, y1, x2, y2 = (c + 1 for c in o.box)
                lines.setdefault(o.label, []).append(f"{image_id} 1.000 {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}")
    return lines
