"""PAMTRI MultiTaskNet / VeRi-776 re-ID: the bundle's half of the pipeline (see common/bundle.py for the stages).

Run directory files written here: `ground_truth.npz` (prepare: names, vehicle ids, camera ids of query and gallery,
in CSV row order), `features_query.npy` / `features_gallery.npy` (predict: the `f_vid` embeddings, float32
(N, 1024), same order), from which `score` recomputes mAP and CMC (common/metrics/reid.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from bundles.pamtri import data
from bundles.pamtri.model import (
    EMBEDDING_NAME,
    MultiTaskDenseNet121,
    load_pamtri_checkpoint,
    pamtri_densenet121,
)
from common.backends.base import Backend
from common.bundle import Bundle, Check, DemoAssets, PredictStats
from common.checkpoint import random_state_dict
from common.errors import InputError
from common.imageio import load_image_bgr
from common.metrics.reid import REPORT_RANKS, ReidResult, evaluate
from common.progress import Progress
from common.sharding import shard_ranges

if TYPE_CHECKING:  # matplotlib is imported only when report.html is rendered
    from matplotlib.figure import Figure

log = logging.getLogger("zoo.pamtri")

GROUND_TRUTH = "ground_truth.npz"
FEATURES = {"query": "features_query.npy", "gallery": "features_gallery.npy"}
EMBEDDING_DIM = 1024
SANITY = "sanity"


def _embedding(outputs: Mapping[str, np.ndarray], source: str) -> np.ndarray:
    """The re-ID embedding of a batch: the output named `f_vid`, else the only output of width 1024 (backends that
    name outputs by position, e.g. an OM's)."""
    if EMBEDDING_NAME in outputs:
        return outputs[EMBEDDING_NAME]
    wide = [k for k, v in outputs.items() if v.ndim == 2 and v.shape[1] == EMBEDDING_DIM]
    if len(wide) != 1:
        raise InputError(source, f"cannot find the {EMBEDDING_DIM}-d re-ID output among "
                                 f"{ {k: v.shape for k, v in outputs.items()} }")
    return outputs[wide[0]]


def score_features(gt: Mapping[str, np.ndarray], qf: np.ndarray, gf: np.ndarray) -> ReidResult:
    """The metric on features in ground-truth row order (shared by `score` and the demo sanity check)."""
    return evaluate(qf, gf, gt["query_pids"], gt["gallery_pids"], gt["query_camids"], gt["gallery_camids"])


def _load_features(path: Path, rows: int) -> np.ndarray:
    try:
        feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(path, f"unreadable features: {e}") from None
    if feats.ndim != 2 or feats.shape[0] != rows:
        raise InputError(path, f"expected ({rows}, D) features (one row per ground-truth image), got {feats.shape}")
    if not np.isfinite(feats).all():
        raise InputError(path, "features contain NaN or inf")
    return feats.astype(np.float32, copy=False)


class PamtriBundle(Bundle):
    name = "pamtri"

    def __init__(self) -> None:
        super().__init__()
        self.checkpoint_meta: dict[str, Any] = {}

    # -- model -------------------------------------------------------------------------------------------------
    def build_model(self, weights: Path | None) -> nn.Module:
        if weights is None:
            return pamtri_densenet121()
        state_dict, self.checkpoint_meta = load_pamtri_checkpoint(weights)
        model = pamtri_densenet121(state_dict, source=str(weights))
        log.info("%s: %d tensors loaded strictly; %s", weights, len(model.state_dict()), self.checkpoint_meta)
        return model

    def example_inputs(self, batch_size: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (batch_size, 96, 128, 3), dtype=np.uint8)
        return {"input": np.stack([data.preprocess(im) for im in images])}

    # -- data --------------------------------------------------------------------------------------------------
    def make_demo(self, root: Path, *, seed: int = 0, size: int | None = None) -> DemoAssets:
        # about 6.7 images per identity (12 ids -> 80 images); `size` asks for that many images in all
        veri = data.make_synthetic_veri(root / "VeRi", n_ids=max(12, (size or 0) * 3 // 20), seed=seed)
        weights = root / "pamtri_densenet121_random-weights.pth.tar"
        if not weights.is_file():
            # The real container shape: {'state_dict', 'rank1' (a numpy float32), 'epoch'}, so the demo exercises
            # the safe-globals path the released checkpoint needs.
            weights.parent.mkdir(parents=True, exist_ok=True)
            tmp = weights.with_suffix(".tmp")
            torch.save({"state_dict": random_state_dict(MultiTaskDenseNet121(), seed=seed), "rank1": np.float32(0.0),
                        "epoch": 0}, tmp)
            tmp.replace(weights)
        return DemoAssets(veri, weights, "synthetic VeRi (12 ids x 3 cameras, 80 JPEGs, PAMTRI's 112-column label "
                          "CSVs, same-id same-camera gallery images, one query without a valid match) and a "
                          "random-weight checkpoint with the 737 upstream keys in the upstream container")

    def locate(self, data_dir: Path | None, weights: Path | None, cache_dir: Path) -> tuple[Path, Path] | None:
        """The user's paths win; else the fetched checkpoint and an extracted VeRi under `<cache>/pamtri/VeRi`
        (VeRi has no public download: it is always user-supplied in practice)."""
        from common.fetch import artifact_location

        if weights is None:
            cached = artifact_location(self.name, self.manifest.artifacts["weights"], cache_dir)
            weights = cached if cached.is_file() else None
        if data_dir is None:
            cached = cache_dir / self.name / "VeRi"
            data_dir = cached if cached.is_dir() else None
        return (data_dir, weights) if data_dir is not None and weights is not None else None

    # -- stages ------------------------------------------------------------------------------------------------
    def prepare(self, data_dir: Path, run_dir: Path, *, limit: int | None = None) -> dict[str, data.VeriSplit]:
        # Validate everything (CSV rows, names, images) before inference starts: a bad file fails up front.
        root = next((c for c in (data_dir, data_dir / "veri", data_dir / "VeRi") if (c / "image_query").is_dir()),
                    data_dir)
        splits = data.read_veri(root, limit=limit)
        data.write_ground_truth(run_dir / GROUND_TRUTH, splits)
        return splits

    def predict(self, dataset: dict[str, data.VeriSplit], backends: Mapping[str, Backend], run_dir: Path, *,
                batch_size: int) -> PredictStats:
        from common.stream import pad_batch, prefetched_batches

        backend = backends["model"]
        stats = PredictStats()
        bar = Progress(sum(len(part) for part in dataset.values()), desc="pamtri infer", unit="image")
        for split, part in dataset.items():
            feats = np.empty((len(part), EMBEDDING_DIM), dtype=np.float32)
            # Images load and pre-process in background threads while the backend runs the previous batch.
            for indices, images in prefetched_batches(len(part), lambda i, p=part: data.preprocess(
                    load_image_bgr(p.path(i))), batch_size):
                outputs = backend.run({"input": pad_batch(np.stack(images), batch_size)})
                feats[indices.start : indices.stop] = _embedding(outputs, f"{backend.name} output")[: len(indices)]
                stats.items += len(indices)
                bar.update(len(indices))
            np.save(run_dir / FEATURES[split], feats)
            stats.extra[f"{split}_images"] = len(part)
        bar.close()
        stats.extra["checkpoint"] = {k: v for k, v in self.checkpoint_meta.items()}
        return stats

    def shard(self, dataset: dict[str, data.VeriSplit], rank: int, world_size: int, *,
              batch_size: int) -> dict[str, data.VeriSplit]:
        """A contiguous block of the query rows and one of the gallery rows."""
        out = {}
        for split, part in dataset.items():
            r = shard_ranges(len(part), world_size, batch_size)[rank]
            out[split] = replace(part, names=part.names[r.start:r.stop], pids=part.pids[r.start:r.stop],
                                 camids=part.camids[r.start:r.stop])
        return out

    def merge_predictions(self, shards: Sequence[tuple[dict[str, data.VeriSplit], Path]], run_dir: Path) -> None:
        """Feature rows of every shard, concatenated in rank order (= CSV row order)."""
        for split, name in FEATURES.items():
            rows = [_load_features(folder / name, len(part[split])) for part, folder in shards]
            np.save(run_dir / name, np.concatenate(rows))

    def metric_benchmark(self) -> dict[str, float]:
        from common.metrics.reid import benchmark

        return benchmark()

    def score(self, run_dir: Path) -> dict[str, float]:
        gt = data.read_ground_truth(run_dir / GROUND_TRUTH)
        qf = _load_features(run_dir / FEATURES["query"], len(gt["query_pids"]))
        gf = _load_features(run_dir / FEATURES["gallery"], len(gt["gallery_pids"]))
        if qf.shape[1] != gf.shape[1]:
            raise InputError(run_dir, f"query features are {qf.shape[1]}-d, gallery {gf.shape[1]}-d")
        try:
            return score_features(gt, qf, gf).as_dict()
        except ValueError as e:
            raise InputError(run_dir / GROUND_TRUTH, str(e)) from None

    item_label = "query"

    def item_scores(self, run_dir: Path) -> dict[str, dict[str, float]]:
        gt = data.read_ground_truth(run_dir / GROUND_TRUTH)
        qf = _load_features(run_dir / FEATURES["query"], len(gt["query_pids"]))
        gf = _load_features(run_dir / FEATURES["gallery"], len(gt["gallery_pids"]))
        ap = score_features(gt, qf, gf).ap
        names = [str(n) for n in gt["query_names"]]
        # Query names are unique in VeRi; the row index keeps two equal names apart anyway.
        return {"per-query AP (%)": {f"{i}:{n}": 100.0 * float(v)
                                     for i, (n, v) in enumerate(zip(names, ap.tolist(), strict=True))}}

    def demo_checks(self, run_dir: Path, metrics: Mapping[str, float]) -> list[Check]:
        """Honest on synthetic data: (1) features built from the true ids, written and scored through the same
        files and metric code, must give mAP = rank-1 = 100 %; (2) the number of skipped queries must equal the
        count derived directly from the ground truth (queries whose id has no gallery item on another camera),
        which proves the same-camera exclusion ran; (3) the random-weight mAP must be a finite percentage."""
        gt = data.read_ground_truth(run_dir / GROUND_TRUTH)
        sanity = run_dir / SANITY
        sanity.mkdir(parents=True, exist_ok=True)
        all_pids = np.concatenate([gt["query_pids"], gt["gallery_pids"]])
        onehot = data.true_id_features(all_pids, EMBEDDING_DIM)
        nq = len(gt["query_pids"])
        np.save(sanity / FEATURES["query"], onehot[:nq])
        np.save(sanity / FEATURES["gallery"], onehot[nq:])
        oracle = score_features(gt, _load_features(sanity / FEATURES["query"], nq),
                                _load_features(sanity / FEATURES["gallery"], len(gt["gallery_pids"]))).as_dict()
        perfect = oracle["mAP"] == 100.0 and oracle["rank1"] == 100.0
        valid_pairs = {(p, c) for p, c in zip(gt["gallery_pids"].tolist(), gt["gallery_camids"].tolist(), strict=True)}
        expected_skipped = sum(
            not any(gp == p and gc != c for gp, gc in valid_pairs)
            for p, c in zip(gt["query_pids"].tolist(), gt["query_camids"].tolist(), strict=True)
        )
        m = metrics.get("mAP", float("nan"))
        skipped = int(metrics.get("num_skipped_queries", -1))
        return [
            Check("metric sanity: true-id features scored through the run files", perfect,
                  f"mAP {oracle['mAP']:.2f} %, rank-1 {oracle['rank1']:.2f} % (must be 100)"),
            Check("metric sanity: same-id same-camera exclusion", skipped == expected_skipped,
                  f"{skipped} queries skipped, {expected_skipped} expected from the "
                  "ground truth (no gallery item of their id on another camera)"),
            Check("metric sanity: random-weight mAP is a finite percentage", bool(np.isfinite(m) and 0 <= m <= 100),
                  f"mAP = {m:.2f} % (random weights: no claim about the published number)"),
        ]

    def summary_lines(self, run_dir: Path, metrics: Mapping[str, float]) -> list[str]:
        ranks = [r for r in REPORT_RANKS if f"rank{r}" in metrics]
        lines = ["| mAP (%) | " + " | ".join(f"Rank-{r} (%)" for r in ranks) + " | valid queries | skipped |",
                 "|---" * (len(ranks) + 3) + "|"]
        lines.append(f"| {metrics['mAP']:.2f} | " + " | ".join(f"{metrics[f'rank{r}']:.2f}" for r in ranks)
                     + f" | {int(metrics['num_valid_queries'])} | {int(metrics['num_skipped_queries'])} |")
        return lines

    def figures(self, run_dir: Path, metrics: Mapping[str, float]) -> list[tuple[str, Figure]]:
        """The CMC curve, rank 1..50, recomputed from the run's features (the report keeps only 5 ranks)."""
        from common.plots import cmc_figure

        gt = data.read_ground_truth(run_dir / GROUND_TRUTH)
        result = score_features(gt, _load_features(run_dir / FEATURES["query"], len(gt["query_pids"])),
                                _load_features(run_dir / FEATURES["gallery"], len(gt["gallery_pids"])))
        return [("CMC curve", cmc_figure(result.cmc, result.mAP, title=self.name))]


BUNDLE = PamtriBundle()
