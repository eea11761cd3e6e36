"""SA-Siam training data, written from shared/specs/sa_siam.md sections 2, 8, 9 and 15 (SiamFC-TF's curation and
input pipeline, re-implemented; no upstream code):

- `curate_vid`: ILSVRC2015 VID in its standard layout -> the 255 x 255 SiamFC "x" crops of every object (9.1),
  parallel and resumable, every skipped object named in `curation_report.json`;
- `build_imdb`: the crops -> `train_imdb.json` / `validation_imdb.json` (9.2);
- `VidPairs`: index -> one (exemplar, instance) training pair of 239 x 239 float RGB images (9.3).

Curated layout: `<root>/Data/VID/train/{a,b,c,d,e}/<video>/<frame>.<trackid:02d>.crop.x.jpg` (a..d =
ILSVRC2015_VID_train_0000..0003, e = the VID val videos, all used for training as upstream does), plus
`<root>/train_imdb.json`, `<root>/validation_imdb.json`, `<root>/curation_report.json`.

Deliberate deviations from upstream (each says why):
- The imdb's video order is SORTED (upstream: `os.listdir`, filesystem dependent, so its train/validation split
  differs between machines); paths are stored RELATIVE to the curated root (upstream stores absolute paths, which
  forced the Ascend port to copy the data to /home/ysp/...); the files are JSON (upstream: pickle, which runs code
  on load).
- Randomness: upstream draws from TF's op-level random streams and a shuffling queue fed by prefetch threads, so
  which pair a step sees depends on thread timing. Here item i draws only from `np.random.default_rng([seed, 0,
  i])` and pass p's track order from `np.random.default_rng([seed, 1, p])`, so an index gives bit-identical arrays
  in any process, worker count, order or resumed run. The distributions are upstream's; the streams differ.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from bundles.siamrpnpp.synthetic import make_synthetic_raw

# The curation machinery shared with SiamRPN++'s crop511 curation (VID layouts, resumable atomic writes, the
# report, pool and progress) lives in common/curation.py.
from common.curation import (
    BAD_ANNOTATION,
    BAD_IMAGE,
    DEGENERATE,
    EMPTY_VIDEO,
    MISSING_IMAGE,
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
from common.imageio import load_image_bgr, single_thread_cv2

log = logging.getLogger("zoo.sa_siam.data")

EXEMPLAR_SIZE = 127  # z size: only used to derive the search-crop scale (spec 9.1)
CROP_SIZE = 255  # curated x crop side
CONTEXT = 0.5
JPEG_QUALITY = 90
STRETCH = 0.05  # RandomStretch: scale 1 + U(-0.05, 0.05)
CENTER_SIZE = 247  # CenterCrop (crop or zero-pad)
TRAIN_SIZE = 239  # RandomCrop: exemplar and instance both 239 in training (spec 2)
SUBSETS = tuple(VID_SUBSETS)  # ("a", "b", "c", "d", "e")
CROP_SUFFIX = ".crop.x.jpg"
REPORT_NAME = "curation_report.json"
PARAMS_NAME = ".crop_params.json"
IMDB_NAMES = {"train": "train_imdb.json", "validation": "validation_imdb.json"}
DUPLICATE_TRACK = "duplicate trackid in one frame (the first object is kept, as upstream)"
# SeedSequence words keeping the per-item and per-pass generators apart for one seed
_ITEM, _PASS = 0, 1
_CROP_RE = re.compile(r"^(?P<frame>[^.][^/]*)\.(?P<track>\d+)" + re.escape(CROP_SUFFIX) + "$")


# -- the crop rule (spec 9.1) ---------------------------------------------------------------------------------
def crop_window(box: Sequence[float]) -> tuple[int, int, int]:
    """(x_min, y_min, S) of the square window cut from the frame for a VID box [xmin, ymin, xmax, ymax] (inclusive
    pixel corners): w = xmax - xmin + 1, centre xmin + (w - 1)/2, p = (w + h)/2, s_z = sqrt((w + p)(h + p)),
    s_x = s_z * 255/127, S = numpy round (half-to-even) of s_x, x_min = numpy round of cx - (S - 1)/2; the
    window is [x_min, x_min + S - 1] x [y_min, y_min + S - 1]."""
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    w, h = xmax - xmin + 1, ymax - ymin + 1
    cx, cy = xmin + (w - 1) / 2, ymin + (h - 1) / 2
    p = CONTEXT * (w + h)
    s_z = math.sqrt((w + p) * (h + p))
    # written as upstream derives it (s_z + 2 * pad, pad = ((255 - 127)/2) / (127/s_z)) so the float is the same
    s_x = s_z + 2 * (((CROP_SIZE - EXEMPLAR_SIZE) / 2) / (EXEMPLAR_SIZE / s_z))
    side = float(np.round(s_x))  # numpy round: half-to-even (Python's round() would agree; math.floor(x+.5) not)
    return int(np.round(cx - (side - 1) / 2)), int(np.round(cy - (side - 1) / 2)), int(side)


def mean_padding(image: np.ndarray) -> tuple[int, ...]:
    """Per-channel image mean TRUNCATED toward zero (127.76 -> 127; spec 15): upstream pads a uint8 array with the
    float mean, and numpy's cast truncates. Integer floor division of the exact sum gives the same integer as
    truncating the float mean (a non-integer mean is at least 1/n below the next integer, far more than an ulp)."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    sums = cv2.sumElems(image)[:channels]  # float64 sums of integers < 2^53: exact
    n = image.shape[0] * image.shape[1]
    return tuple(int(s) // n for s in sums)


def crop_x(image: np.ndarray, box: Sequence[float], padding: Sequence[int] | None = None) -> np.ndarray:
    """The 255 x 255 curated crop (spec 9.1): the S x S window of `crop_window`, pixels outside the frame set to
    `padding` (default `mean_padding(image)`), then cv2.resize bilinear to 255 x 255 (no resize when S == 255).
    uint8, the channel order of `image`."""
    x0, y0, side = crop_window(box)
    h, w = image.shape[:2]
    if x0 >= 0 and y0 >= 0 and x0 + side <= w and y0 + side <= h:
        window = image[y0:y0 + side, x0:x0 + side]
    else:
        pad = mean_padding(image) if padding is None else tuple(int(v) for v in padding)
        window = np.empty((side, side) + image.shape[2:], dtype=image.dtype)
        window[...] = np.asarray(pad, dtype=image.dtype).reshape((1, 1) + image.shape[2:])
        ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
        if ix1 > ix0 and iy1 > iy0:  # a box wholly outside the frame gives a crop of padding, as upstream
            window[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = image[iy0:iy1, ix0:ix1]
    if side == CROP_SIZE:
        return np.ascontiguousarray(window)
    return cv2.resize(window, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)


def crop_name(frame: str, track: int) -> str:
    """`<frame>.<trackid:02d>.crop.x.jpg`; `frame` is the XML's <filename> (e.g. 000000)."""
    return f"{frame}.{track:02d}{CROP_SUFFIX}"


# -- curation (runs in the worker processes) ------------------------------------------------------------------
def _frame_name(root: ET.Element) -> str:
    text = (root.findtext("filename") or "").strip()
    if not text:
        raise Malformed("missing <filename>")
    if "/" in text or "\\" in text or text.startswith("."):
        raise Malformed(f"<filename> is not a plain file name: {text!r}")  # it names the image and the crop
    return text


def _curate_video(key: str, ann_dir: str, data_dir: str, out_dir: str, res: TaskResult) -> None:
    """Crop every object of every frame XML of one video (spec 9.1: no filtering) unless its crop exists."""
    try:
        xmls = sorted(n for n in os.listdir(ann_dir) if n.endswith(".xml"))
    except OSError as e:
        res.skip(EMPTY_VIDEO, ann_dir, f"cannot list the video's annotations: {e}")
        return
    if not xmls:
        res.skip(EMPTY_VIDEO, ann_dir, f"{key}: no annotation (.xml) files")
        return
    existing = scan_crops(out_dir)  # also deletes leftovers of writes an interruption cut short
    made_dir = bool(existing)
    for name in xmls:
        xml = os.path.join(ann_dir, name)
        try:
            root = ET.parse(xml).getroot()
            frame = _frame_name(root)
        except (ET.ParseError, OSError, Malformed) as e:
            res.skip(BAD_ANNOTATION, xml, f"whole file: {e}")
            continue
        image_path = os.path.join(data_dir, f"{frame}.JPEG")
        image: np.ndarray | None = None
        image_problem: str | None = None
        padding: tuple[int, ...] | None = None
        seen: set[str] = set()
        for k, obj in enumerate(root.findall("object")):
            try:
                track = xml_number(obj.findtext("trackid"), "trackid")
                if not float(track).is_integer() or track < 0:
                    raise Malformed(f"<trackid> is not a non-negative integer: {track!r}")
                bb = obj.find("bndbox")
                if bb is None:
                    raise Malformed("missing <bndbox>")
                box = tuple(float(xml_number(bb.findtext(t), t)) for t in ("xmin", "ymin", "xmax", "ymax"))
            except Malformed as e:
                res.skip(BAD_ANNOTATION, xml, f"object {k}: {e}")
                continue
            track = int(track)
            w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
            if not (w > 0 and h > 0):
                res.skip(DEGENERATE, xml, f"object {k} (trackid {track}): box {list(box)} gives w={w:g}, h={h:g}")
                continue
            out_name = crop_name(frame, track)
            if out_name in seen:
                res.skip(DUPLICATE_TRACK, xml, f"object {k}: trackid {track} again in frame {frame}")
                continue
            seen.add(out_name)
            if existing.get(out_name, 0) > 0:  # an empty file is not a finished crop
                res.reused += 1
                continue
            if image is None and image_problem is None:  # decoded once per frame, only when a crop is missing
                try:
                    image = load_image_bgr(Path(image_path))
                except InputError:
                    image_problem = BAD_IMAGE if os.path.isfile(image_path) else MISSING_IMAGE
            if image is None:
                res.skip(image_problem, image_path, f"{key} frame {frame} object {k} (trackid {track}) of {xml}")
                continue
            if padding is None:
                padding = mean_padding(image)
            ok, jpg = cv2.imencode(".jpg", crop_x(image, box, padding), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"cv2.imencode failed for {image_path}")
            if not made_dir:
                os.makedirs(out_dir, exist_ok=True)
                made_dir = True
            write_atomic(os.path.join(out_dir, out_name), jpg.tobytes())
            res.written += 1


def _task_videos(jobs: list[tuple[str, str, str]], crop_root: str) -> TaskResult:
    res = TaskResult()
    for key, ann_dir, data_dir in jobs:
        _curate_video(key, ann_dir, data_dir, os.path.join(crop_root, key), res)
        res.units += 1
    return res


def _vid_jobs(raw_root: Path, limit: int | None) -> list[tuple[str, str, str]]:
    """(key `<letter>/<video>`, annotation dir, image dir) of every video, sorted; official folder names or
    pysot/SiamFC's a..e symlinks. `limit`: the first `limit` videos of each subset."""
    base = ilsvrc_root(raw_root, "VID")
    jobs, found = [], []
    for letter, official in VID_SUBSETS.items():
        dirs = subset_dirs(base, "VID", letter, official)
        if dirs is None:
            continue
        found.append(letter)
        ann, data = dirs
        videos = sorted(p.name for p in ann.iterdir() if p.is_dir())[:limit]
        jobs += [(f"{letter}/{v}", str(ann / v), str(data / v)) for v in videos]
    if not any(letter != "e" for letter in found):
        raise InputError(base / "Annotations" / "VID" / "train",
                         "no VID training videos: expected ILSVRC2015_VID_train_0000..0003 (or symlinks a..d), "
                         "each holding <video>/<frame>.xml")
    log.info("sa_siam VID: subsets %s found in %s", ",".join(found), base)
    return jobs


def _check_params(out_root: Path) -> None:
    """Record how the crops are made; warn when resuming crops made with other parameters (a mix is not one
    consistent data set)."""
    params = {"crop_size": CROP_SIZE, "context": CONTEXT, "jpeg_quality": JPEG_QUALITY, "opencv": cv2.__version__,
              "padding": "channel mean truncated", "resize": "cv2.resize INTER_LINEAR"}
    path = out_root / PARAMS_NAME
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        if {k: v for k, v in old.items() if k != "opencv"} != {k: v for k, v in params.items() if k != "opencv"} \
                or str(old.get("opencv", "")).split(".")[0] != cv2.__version__.split(".")[0]:
            log.warning("%s: existing crops were made with %s, this run uses %s; delete %s to re-crop everything",
                        path, old, params, out_root / "Data")
        return
    out_root.mkdir(parents=True, exist_ok=True)
    write_json(path, params, indent=1)


def curate_vid(raw_root: Path, out_root: Path, *, workers: int | None = None, progress: bool = True,
               limit: int | None = None) -> CurationReport:
    """Crop every object of ILSVRC2015 VID (`raw_root`: the folder holding Annotations/VID and Data/VID, or its
    parent) into `<out_root>/Data/VID/train/{a..e}/<video>/<frame>.<trackid:02d>.crop.x.jpg` (spec 9.1), then
    write the imdb (`build_imdb`) and `<out_root>/curation_report.json`.

    Parallel over videos (`workers` processes; default $ZOO_WORKERS or every core); resumable: existing crops are
    reused, and each crop is written under a temporary name and renamed, so a final name is a complete file.
    Objects that cannot be cropped (missing / corrupt frame, malformed XML, degenerate box) are skipped and listed
    in the report with their file; a wrong layout, or nothing cropped at all, raises InputError. `progress`: a
    tqdm bar on a terminal, a log line every 30 s otherwise; `limit`: only the first `limit` videos (sorted) of
    each subset a..e, for demos and smoke tests."""
    raw_root, out_root = Path(raw_root), Path(out_root)
    if not raw_root.is_dir():
        raise InputError(raw_root, "ILSVRC2015 VID folder not found")
    start = time.monotonic()
    workers = max(1, workers or default_workers())
    jobs = _vid_jobs(raw_root, limit)
    _check_params(out_root)
    crop_root = out_root / "Data" / "VID" / "train"
    report = CurationReport("sa_siam VID", workers=workers)
    skipped: list[tuple[str, str, str]] = []
    tasks = [(_task_videos, [job]) for job in jobs]  # one video per task: videos are large and uneven
    # spawn, not fork: a forked OpenCV thread pool can deadlock
    pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                initializer=single_thread_cv2) if workers > 1 and len(tasks) > 1 else None)
    bar = CurationProgress("sa_siam VID", len(jobs), "videos", progress)
    results = run_tasks(tasks, str(crop_root), pool, workers)
    try:
        for res in results:
            skipped.extend(res.skipped)
            report.crops_written += res.written
            report.crops_reused += res.reused
            bar.add(res)
    except KeyboardInterrupt:
        log.warning("sa_siam VID: interrupted; the %d crops written so far are kept; run again to resume",
                    report.crops_written)
        raise
    finally:
        results.close()  # cancels what has not started, also on an error or an interruption
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    for reason, path, detail in sorted(skipped):
        report.skipped.setdefault(reason, []).append((path, detail))
    report.seconds = time.monotonic() - start
    if report.crops_written + report.crops_reused == 0:
        why = "no annotated object found"
        if report.n_skipped:
            why = f"all {report.n_skipped} objects were skipped (" + ", ".join(
                f"{len(v)} {r}" for r, v in sorted(report.skipped.items())) + ")"
        write_json(out_root / REPORT_NAME, report.to_dict(), indent=1)
        raise InputError(raw_root, f"VID: nothing to curate: {why}; the files are listed in {out_root / REPORT_NAME}")
    report.json_files = _write_imdb(out_root, 0.1)
    report.seconds = time.monotonic() - start
    write_json(out_root / REPORT_NAME, report.to_dict(), indent=1)
    (log.warning if report.n_skipped else log.info)("%s", report.summary())
    return report


# -- the index (spec 9.2) ---------------------------------------------------------------------------------------
def _natural_key(name: str) -> list:
    """'000010' after '000009', and '10' after '9': digit runs compare as numbers."""
    return [(0, int(t), t) if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def _video_tracks(video_dir: Path) -> list[list[str]]:
    """The crop names of one video grouped by trackid (ascending), each naturally sorted by frame."""
    by_track: dict[int, list[str]] = {}
    for entry in os.scandir(video_dir):
        m = _CROP_RE.match(entry.name)
        if m and entry.is_file():
            by_track.setdefault(int(m["track"]), []).append(entry.name)
    return [sorted(by_track[t], key=lambda n: _natural_key(_CROP_RE.match(n)["frame"])) for t in sorted(by_track)]


def build_imdb(curated_root: Path, *, validation_fraction: float = 0.1) -> Path:
    """Write `<curated_root>/train_imdb.json` and `validation_imdb.json` (spec 9.2): the video folders under
    Data/VID/train/{a..e} SORTED (not upstream's os.listdir order), the first int(n * validation_fraction) videos
    (n = videos holding at least one crop) to validation, the rest to train; one entry per (video, trackid): the
    paths of its crops RELATIVE to `curated_root`, naturally sorted by frame number. JSON `{'videos': [[path,
    ...], ...], 'n_videos': number of entries, 'image_shape': [255, 255, 3]}`. Returns `curated_root`."""
    curated_root = Path(curated_root)
    _write_imdb(curated_root, validation_fraction)
    return curated_root


def _write_imdb(curated_root: Path, validation_fraction: float) -> dict[str, dict[str, int]]:
    """build_imdb's work; returns {json name: {"videos", "tracks", "frames"}} for the curation report."""
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    train_dir = curated_root / "Data" / "VID" / "train"
    if not train_dir.is_dir():
        raise InputError(train_dir, "curated VID crops not found (expected Data/VID/train/{a..e}/<video>/; "
                                    "run the curation first)")
    videos: list[list[list[str]]] = []  # per video: its tracks
    for letter in SUBSETS:
        sub = train_dir / letter
        if not sub.is_dir():
            continue
        for name in sorted(p.name for p in sub.iterdir() if p.is_dir()):
            tracks = _video_tracks(sub / name)
            if tracks:
                prefix = f"Data/VID/train/{letter}/{name}/"
                videos.append([[prefix + n for n in t] for t in tracks])
    if not videos:
        raise InputError(train_dir, "no curated crop (*.crop.x.jpg) found under {a..e}/<video>/")
    n_val = int(len(videos) * validation_fraction)  # upstream's int(): floor
    counts = {}
    for split, part in (("train", videos[n_val:]), ("validation", videos[:n_val])):
        entries = [t for video in part for t in video]
        write_json(curated_root / IMDB_NAMES[split],
                    {"videos": entries, "n_videos": len(entries), "image_shape": [CROP_SIZE, CROP_SIZE, 3]},
                    indent=None)  # compact: the full index holds over a million paths
        counts[IMDB_NAMES[split]] = {"videos": len(part), "tracks": len(entries),
                                     "frames": sum(len(t) for t in entries)}
    log.info("sa_siam VID imdb: %d videos (%d validation) in %s", len(videos), n_val, curated_root)
    return counts


# -- pair sampling and augmentation (spec 9.3) ------------------------------------------------------------------
def pair_frames(n: int, rng: np.random.Generator, max_frame_dist: int = 100) -> tuple[int, int]:
    """(exemplar, instance) positions in a track of n frames: n < 2 the frame twice; n = 2 both; else gap d
    uniform in {1..min(n, max_frame_dist)} (d = n becomes n - 1), start uniform in {0..n-1-d}; the exemplar is the
    earlier frame."""
    if n < 1:
        raise ValueError("a track needs at least one frame")
    if n < 2:
        return 0, 0
    if n == 2:
        return 0, 1
    d = int(rng.integers(1, min(n, max_frame_dist) + 1))
    d = min(d, n - 1)
    start = int(rng.integers(0, n - d))
    return start, start + d


def stretch_size(u: float, size: int = CROP_SIZE) -> int:
    """RandomStretch's output side for a draw u in [-0.05, 0.05): round(size * (1 + u)), in float32 and rounded
    half-to-even as TF's tf.round."""
    scale = np.float32(1.0) + np.float32(u)
    return int(np.rint(np.float32(size) * scale))


def _axis(in_size: int, out_size: int, start: int, length: int) -> tuple[np.ndarray, ...]:
    """Source taps of TF1's legacy bilinear resize (align_corners=False, no half-pixel centres: src = dst *
    in/out in float32) for the output positions start..start+length-1 of an out_size resize: (lower, upper,
    lerp, valid), where positions outside [0, out_size) are invalid (zero padding)."""
    dst = np.arange(start, start + length)
    valid = (dst >= 0) & (dst < out_size)
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.clip(dst, 0, out_size - 1).astype(np.float32) * scale
    lower = np.floor(src).astype(np.int64)
    upper = np.minimum(lower + 1, in_size - 1)
    lerp = (src - lower.astype(np.float32)).astype(np.float32)
    return lower, upper, lerp, valid


def stretch_crop(image: np.ndarray, size: tuple[int, int], offset: tuple[int, int],
                 center: int = CENTER_SIZE, out: int = TRAIN_SIZE) -> np.ndarray:
    """RandomStretch to `size` (h, w) + CenterCrop `center` (crop or zero-pad) + RandomCrop `out` at `offset`
    (dy, dx) of a CHW image, computed only for the `out` x `out` output pixels. The resize is TF1's legacy
    bilinear mapping (src = dst * in/out, float32, TF's interpolation order), implemented here in numpy because
    cv2.resize uses half-pixel centres and cv2.remap 1/32-pixel fixed-point weights, which TF1 does not. The centre
    crop / pad offsets are tf.image.resize_image_with_crop_or_pad's: crop from (in - center) // 2; pad
    (center - in) // 2 before and the rest after. float32 (C, out, out)."""
    c, h_in, w_in = image.shape
    taps = []
    for in_size, sz, off in ((h_in, size[0], offset[0]), (w_in, size[1], offset[1])):
        # first stretched pixel of the `center` canvas: a positive crop offset, or minus the leading padding
        first = max((sz - center) // 2, 0) - max((center - sz) // 2, 0)
        taps.append(_axis(in_size, sz, first + off, out))
    (y0, y1, ly, vy), (x0, x1, lx, vx) = taps
    # four corner gathers with flat indices on (C, H*W): one np.take each, much faster than 2-D fancy indexing
    flat = np.ascontiguousarray(image, dtype=np.float32).reshape(c, -1)
    tl, tr, bl, br = (flat.take(ys[:, None] * w_in + xs[None, :], axis=1)
                      for ys, xs in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)))
    lx, ly = lx[None, None, :], ly[None, :, None]
    # TF's order: top = top_left + (top_right - top_left) * x_lerp, bottom likewise, top + (bottom - top) * y_lerp;
    # in place on the gathered arrays (the same float32 operations, without temporaries)
    top = np.add(np.multiply(np.subtract(tr, tl, out=tr), lx, out=tr), tl, out=tr)
    bottom = np.add(np.multiply(np.subtract(br, bl, out=br), lx, out=br), bl, out=br)
    result = np.add(np.multiply(np.subtract(bottom, top, out=bottom), ly, out=bottom), top, out=bottom)
    result[:, ~vy, :] = 0.0  # CenterCrop's zero padding
    result[:, :, ~vx] = 0.0
    return result


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """spec 9.3 on one decoded 255 crop (CHW): stretch 1 + U(-0.05, 0.05) (one scale for both axes), CenterCrop
    247, RandomCrop 239 at offsets uniform in {0..7} (y drawn before x). float32 CHW."""
    u = float(rng.uniform(-STRETCH, STRETCH))
    size = (stretch_size(u, image.shape[1]), stretch_size(u, image.shape[2]))
    dy, dx = (int(v) for v in rng.integers(0, CENTER_SIZE - TRAIN_SIZE, size=2))  # TF: [0, 8), max exclusive
    return stretch_crop(image, size, (dy, dx))


class VidPairs(torch.utils.data.Dataset):
    """Index i -> {"exemplar", "instance"}: float32 (3, 239, 239) RGB 0..255 (spec 9.3). The track stream is
    passes over the imdb's tracks, pass p a permutation drawn from (seed, 1, p): index i takes pass i // n_tracks,
    position i % n_tracks. Everything else item i draws comes from (seed, 0, i) (see the module docstring)."""

    def __init__(self, curated_root: Path, *, split: str = "train", examples: int, seed: int = 0,
                 max_frame_dist: int = 100):
        if split not in IMDB_NAMES:
            raise ValueError(f"split must be one of {', '.join(IMDB_NAMES)}, got {split!r}")
        if examples <= 0 or max_frame_dist < 1:
            raise ValueError(f"examples and max_frame_dist must be > 0, got {examples}, {max_frame_dist}")
        self.root = Path(curated_root)
        self.imdb = self.root / IMDB_NAMES[split]
        self.examples, self.seed, self.max_frame_dist = int(examples), int(seed), int(max_frame_dist)
        tracks = _read_imdb(self.imdb)
        # One flat bytes array + offsets instead of a million Python strings: forked DataLoader workers would
        # otherwise copy every page the strings live on as soon as they touch their reference counts.
        self._offsets = np.cumsum([0] + [len(t) for t in tracks]).astype(np.int64)
        self._paths = np.array([p.encode() for t in tracks for p in t], dtype=bytes)
        self.n_tracks = len(tracks)
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.examples

    def track_length(self, track: int) -> int:
        return int(self._offsets[track + 1] - self._offsets[track])

    def crop_path(self, track: int, position: int) -> Path:
        """The crop file of frame `position` of imdb entry `track`."""
        return self.root / self._paths[self._offsets[track] + position].decode()

    def track_of(self, index: int) -> int:
        """The imdb entry index `index` samples: position index % n_tracks of pass index // n_tracks."""
        p, k = divmod(int(index), self.n_tracks)
        if self._perm is None or self._perm[0] != p:  # consecutive indices share a pass: keep the last one
            self._perm = (p, np.random.default_rng([self.seed, _PASS, p]).permutation(self.n_tracks))
        return int(self._perm[1][k])

    def item_rng(self, index: int) -> np.random.Generator:
        """The only source of randomness of item `index` besides its pass's permutation."""
        return np.random.default_rng([self.seed, _ITEM, int(index)])

    def _check(self, index: int) -> None:
        if not 0 <= index < self.examples:
            raise IndexError(f"index {index} out of range for {self.examples} examples")

    def sample(self, index: int) -> tuple[int, int, int]:
        """(imdb entry, exemplar position, instance position) of item `index`, without loading anything: the
        first draws of its generator."""
        self._check(index)
        track = self.track_of(index)
        return (track, *pair_frames(self.track_length(track), self.item_rng(index), self.max_frame_dist))

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        self._check(index)
        single_thread_cv2()  # before the first OpenCV call in this process (forked workers deadlock otherwise)
        rng = self.item_rng(index)
        track = self.track_of(index)
        positions = pair_frames(self.track_length(track), rng, self.max_frame_dist)
        item = {}
        for key, pos in zip(("exemplar", "instance"), positions, strict=True):
            bgr = load_image_bgr(self.crop_path(track, pos))  # InputError naming the file when missing/corrupt
            # BGR -> RGB (TF decodes RGB), HWC -> CHW and float32 in one copy; independent draws, exemplar first
            item[key] = augment(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32), rng)
        return item


def _read_imdb(path: Path) -> list[list[str]]:
    """The imdb's track list; a missing, malformed or empty file raises InputError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise InputError(path, "imdb missing (run the curation / build_imdb first)") from None
    except (OSError, ValueError) as e:
        raise InputError(path, f"imdb is not readable JSON: {e}") from None
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, list):
        raise InputError(path, "expected an object with a 'videos' list of path lists")
    for k, t in enumerate(videos):
        if not isinstance(t, list) or not t or not all(isinstance(p, str) for p in t):
            raise InputError(path, f"videos[{k}] must be a non-empty list of paths")
        if any(p.startswith(("/", "../")) or "/../" in p for p in t):  # cheap string tests: 1M+ paths
            raise InputError(path, f"videos[{k}]: paths must be relative to the curated root, got {t[0]!r}")
    if meta.get("n_videos") != len(videos):
        raise InputError(path, f"n_videos {meta.get('n_videos')!r} != {len(videos)} entries in 'videos'")
    if not videos:
        raise InputError(path, "empty imdb: no track to sample pairs from")
    return videos


# -- synthetic raw data -------------------------------------------------------------------------------------
def make_synthetic_vid(root: Path, *, seed: int = 0, videos: int = 3, frames: int = 8) -> Path:
    """A small deterministic ILSVRC2015 VID in the official layout (`videos` train videos spread over
    ILSVRC2015_VID_train_0000..0003 + one val video, `frames` frames each, two moving objects, track 1 absent from
    frame 2), written by the SiamRPN++ bundle's generator (which also writes small COCO / DET / YouTube-BB sets
    beside it). Returns the VID folder for `curate_vid`. Idempotent."""
    return make_synthetic_raw(Path(root), seed=seed, videos=videos, frames=frames, images=1)["vid"]
