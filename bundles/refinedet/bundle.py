"""RefineDet320 / VOC2007 test: the bundle's half of the pipeline (see common/bundle.py for the stages).

Run directory files written here: `ground_truth.json` (prepare), `results/det_test_<class>.txt` (predict, the
upstream detection-file format, rounding included), from which `score` recomputes the 11-point mAP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from bundles.refinedet import data, post
from bundles.refinedet.model import RefineDet, refinedet320
from common.backends.base import Backend
from common.bundle import Bundle, Check, DemoAssets, PredictStats
from common.checkpoint import load_checkpoint, save_random_checkpoint
from common.errors import InputError
from common.imageio import load_image_bgr
from common.metrics.voc import ClassDetections, evaluate
from common.progress import Progress, track
from common.sharding import shard_ranges
from common.stream import PostPool, pad_batch, prefetched_batches

if TYPE_CHECKING:  # matplotlib is imported only when report.html is rendered
    from matplotlib.figure import Figure

GROUND_TRUTH = "ground_truth.json"
RESULTS = "results"
DETECTIONS = "detections.npz"


@dataclass(frozen=True)
class VocTestSet:
    voc_dir: Path
    image_ids: list[str]
    objects: list[list[data.VocObject]]

    def image_path(self, i: int) -> Path:
        return self.voc_dir / "JPEGImages" / f"{self.image_ids[i]}.jpg"


class RefineDetBundle(Bundle):
    name = "refinedet"

    def build_model(self, weights: Path | None) -> nn.Module:
        if weights is None:
            return refinedet320()
        return refinedet320(load_checkpoint(weights), source=str(weights))

    # -- data --------------------------------------------------------------------------------------------------
    def make_demo(self, root: Path, *, seed: int = 0, size: int | None = None) -> DemoAssets:
        voc = data.make_synthetic_voc(root, n_images=size or 8, seed=seed)
        weights = root / "RefineDet320_VOC_random-weights.pth"
        if not weights.is_file():
            save_random_checkpoint(RefineDet(), weights, seed=seed)
        return DemoAssets(voc.parent.parent, weights, f"synthetic VOCdevkit ({size or 8} images, coloured boxes on "
                          "noise) and a random-weight checkpoint with the 98 upstream keys")

    # -- stages ------------------------------------------------------------------------------------------------
    def prepare(self, data_dir: Path, run_dir: Path, *, limit: int | None = None) -> VocTestSet:
        voc = data.find_voc2007(data_dir)
        ids = data.read_image_ids(voc)[:limit]
        # Validate everything before inference starts: a bad file fails the run up front, never half-way.
        objects = [data.parse_annotation(voc / "Annotations" / f"{i}.xml")
                   for i in track(ids, len(ids), desc="refinedet prepare", unit="annotation")]
        for i in ids:
            path = voc / "JPEGImages" / f"{i}.jpg"
            if not path.is_file():
                raise InputError(path, "image file missing (listed in ImageSets/Main/test.txt)")
        data.write_ground_truth(run_dir / GROUND_TRUTH, ids, objects)
        return VocTestSet(voc, ids, objects)

    def predict(self, dataset: VocTestSet, backends: Mapping[str, Backend], run_dir: Path, *,
                batch_size: int) -> PredictStats:
        backend = backends["model"]
        stats = PredictStats()

        def load(i: int) -> tuple[np.ndarray, tuple[int, int]]:
            image = load_image_bgr(dataset.image_path(i))
            return data.preprocess(image), (image.shape[1], image.shape[0])

        pool: PostPool[list[post.ImageDetections]] = PostPool()
        bar = Progress(len(dataset.image_ids), desc="refinedet infer+post", unit="image")
        try:
            for indices, items in prefetched_batches(len(dataset.image_ids), load, batch_size):
                outputs = backend.run({"image": pad_batch(np.stack([x for x, _ in items]), batch_size)})
                pool.submit(post.pixel_detections_for_batch, outputs, [size for _, size in items])
                stats.items += len(indices)
                bar.update(len(indices))
        finally:
            per_batch = pool.drain()
            bar.close()
        dets = [d for batch in per_batch for d in batch]
        # Raw predictions (float32, before the det-file rounding): `score` applies upstream's rounding exactly
        # and exports the det_test files, so no text formatting competes with inference here.
        np.savez(run_dir / DETECTIONS,
                 image_index=np.repeat(np.arange(len(dets), dtype=np.int32), [d.labels.size for d in dets]),
                 labels=np.concatenate([d.labels for d in dets]).astype(np.int8),
                 scores=np.concatenate([d.scores for d in dets]),
                 boxes=np.concatenate([d.boxes for d in dets]).reshape(-1, 4))
        stats.extra["detections"] = int(sum(d.labels.size for d in dets))
        stats.extra["detections_per_image"] = round(stats.extra["detections"] / max(1, stats.items), 1)
        return stats

    def shard(self, dataset: VocTestSet, rank: int, world_size: int, *, batch_size: int) -> VocTestSet:
        part = shard_ranges(len(dataset.image_ids), world_size, batch_size)[rank]
        return VocTestSet(dataset.voc_dir, dataset.image_ids[part.start:part.stop],
                          dataset.objects[part.start:part.stop])

    def merge_predictions(self, shards: Sequence[tuple[VocTestSet, Path]], run_dir: Path) -> None:
        """detections.npz of each shard, image indices shifted by the images of the shards before it."""
        arrays: dict[str, list[np.ndarray]] = {"image_index": [], "labels": [], "scores": [], "boxes": []}
        offset = 0
        for part, folder in shards:
            with np.load(folder / DETECTIONS, allow_pickle=False) as z:
                for key in arrays:
                    arrays[key].append(z[key] + offset if key == "image_index" else z[key])
            offset += len(part.image_ids)
        np.savez(run_dir / DETECTIONS, **{k: np.concatenate(v) for k, v in arrays.items()})

    def score(self, run_dir: Path) -> dict[str, float]:
        image_ids, objects = data.read_ground_truth(run_dir / GROUND_TRUTH)
        result = evaluate(_rounded_detections(run_dir / DETECTIONS, len(image_ids)),
                          data.ground_truth_by_class(objects))
        metrics = {"mAP": 100.0 * result.mean_ap}
        metrics.update({f"AP/{name}": 100.0 * ap for name, ap in result.ap.items()})
        return metrics

    item_label = "class"

    def item_scores(self, run_dir: Path) -> dict[str, dict[str, float]]:
        metrics = self.score(run_dir)
        return {"per-class AP (%)": {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("AP/")}}

    def export_predictions(self, run_dir: Path) -> None:
        """results/det_test_<class>.txt in upstream's format, written from detections.npz with the same rounding
        the metric applies, so upstream's own evaluator can be run on them."""
        image_ids, _ = data.read_ground_truth(run_dir / GROUND_TRUTH)
        per_class = _rounded_detections(run_dir / DETECTIONS, len(image_ids))
        _write_results(run_dir / RESULTS, _detection_lines(per_class, image_ids))

    def demo_checks(self, run_dir: Path, metrics: Mapping[str, float]) -> list[Check]:
        """Score the ground truth itself through the same file format and metric: AP must be 100 for every class
        that has non-difficult ground truth; the random-weight mAP must be a finite percentage."""
        image_ids, objects = data.read_ground_truth(run_dir / GROUND_TRUTH)
        oracle_dir = run_dir / "sanity" / RESULTS
        _write_results(oracle_dir, data.ground_truth_as_detections(objects, image_ids))
        oracle = evaluate(data.read_detection_files(oracle_dir, image_ids), data.ground_truth_by_class(objects))
        present = [n for n, k in oracle.npos.items() if k > 0]
        perfect = all(abs(oracle.ap[n] - 1.0) < 1e-9 for n in present)  # 11 ones / 11 is not exact in float
        m = metrics["mAP"]
        return [
            Check("metric sanity: ground truth scored as detections", perfect and bool(present),
                  f"AP = 100 % for all {len(present)} classes with ground truth"
                  if perfect else f"AP below 100 %: { {n: oracle.ap[n] for n in present} }"),
            Check("metric sanity: random-weight mAP is a finite percentage", bool(np.isfinite(m) and 0 <= m <= 100),
                  f"mAP = {m:.2f} % (random weights: no claim about the published number)"),
        ]

    def metric_benchmark(self) -> dict[str, float]:
        from common.metrics.voc import benchmark

        return benchmark()

    def summary_lines(self, run_dir: Path, metrics: Mapping[str, float]) -> list[str]:
        lines = ["| class | AP (%) |", "|---|---|"]
        lines += [f"| {name} | {metrics[f'AP/{name}']:.2f} |" for name in data.VOC_CLASSES]
        return lines

    def figures(self, run_dir: Path, metrics: Mapping[str, float]) -> list[tuple[str, Figure]]:
        """Precision / recall curve per class, recomputed from the run directory as `score` does."""
        from common.plots import pr_curves_figure

        image_ids, objects = data.read_ground_truth(run_dir / GROUND_TRUTH)
        result = evaluate(_rounded_detections(run_dir / DETECTIONS, len(image_ids)),
                          data.ground_truth_by_class(objects))
        curves = {n: (c.recall, c.precision, c.ap) for n, c in result.per_class.items()}
        title = f"{self.name}: precision / recall per class (VOC07 11-point, mAP {100 * result.mean_ap:.2f} %)"
        return [("precision / recall per class", pr_curves_figure(curves, title=title))]


def _rounded_detections(path: Path, n_images: int) -> dict[str, ClassDetections]:
    """detections.npz -> per-class detections with the det-file rounding, in image then emission order."""
    try:
        with np.load(path) as z:
            index, labels, scores, boxes = z["image_index"], z["labels"], z["scores"], z["boxes"]
    except (OSError, KeyError, ValueError) as e:
        raise InputError(path, f"unreadable predictions: {e}") from None
    if index.size and (index.min() < 0 or index.max() >= n_images or labels.min() < 1 or labels.max() > 20):
        raise InputError(path, "image index or label out of range for the ground truth in this run directory")
    rounded_scores, rounded_boxes = post.round_like_detection_files(scores, boxes)
    return {name: ClassDetections(index[labels == c].astype(np.int64), rounded_scores[labels == c],
                                  rounded_boxes[labels == c]) for c, name in enumerate(data.VOC_CLASSES, start=1)}


def _detection_lines(per_class: Mapping[str, ClassDetections], image_ids: list[str]) -> dict[int, list[str]]:
    return {c: [f"{image_ids[i]} {s:.3f} {b[0]:.1f} {b[1]:.1f} {b[2]:.1f} {b[3]:.1f}" for i, s, b in
                zip(d.image_index.tolist(), d.scores.tolist(), d.boxes.tolist(), strict=True)]
            for c, d in ((c, per_class[n]) for c, n in enumerate(data.VOC_CLASSES, start=1))}


def _write_results(results_dir: Path, lines: Mapping[int, list[str]]) -> None:
    """One det_test_<class>.txt per class (empty for classes without detections), upstream's format."""
    results_dir.mkdir(parents=True, exist_ok=True)
    for label in range(1, len(data.VOC_CLASSES) + 1):
        data.detection_file(results_dir, label).write_text("".join(f"{x}\n" for x in lines.get(label, [])))


BUNDLE = RefineDetBundle()
