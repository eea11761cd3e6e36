"""Tracking datasets: readers for the pysot JSON layout and the official VOT and OTB layouts, and deterministic
synthetic VOT (python vot-toolkit layout) and OTB (official layout) datasets. Facts: shared/specs/siamrpn.md
section 9 (VOT) and sa_siam.md section 11 (OTB).

Every problem is an InputError naming the sequence and the file: a missing frame, a ground-truth line with the
wrong number of values, an empty sequence, a sequence listed but absent.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.errors import InputError
from common.tracking.vot import SequenceGT, rect_to_polygon

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class VotSequence:
    """One sequence: frame files in order, (N,8) polygon ground truth, frame size (W, H)."""

    name: str
    frames: tuple[Path, ...]
    polygons: np.ndarray
    size: tuple[int, int]

    def gt(self) -> SequenceGT:
        return SequenceGT(self.name, self.polygons, self.size)

    def load(self, idx: int) -> np.ndarray:
        return load_frame(self.frames[idx], self.name)


def load_frame(path: Path, sequence: str) -> np.ndarray:
    """BGR uint8 HWC, as pysot reads frames (cv2.imread)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(path, f"sequence {sequence}: frame missing or not a readable image")
    return img


def parse_groundtruth(text: str, source: Path, sequence: str) -> np.ndarray:
    """(N,8) polygons from `groundtruth.txt` lines of 8 (polygon) or 4 (x,y,w,h; converted as pysot does) values."""
    rows = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.replace("\t", ",").replace(" ", ",").split(",")
        parts = [p for p in parts if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise InputError(source, f"sequence {sequence}, line {no}: not numbers: {line.strip()!r}") from None
        if len(values) == 8:
            rows.append(values)
        elif len(values) == 4:
            rows.append(rect_to_polygon(np.array([values]))[0].tolist())
        else:
            raise InputError(source, f"sequence {sequence}, line {no}: expected 8 values (polygon) or 4 "
                                     f"(x,y,w,h), got {len(values)}")
    if not rows:
        raise InputError(source, f"sequence {sequence}: empty ground truth (an empty sequence cannot be evaluated)")
    polys = np.array(rows, dtype=np.float64)
    if not np.isfinite(polys).all():
        bad = int(np.flatnonzero(~np.isfinite(polys).all(axis=1))[0]) + 1
        raise InputError(source, f"sequence {sequence}, line {bad}: non-finite value (VOT2016 has no empty frames)")
    return polys


def _frame_size(first: Path, sequence: str) -> tuple[int, int]:
    img = load_frame(first, sequence)
    return int(img.shape[1]), int(img.shape[0])


def _check_frames(frames: list[Path], n_gt: int, sequence: str, where: Path) -> None:
    if not frames:
        raise InputError(where, f"sequence {sequence}: no frames (an empty sequence cannot be evaluated)")
    missing = [p for p in frames if not p.is_file()]
    if missing:
        raise InputError(missing[0], f"sequence {sequence}: frame missing ({len(missing)} of {len(frames)} missing)")
    if len(frames) != n_gt:
        raise InputError(where, f"sequence {sequence}: {len(frames)} frames but {n_gt} ground-truth lines "
                                f"(missing frames?)")


# -- official VOT layouts -----------------------------------------------------------------------------------
def _official_sequence(root: Path, name: str) -> VotSequence:
    seq_dir = root / name
    gt_path = seq_dir / "groundtruth.txt"
    if not seq_dir.is_dir():
        raise InputError(seq_dir, f"sequence {name}: listed in list.txt but its directory is missing")
    if not gt_path.is_file():
        raise InputError(gt_path, f"sequence {name}: groundtruth.txt missing")
    polys = parse_groundtruth(gt_path.read_text(), gt_path, name)
    img_dir = seq_dir / "color" if (seq_dir / "color").is_dir() else seq_dir
    frames = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if frames and len(frames) < len(polys):
        # Name the first absent frame when the numbering has a gap (frames are 00000001.jpg ...).
        expected = [img_dir / f"{i:08d}{frames[0].suffix}" for i in range(1, len(polys) + 1)]
        absent = [p for p in expected if not p.is_file()]
        if absent:
            raise InputError(absent[0], f"sequence {name}: frame missing ({len(absent)} of {len(polys)} missing)")
    _check_frames(frames, len(polys), name, img_dir)
    return VotSequence(name, tuple(frames), polys, _frame_size(frames[0], name))


def _official_names(root: Path) -> list[str]:
    listing = root / "list.txt"
    if listing.is_file():
        names = [ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
        if not names:
            raise InputError(listing, "is empty: no sequences listed")
        return names
    return sorted(p.parent.name for p in root.glob("*/groundtruth.txt"))


# -- pysot JSON layout --------------------------------------------------------------------------------------
def _json_sequences(root: Path, path: Path) -> list[VotSequence]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(path, f"not a readable dataset JSON: {e}") from None
    if not isinstance(meta, dict) or not meta:
        raise InputError(path, "expected a non-empty mapping video name -> {img_names, gt_rect, ...}")
    out = []
    for name in sorted(meta):  # pysot iterates in sorted name order
        entry = meta[name]
        try:
            img_names = list(entry["img_names"])
            gt = entry["gt_rect"]
        except (KeyError, TypeError):
            raise InputError(path, f"sequence {name}: needs 'img_names' and 'gt_rect'") from None
        bad = [i for i, g in enumerate(gt) if len(g) not in (4, 8)]
        if bad:
            raise InputError(path, f"sequence {name}, gt_rect[{bad[0]}]: expected 8 values (polygon) or 4, "
                                   f"got {len(gt[bad[0]])}")
        if not gt:
            raise InputError(path, f"sequence {name}: empty gt_rect (an empty sequence cannot be evaluated)")
        polys = np.array([g if len(g) == 8 else rect_to_polygon(np.array([g], float))[0] for g in gt], float)
        frames = []
        for rel in img_names:
            # Resolve against the root (the Ascend patch's choice); VOT2016.json may lack the `color/` part.
            p = root / rel
            if not p.is_file():
                alt = root / Path(rel).parent / "color" / Path(rel).name
                p = alt if alt.is_file() else p
            frames.append(p)
        _check_frames(frames, len(polys), name, path)
        out.append(VotSequence(name, tuple(frames), polys, _frame_size(frames[0], name)))
    return out


def read_vot(root: Path, *, json_name: str = "VOT2016.json", limit: int | None = None) -> list[VotSequence]:
    """Every sequence under `root` in sorted (pysot) order, from `<root>/<json_name>` when present, else from the
    official layout (list.txt + <seq>/groundtruth.txt + frames in <seq>/color/ or <seq>/)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset directory not found")
    js = root / json_name
    if js.is_file():
        seqs = _json_sequences(root, js)
    else:
        names = _official_names(root)
        if not names:
            raise InputError(root, f"no {json_name} and no <sequence>/groundtruth.txt: not a VOT dataset")
        seqs = [_official_sequence(root, n) for n in sorted(names)]
    return seqs[:limit]


# -- synthetic dataset --------------------------------------------------------------------------------------
def _texture(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    coarse = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-25, 26, size=(h, w, 3))
    return np.clip(smooth.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def make_synthetic_vot(root: Path, *, sequences: int = 2, frames: int = 20, size: tuple[int, int] = (160, 120),
                       seed: int = 0) -> Path:
    """Write a deterministic VOT dataset in the python vot-toolkit layout under `root` and return `root`:
    `list.txt`, `<seq>/sequence`, `<seq>/groundtruth.txt` (8-value polygons) and `<seq>/color/%08d.jpg`.

    A textured object moves, scales and rotates over a textured background; in the last third of every sequence
    it jumps across the frame (and is half-occluded for a few frames), hard enough to cause failures and resets.
    Idempotent: an existing complete dataset is left as is."""
    root = Path(root)
    names = [f"synth{i:02d}" for i in range(sequences)]
    done = root / ".complete"
    if done.is_file() and done.read_text() == f"{sequences} {frames} {size} {seed}":
        return root
    rng = np.random.default_rng(seed)
    w_img, h_img = size
    for s, name in enumerate(names):
        seq_dir = root / name
        (seq_dir / "color").mkdir(parents=True, exist_ok=True)
        bg = _texture(rng, h_img, w_img, 6)
        ow, oh = int(rng.integers(w_img // 6, w_img // 3)), int(rng.integers(h_img // 6, h_img // 3))
        obj = _texture(rng, oh, ow, 3)
        jump = frames * 2 // 3 + int(rng.integers(0, max(1, frames // 6)))  # after the 10-frame burn-in
        lines = []
        for t in range(frames):
            phase = t / max(frames - 1, 1)
            # A few pixels per frame: trackable, so that failures come from the hard frames below.
            cx = w_img * (0.35 + 0.3 * phase) + 2 * math.sin(t / 3 + s)
            cy = h_img * (0.5 + 0.08 * math.sin(2 * math.pi * phase + s))
            if t >= jump:  # abrupt relocation to the opposite quadrant: the old box no longer touches it
                cx += -0.45 * w_img if cx > w_img / 2 else 0.45 * w_img
                cy += -0.4 * h_img if cy > h_img / 2 else 0.4 * h_img
            scale = 1.0 + 0.15 * math.sin(2 * math.pi * phase)
            angle = 12.0 * math.sin(math.pi * phase + s)  # degrees
            rot = cv2.getRotationMatrix2D((ow / 2, oh / 2), angle, scale)
            rot[:, 2] += (cx - ow / 2, cy - oh / 2)
            frame = bg.copy()
            mask = cv2.warpAffine(np.full((oh, ow), 255, np.uint8), rot, (w_img, h_img), flags=cv2.INTER_NEAREST)
            warped = cv2.warpAffine(obj, rot, (w_img, h_img), flags=cv2.INTER_LINEAR)
            frame[mask > 0] = warped[mask > 0]
            if jump <= t < jump + 3:  # occluder over half the object
                x0 = int(max(cx - ow * scale / 2, 0))
                frame[:, x0:x0 + int(ow * scale / 2)] = bg[:, x0:x0 + int(ow * scale / 2)][:, ::-1]
            corners = np.array([[0, 0, 1], [ow, 0, 1], [ow, oh, 1], [0, oh, 1]], float) @ rot.T
            lines.append(",".join(f"{v:.2f}" for v in corners.ravel()))
            cv2.imwrite(str(seq_dir / "color" / f"{t + 1:08d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        (seq_dir / "groundtruth.txt").write_text("\n".join(lines) + "\n")
        (seq_dir / "sequence").write_text("channels.color=color/%08d.jpg\nformat=default\n"
                                          f"fps=30\nname={name}\n")
    (root / "list.txt").write_text("\n".join(names) + "\n")
    done.write_text(f"{sequences} {frames} {size} {seed}")
    return root


# -- OTB (pysot JSON layout) --------------------------------------------------------------------------------
@dataclass(frozen=True)
class OtbSequence:
    """One OTB sequence: frame files and (N,4) [x, y, w, h] ground truth (one-pass evaluation, no resets)."""

    name: str
    frames: tuple[Path, ...]
    boxes: np.ndarray

    def load(self, idx: int) -> np.ndarray:
        return load_frame(self.frames[idx], self.name)


def read_otb_json(root: Path, json_name: str = "OTB100.json") -> list[OtbSequence]:
    """Sequences of pysot's `<root>/<json_name>` ({video: {img_names, gt_rect, ...}}), sorted by name. pysot's
    `Jogging-1/-2` and `Skating2-1/-2` entries point at copies of `Jogging` / `Skating2` (spec section 13): a
    missing copy is reported like any missing frame."""
    root = Path(root)
    path = root / json_name
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(path, f"not a readable OTB dataset JSON: {e}") from None
    out = []
    for name in sorted(meta):
        entry = meta[name]
        try:
            frames = [root / rel for rel in entry["img_names"]]
            boxes = np.array(entry["gt_rect"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise InputError(path, f"sequence {name}: needs 'img_names' and 4-value 'gt_rect' rows") from None
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InputError(path, f"sequence {name}: gt_rect rows must have 4 values (x, y, w, h)")
        _check_frames(frames, len(boxes), name, path)
        out.append(OtbSequence(name, tuple(frames), boxes))
    return out


# -- OTB (official layout, as downloaded) -------------------------------------------------------------------
# Facts: shared/specs/sa_siam.md section 11. `<Seq>/img/0001.jpg ...` and `<Seq>/groundtruth_rect.txt` (1-based
# x,y,w,h; comma, tab or space separated); Jogging and Skating2 hold two targets (`groundtruth_rect.1.txt`, `.2.txt`
# -> `Jogging-1`, `Jogging-2`, pysot's names), Human4 one annotated target (`.2`; its `.1` file may be empty).
OTB_GT = "groundtruth_rect.txt"
_OTB_TARGET_GT = re.compile(r"groundtruth_rect\.(\d+)\.txt")
_OTB_SEPARATORS = re.compile(r"[,\s]+")
OtbRanges = Mapping[str, tuple[int, int]]


def parse_otb_groundtruth(text: str, source: Path, sequence: str) -> np.ndarray:
    """(N,4) 0-based [x, y, w, h] from an OTB `groundtruth_rect*.txt` (1-based values, any mix of comma / tab /
    space separators). A line that is not 4 finite numbers is an InputError naming the file and the line."""
    rows = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = [p for p in _OTB_SEPARATORS.split(line.strip()) if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise InputError(source, f"sequence {sequence}, line {no}: not numbers: {line.strip()!r}") from None
        if len(values) != 4:
            raise InputError(source, f"sequence {sequence}, line {no}: expected 4 values (x,y,w,h), got {len(values)}")
        if not all(math.isfinite(v) for v in values):
            raise InputError(source, f"sequence {sequence}, line {no}: non-finite value: {line.strip()!r}")
        rows.append(values)
    if not rows:
        raise InputError(source, f"sequence {sequence}: empty ground truth (an empty sequence cannot be evaluated)")
    boxes = np.array(rows, dtype=np.float64)
    boxes[:, :2] -= 1.0  # OTB is 1-based (MATLAB); everything here is 0-based (spec 10, "OTB glue")
    return boxes


def _otb_targets(seq_dir: Path) -> list[tuple[str, Path]]:
    """(target name, ground-truth file) of one sequence directory; empty when it holds no OTB ground truth."""
    numbered = sorted(((int(m.group(1)), p) for p in seq_dir.iterdir()
                       if (m := _OTB_TARGET_GT.fullmatch(p.name)) and p.is_file()), key=lambda kp: kp[0])
    # An empty numbered file is no target (Human4's `.1` ships empty in some downloads).
    numbered = [(k, p) for k, p in numbered if p.stat().st_size > 0 and p.read_text().strip()]
    if len(numbered) >= 2:
        return [(f"{seq_dir.name}-{k}", p) for k, p in numbered]
    if (seq_dir / OTB_GT).is_file():
        return [(seq_dir.name, seq_dir / OTB_GT)]
    return [(seq_dir.name, p) for _, p in numbered]  # Human4: only target 2 is annotated -> keeps the plain name


def _numbered_frames(img_dir: Path, sequence: str) -> tuple[dict[int, Path], int, str]:
    """Frame number -> file for the numerically named images of `img_dir`, the digit count and the suffix."""
    if not img_dir.is_dir():
        raise InputError(img_dir, f"sequence {sequence}: img/ directory missing")
    files = [p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.isdigit()]
    if not files:
        raise InputError(img_dir, f"sequence {sequence}: no frames (an empty sequence cannot be evaluated)")
    files.sort()
    return {int(p.stem): p for p in files}, len(files[0].stem), files[0].suffix


def _official_otb_target(seq_dir: Path, name: str, gt_path: Path, span: tuple[int, int] | None) -> OtbSequence:
    boxes = parse_otb_groundtruth(gt_path.read_text(), gt_path, name)
    by_number, width, suffix = _numbered_frames(seq_dir / "img", name)
    if span is None:
        # No frame range given: the annotation must cover every image, numbered from the first one.
        first = min(by_number)
        start, end = first, first + len(boxes) - 1
    else:
        start, end = span
        if start < 1 or end < start:
            raise InputError(gt_path, f"sequence {name}: bad frame range ({start}, {end}) (1-based, inclusive)")
        if end - start + 1 != len(boxes):
            raise InputError(gt_path, f"sequence {name}: frame range {start}-{end} holds {end - start + 1} frames "
                                      f"but the file has {len(boxes)} ground-truth lines")
    wanted = range(start, end + 1)
    absent = [k for k in wanted if k not in by_number]
    if absent:
        path = seq_dir / "img" / f"{absent[0]:0{width}d}{suffix}"
        raise InputError(path, f"sequence {name}: frame missing ({len(absent)} of {len(wanted)} missing)")
    if span is None and len(by_number) != len(boxes):
        raise InputError(gt_path, f"sequence {name}: {len(by_number)} frames in img/ but {len(boxes)} ground-truth "
                                  "lines; a sequence that uses a sub-range needs its (start, end) from the toolkit's "
                                  "sequence list (`ranges`)")
    return OtbSequence(name, tuple(by_number[k] for k in wanted), boxes)


def read_otb(root: Path, *, names: Sequence[str] | None = None, ranges: OtbRanges | None = None,
             json_name: str = "OTB100.json") -> list[OtbSequence]:
    """OTB sequences under `root`, sorted by name, boxes 0-based [x, y, w, h].

    From pysot's `<root>/<json_name>` when present (its `gt_rect` rows are the raw 1-based files' values and are
    shifted to 0-based here), else from the official layout. `names` selects targets (`Jogging-1`) or whole
    sequence directories (`Jogging`); an unknown name is an error. `ranges` maps a target or directory name to its
    1-based inclusive (start, end) frame numbers, taken from the toolkit's sequence list (spec 11: never guessed
    from a directory listing); a sequence without one must have exactly one image per ground-truth line."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset directory not found")
    if (root / json_name).is_file():
        # The JSON carries pysot's frame ranges itself; `ranges` does not apply.
        seqs = {s.name: OtbSequence(s.name, s.frames, s.boxes - np.array([1.0, 1.0, 0.0, 0.0]))
                for s in read_otb_json(root, json_name)}
        return [seqs[n] for n in sorted(_select(names, seqs, {}, root))]
    targets: dict[str, tuple[Path, Path]] = {}
    groups: dict[str, list[str]] = {}
    for seq_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for name, gt in _otb_targets(seq_dir):
            targets[name] = (seq_dir, gt)
            groups.setdefault(seq_dir.name, []).append(name)
    if not targets:
        raise InputError(root, f"no {json_name} and no <sequence>/{OTB_GT}: not an OTB dataset")
    ranges = ranges or {}
    out = []
    for name in sorted(_select(names, targets, groups, root)):
        seq_dir, gt = targets[name]
        out.append(_official_otb_target(seq_dir, name, gt, ranges.get(name, ranges.get(seq_dir.name))))
    return out


def _select(names: Sequence[str] | None, targets: Mapping[str, object], groups: Mapping[str, list[str]],
            root: Path) -> set[str]:
    if names is None:
        return set(targets)
    unknown = [n for n in names if n not in targets and n not in groups]
    if unknown:
        raise InputError(root, f"sequence(s) not in the dataset: {', '.join(unknown[:10])}")
    return {t for n in names for t in ([n] if n in targets else groups[n])}


def make_synthetic_otb(root: Path, *, sequences: int = 3, frames: int = 20, size: tuple[int, int] = (160, 120),
                       seed: int = 0) -> Path:
    """Write a deterministic OTB dataset in the official layout under `root` and return `root`:
    `<seq>/img/%04d.jpg` and `<seq>/groundtruth_rect.txt` (1-based x,y,w,h; the separator cycles through comma,
    tab and space across sequences, as in the real download). A textured object moves and scales smoothly over a
    textured background; boxes are pixel-exact (integer placement). Idempotent like make_synthetic_vot."""
    root = Path(root)
    done = root / ".complete"
    stamp = f"otb {sequences} {frames} {size} {seed}"
    if done.is_file() and done.read_text() == stamp:
        return root
    rng = np.random.default_rng(seed)
    w_img, h_img = size
    separators = (",", "\t", " ")
    for s in range(sequences):
        seq_dir = root / f"synth{s:02d}"
        (seq_dir / "img").mkdir(parents=True, exist_ok=True)
        bg = _texture(rng, h_img, w_img, 6)
        ow, oh = int(rng.integers(w_img // 6, w_img // 3)), int(rng.integers(h_img // 6, h_img // 3))
        obj = _texture(rng, oh, ow, 3)
        phase0 = float(rng.uniform(0, 2 * math.pi))
        lines = []
        for t in range(frames):
            phase = t / max(frames - 1, 1)
            scale = 1.0 + 0.25 * math.sin(2 * math.pi * phase + phase0)
            w, h = max(4, round(ow * scale)), max(4, round(oh * scale))
            cx = w_img * (0.3 + 0.4 * phase) + 3 * math.sin(t / 2 + s)
            cy = h_img * (0.5 + 0.15 * math.sin(2 * math.pi * phase + s))
            x0 = min(max(round(cx - w / 2), 0), w_img - w)
            y0 = min(max(round(cy - h / 2), 0), h_img - h)
            frame = bg.copy()
            frame[y0:y0 + h, x0:x0 + w] = cv2.resize(obj, (w, h), interpolation=cv2.INTER_LINEAR)
            cv2.imwrite(str(seq_dir / "img" / f"{t + 1:04d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            lines.append(separators[s % 3].join(str(v) for v in (x0 + 1, y0 + 1, w, h)))  # 1-based, as OTB
        (seq_dir / OTB_GT).write_text("\n".join(lines) + "\n")
    done.write_text(stamp)
    return root
