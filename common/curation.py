"""Curation machinery shared by the training bundles (siamrpnpp's crop511, sa_siam's 255 crops): the report with
every skipped object named, resumable atomic writes, the worker pool, progress, JSON output and the ImageNet
(VID / DET) folder layouts. Each bundle keeps its own crop rule and index format.

Resumable: each crop is written under a temporary name in its directory and renamed into place, so a file with a
final name is complete and is reused by the next run; leftovers of an interrupted write are deleted.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from common.errors import InputError
from common.progress import Progress

log = logging.getLogger("zoo.curate")

TMP_SUFFIX = ".tmp"

# Reasons an object is skipped (a problem with the input: recorded with its file).
MISSING_IMAGE = "image missing"
BAD_IMAGE = "image unreadable"
BAD_ANNOTATION = "malformed annotation"
DEGENERATE = "degenerate box (w <= 0 or h <= 0 or not finite)"
OUTSIDE = "box outside the image"
EMPTY_VIDEO = "empty video"
DUPLICATE = "duplicate annotation (a later one replaces it)"

# VID subsets: pysot's symlink names and the official ILSVRC2015 folders they point at (spec 5.2).
VID_SUBSETS = {
    "a": ("train/ILSVRC2015_VID_train_0000",),
    "b": ("train/ILSVRC2015_VID_train_0001",),
    "c": ("train/ILSVRC2015_VID_train_0002",),
    "d": ("train/ILSVRC2015_VID_train_0003",),
    "e": ("val",),
}


@dataclass
class CurationReport:
    """What one curation run did. `skipped`: reason -> [(file, detail)] (input problems, each named);
    `excluded`: rule -> count (objects a pysot rule drops); `json_files`: name -> counts of what it indexes."""

    dataset: str
    crops_written: int = 0
    crops_reused: int = 0
    skipped: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    excluded: dict[str, int] = field(default_factory=dict)
    json_files: dict[str, dict[str, int]] = field(default_factory=dict)
    workers: int = 1
    seconds: float = 0.0
    opencv: str = cv2.__version__

    @property
    def n_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def summary(self) -> str:
        """One paragraph: crops, and how many were skipped and why (with the first files named)."""
        crops = self.crops_written + self.crops_reused
        rate = self.crops_written / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{self.dataset}: {crops} crops ({self.crops_written} written, {self.crops_reused} reused from an "
                 f"earlier run) in {self.seconds:.1f} s ({rate:.0f} written/s, {self.workers} workers); "
                 f"{self.n_skipped} skipped" + (":" if self.n_skipped else "")]
        for reason, items in sorted(self.skipped.items()):
            examples = "; ".join(f"{f} ({d})" for f, d in items[:3])
            more = f"; ... {len(items) - 3} more" if len(items) > 3 else ""
            lines.append(f"  {len(items)} {reason}: {examples}{more}")
        if self.excluded:
            lines.append("  dropped by pysot's rules (not errors): "
                         + ", ".join(f"{n} {r}" for r, n in sorted(self.excluded.items())))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "crops_written": self.crops_written, "crops_reused": self.crops_reused,
                "n_skipped": self.n_skipped,
                "skipped": {r: [list(e) for e in items] for r, items in sorted(self.skipped.items())},
                "excluded": dict(sorted(self.excluded.items())), "json_files": self.json_files,
                "workers": self.workers, "seconds": round(self.seconds, 3), "opencv": self.opencv,
                "z_crops": "not written (training never reads .z.jpg)"}


@dataclass
class TaskResult:
    """What a task sends back: JSON entries of its videos and the tallies."""

    entries: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (reason, file, detail)
    excluded: Counter = field(default_factory=Counter)
    written: int = 0
    reused: int = 0
    units: int = 0

    def skip(self, reason: str, path: str | Path, detail: str) -> None:
        self.skipped.append((reason, str(path), detail))


class Malformed(ValueError):
    pass


def scan_crops(crop_dir: str) -> dict[str, int]:
    """Final crop names in `crop_dir` with their sizes; deletes leftovers of writes an interruption cut short."""
    found: dict[str, int] = {}
    try:
        entries = list(os.scandir(crop_dir))
    except FileNotFoundError:
        return found
    for e in entries:
        if e.name.endswith(TMP_SUFFIX):
            try:
                os.unlink(e.path)
            except FileNotFoundError:
                pass
        elif e.name.endswith(".x.jpg"):
            found[e.name] = e.stat().st_size
    return found


def write_atomic(path: str, data: bytes) -> None:
    """Write under a temporary name in the same folder, then rename: a final name is always a complete file."""
    tmp = f"{os.path.dirname(path)}/.{os.path.basename(path)}.{os.getpid()}{TMP_SUFFIX}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def xml_number(text: str | None, what: str) -> float:
    """An integer as annotated (kept as int), or a float; anything else is malformed."""
    if text is None:
        raise Malformed(f"missing <{what}>")
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise Malformed(f"<{what}> is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise Malformed(f"<{what}> is not finite: {text!r}")
    return value


def ilsvrc_root(raw_root: Path, kind: str) -> Path:
    """The folder holding Annotations/<kind> and Data/<kind>: raw_root itself or its ILSVRC2015/ or ILSVRC/."""
    for cand in (raw_root, raw_root / "ILSVRC2015", raw_root / "ILSVRC"):
        if (cand / "Annotations" / kind).is_dir():
            return cand
    raise InputError(raw_root, f"not an ImageNet {kind} folder: no Annotations/{kind}/ here "
                               f"(nor under ILSVRC2015/ or ILSVRC/)")


def subset_dirs(base: Path, kind: str, letter: str, official: tuple[str, ...]) -> tuple[Path, Path] | None:
    """(annotation dir, data dir) of one subset: pysot's symlink `train/<letter>` or the official folder."""
    names = (f"train/{letter}", *official)
    ann = next((base / "Annotations" / kind / n for n in names if (base / "Annotations" / kind / n).is_dir()), None)
    if ann is None:
        return None
    rel = ann.relative_to(base / "Annotations" / kind)
    data = base / "Data" / kind / rel
    if not data.is_dir():
        data = next((base / "Data" / kind / n for n in names if (base / "Data" / kind / n).is_dir()), data)
    if not data.is_dir():
        raise InputError(data, f"image folder of {kind} subset {letter} missing (annotations are in {ann})")
    return ann, data


def default_workers() -> int:
    """$ZOO_WORKERS, else every core (curation has no backend to leave a core for), at most 32."""
    env = os.environ.get("ZOO_WORKERS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(32, os.cpu_count() or 1))


def run_tasks(tasks: list[tuple[Callable, list]], crop_root: str, pool: ProcessPoolExecutor | None,
               workers: int) -> Iterator[TaskResult]:
    """Results of the tasks as they finish: inline without a pool, else at most 2 x workers in flight (so an
    interruption or an error waits for few)."""
    if pool is None or len(tasks) <= 1:
        for fn, jobs in tasks:
            yield fn(jobs, crop_root)
        return
    todo = iter(tasks)
    pending: set[Future[TaskResult]] = set()
    try:
        for fn, jobs in todo:
            pending.add(pool.submit(fn, jobs, crop_root))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()  # a worker's exception (e.g. a full disk) stops the run here
                nxt = next(todo, None)
                if nxt is not None:
                    pending.add(pool.submit(nxt[0], nxt[1], crop_root))
    finally:
        for fut in pending:
            fut.cancel()


class CurationProgress(Progress):
    """common.progress.Progress counting work units, with the crops written and items skipped so far."""

    def __init__(self, label: str, total: int, unit: str, enabled: bool) -> None:
        super().__init__(total, desc=label, unit=unit.rstrip("s"), enabled=enabled)
        self.crops = self.skipped = 0

    def add(self, res: TaskResult) -> None:
        self.crops += res.written + res.reused
        self.skipped += len(res.skipped)
        self.update(res.units, crops=self.crops, skipped=self.skipped)


def write_json(path: Path, obj: object, indent: int | None = 4) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=True)  # pysot's gen_json: indent 4, sorted keys
        f.write("\n")
    os.replace(tmp, path)
