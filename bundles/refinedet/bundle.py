"""RefineDet320 / VOC2007 test: the bundle's half of the pipeline (see common/bundle.py for the stages).

Run directory files written here: `ground_truth.json` (prepare), `results/det_test_<class>.txt` (predict, the
upstream detection-file format, rounding included), from which `score` recomputes the 11-point mAP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from bundles.refinedet import data, post
from bundles.refinedet.model import RefineDet, refinedet320
from common.backends.base import Backend
from common.bundle import Bundle, Check, DemoAssets, PredictStats
from common.checkpoint import load_checkpoint, save_random_checkpoint
from common.errors import InputError
from common.imageio import load_image_bgr
from common.metrics.voc import evaluate
from common.stream import PostPool, pad_batch, prefetched_batches

GROUND_TRUTH = "ground_truth.json"
RESULTS = "results"


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
        return refinedet320(None if weights is None else load_checkpoint(weights))

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
        objects = [data.parse_annotation(voc / "Annotations" / f"{i}.xml") for i in ids]
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

        pool: PostPool[list[dict[int, list[str]]]] = PostPool()
        try:
            for indices, items in prefetched_batches(len(dataset.image_ids), load, batch_size):
                outputs = backend.run({"image": pad_batch(np.stack([x for x, _ in items]), batch_size)})
                pool.submit(post.detection_lines_for_batch, [dataset.image_ids[i] for i in indices], outputs,
                            [size for _, size in items])
                stats.items += len(indices)
        finally:
            per_batch = pool.drain()
        lines: dict[int, list[str]] = {}
        for image_lines in (x for batch in per_batch for x in batch):
            for label, class_lines in image_lines.items():
                lines.setdefault(label, []).extend(class_lines)
        _write_results(run_dir / RESULTS, lines)
        stats.extra["detections"] = sum(len(v) for v in lines.values())
        stats.extra["detections_per_image"] = round(stats.extra["detections"] / max(1, stats.items), 1)
        return stats

    def score(self, run_dir: Path) -> dict[str, float]:
        image_ids, objects = data.read_ground_truth(run_dir / GROUND_TRUTH)
        result = evaluate(data.read_detection_files(run_dir / RESULTS, image_ids), data.ground_truth_by_class(objects))
        metrics = {"mAP": 100.0 * result.mean_ap}
        metrics.update({f"AP/{name}": 100.0 * ap for name, ap in result.ap.items()})
        return metrics

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


def _write_results(results_dir: Path, lines: Mapping[int, list[str]]) -> None:
    """One det_test_<class>.txt per class (empty for classes without detections), upstream's format."""
    results_dir.mkdir(parents=True, exist_ok=True)
    for label in range(1, len(data.VOC_CLASSES) + 1):
        data.detection_file(results_dir, label).write_text("".join(f"{x}\n" for x in lines.get(label, [])))


BUNDLE = RefineDetBundle()
