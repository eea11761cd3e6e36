"""SA-Siam: branch training with the shared machinery (recipe.py, common/training), the twofold tracker
(tracker.py) on any backend, OTB one-pass evaluation (common/tracking/otb.py).

Weights (`--weights`): a branch snapshot (`appearance.*` keys: the appearance tracker alone), a combined file, or
a folder holding both branch snapshots (`appearance.*` + `semantic.*`: the 0.3 / 0.7 fused tracker). Each branch
present is loaded strictly. Without the semantic branch the combined tracker (the paper's numbers) is reported as
not reproduced, never compared as if it were.

Run directory files: `ground_truth.json` (prepare), `tracker_config.json` and `results/<seq>.txt` (0-based x, y,
w, h per frame) + `results/<seq>.time.json` (predict), `otb_plot.png` (score).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from common.backends.base import Backend
from common.bundle import Bundle, Check, DemoAssets, Graph, PredictStats
from common.checkpoint import load_checkpoint, load_strict, unwrap_state_dict, with_batch_counters
from common.errors import CheckpointError, InputError
from common.progress import Progress
from common.sharding import balanced_groups, merge_by_copy

if TYPE_CHECKING:  # matplotlib is imported only when report.html is rendered
    from matplotlib.figure import Figure

log = logging.getLogger("zoo.sa_siam")

GROUND_TRUTH = "ground_truth.json"
TRACKER_CONFIG = "tracker_config.json"
RESULTS = "results"
PLOT = "otb_plot.png"
BRANCHES = ("appearance", "semantic")


@dataclass(frozen=True)
class OtbDataset:
    name: str
    sequences: list[Any]


def read_weights(weights: Path) -> dict[str, torch.Tensor]:
    """One checkpoint, or every *.pth of a folder merged (one branch each; overlapping keys are an error)."""
    if weights.is_dir():
        merged: dict[str, torch.Tensor] = {}
        files = sorted(weights.glob("*.pth"))
        if not files:
            raise InputError(weights, "no *.pth branch snapshot in this folder")
        for f in files:
            sd = unwrap_state_dict(load_checkpoint(f))
            overlap = sorted(set(sd) & set(merged))
            if overlap:
                raise CheckpointError(f, f"keys already given by another file of the folder: {overlap[:3]}")
            merged.update(sd)
        return merged
    return unwrap_state_dict(load_checkpoint(weights))


def build_sa_siam(state_dict: Mapping[str, torch.Tensor] | None, *, source: str = "checkpoint") -> nn.Module:
    """The tracker model with the branches the weights hold (both, random, when None); strict per branch."""
    from bundles.sa_siam.model import AppearanceBranch, SASiam, SemanticBranch

    present = BRANCHES if state_dict is None else tuple(b for b in BRANCHES
                                                        if any(k.startswith(f"{b}.") for k in state_dict))
    if "appearance" not in present:
        raise CheckpointError(source, "no appearance.* weights: the tracker needs the appearance branch (alone or "
                                      "with the semantic one)")
    model = SASiam(AppearanceBranch(), SemanticBranch() if "semantic" in present else None)
    if state_dict is not None:
        from common.upstream import bundle_upstream_keys

        load_strict(model, with_batch_counters(state_dict, model), source=source,
                    upstream=bundle_upstream_keys("sa_siam"))
    return model.eval()


class BackendResponseModel:
    """tracker.ResponseModel over the two graphs of any backend."""

    def __init__(self, exemplar: Backend, search: Backend):
        self.exemplar_backend, self.search_backend = exemplar, search

    def exemplar(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        return self.exemplar_backend.run({"exemplar": crops.astype(np.float32)})

    def response(self, crops: np.ndarray, exemplar: Mapping[str, np.ndarray]) -> np.ndarray:
        out = self.search_backend.run({"search": crops.astype(np.float32), **exemplar})
        return out["response"][:, 0]


class SASiamBundle(Bundle):
    name = "sa_siam"
    _fused = False

    # -- training -------------------------------------------------------------------------------------------
    def training_task(self, overrides: Mapping[str, Any]):
        from bundles.sa_siam.recipe import make_task

        return make_task(overrides)

    def demo_training(self, train_dir: Path, demo: DemoAssets, cache_dir: Path) -> tuple[Path, list[str]]:
        from bundles.sa_siam.demo import run_demo_training

        return run_demo_training(train_dir, cache=cache_dir / "demo" / self.name)

    # -- model ----------------------------------------------------------------------------------------------
    def build_model(self, weights: Path | None) -> nn.Module:
        return build_sa_siam(None if weights is None else read_weights(weights), source=str(weights))

    def graphs(self, model: nn.Module) -> dict[str, Graph]:
        from bundles.sa_siam.model import ExemplarGraph, SearchGraph

        g = self.manifest.graphs
        self._fused = getattr(model, "semantic", None) is not None  # recorded with the results by `predict`
        suffix = "" if self._fused else "_appearance"
        return {"exemplar": Graph(ExemplarGraph(model).eval(), g[f"exemplar{suffix}"]),
                "search": Graph(SearchGraph(model).eval(), g[f"search{suffix}"])}

    # -- data -----------------------------------------------------------------------------------------------
    def make_demo(self, root: Path, *, seed: int = 0, size: int | None = None, frames: int = 20) -> DemoAssets:
        from bundles.sa_siam.model import AppearanceBranch, SASiam, init_xavier
        from common.tracking.data import make_synthetic_otb

        sequences = 3 if size is None else max(1, size // frames)
        data_dir = make_synthetic_otb(root / "OTB100", sequences=sequences, frames=frames, seed=seed)
        weights = root / "sa_siam_appearance_random-weights.pth"
        if not weights.is_file():
            torch.manual_seed(seed)
            app = AppearanceBranch()
            init_xavier(app)
            tmp = weights.with_suffix(".tmp")
            torch.save(SASiam(app, None).state_dict(), tmp)
            tmp.replace(weights)
        return DemoAssets(data_dir, weights, f"synthetic OTB (official layout, {sequences} sequences x {frames} "
                          "frames) and a Xavier-initialised appearance branch")

    # -- stages ---------------------------------------------------------------------------------------------
    def prepare(self, data_dir: Path, run_dir: Path, *, limit: int | None = None) -> OtbDataset:
        from common.tracking.data import read_otb

        dataset = str(self.run_config().get("dataset", "OTB100"))
        # pysot's JSON form names the sequence set (CVPR13.json, OTB100.json); the official layout: every sequence
        # in the folder (its name is recorded with the results)
        json_file = data_dir / f"{dataset}.json"
        seqs = read_otb(data_dir, json_name=json_file.name)  # the JSON form when present; boxes 0-based either way
        seqs = seqs[:limit] if limit else seqs
        run_dir.mkdir(parents=True, exist_ok=True)
        gt = {"dataset": dataset, "sequences": {s.name: np.asarray(s.boxes).tolist() for s in seqs}}
        (run_dir / GROUND_TRUTH).write_text(json.dumps(gt))
        return OtbDataset(dataset, seqs)

    def predict(self, dataset: OtbDataset, backends: Mapping[str, Backend], run_dir: Path, *,
                batch_size: int) -> PredictStats:
        from bundles.sa_siam.tracker import SASiamTracker, TrackerConfig

        if batch_size != 1:
            raise ValueError("the tracker runs one frame at a time (batch size 1)")
        config = TrackerConfig()
        branches = "both" if self._fused else "appearance"
        (run_dir / TRACKER_CONFIG).write_text(json.dumps({"tracker": asdict(config), "branches": branches,
                                                         "published_run": self.manifest.run(self.run_name).name},
                                                        indent=1))
        tracker = SASiamTracker(BackendResponseModel(backends["exemplar"], backends["search"]), config)
        out = run_dir / RESULTS
        out.mkdir(parents=True, exist_ok=True)
        stats = PredictStats()
        t_all = time.perf_counter()
        bar = Progress(sum(len(s.frames) for s in dataset.sequences), desc="sa_siam tracking", unit="frame")
        for seq in dataset.sequences:
            res, tim = out / f"{seq.name}.txt", out / f"{seq.name}.time.json"
            if res.is_file() and tim.is_file():
                bar.update(len(seq.frames))
                continue
            frames = [seq.load(i) for i in range(len(seq.frames))]
            t0 = time.perf_counter()
            boxes = tracker.track(frames, np.asarray(seq.boxes[0], np.float64))
            seconds = time.perf_counter() - t0
            np.savetxt(res, boxes, fmt="%.4f", delimiter=",")
            tim.write_text(json.dumps({"seconds": seconds, "frames": len(frames)}))
            log.info("%s: %d frames, %.1f fps", seq.name, len(frames), (len(frames) - 1) / max(seconds, 1e-9))
            stats.items += len(frames)
            bar.update(len(frames))
        bar.close()
        stats.seconds = time.perf_counter() - t_all
        return stats

    def shard(self, dataset: OtbDataset, rank: int, world_size: int, *, batch_size: int) -> OtbDataset:
        """Whole sequences, balanced by frame count (a sequence's result does not depend on the others)."""
        groups = balanced_groups([len(s.frames) for s in dataset.sequences], world_size)
        return OtbDataset(dataset.name, [dataset.sequences[i] for i in groups[rank]])

    def merge_predictions(self, shards: Sequence[tuple[OtbDataset, Path]], run_dir: Path) -> None:
        merge_by_copy([folder for _, folder in shards], run_dir)

    def _load_run(self, run_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, dict]]:
        gt_path = run_dir / GROUND_TRUTH
        try:
            gt = json.loads(gt_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(gt_path, f"cannot read ground truth: {e}") from None
        gts = {k: np.asarray(v, np.float64) for k, v in gt["sequences"].items()}
        results, times = {}, {}
        for name in gts:
            res, tim = run_dir / RESULTS / f"{name}.txt", run_dir / RESULTS / f"{name}.time.json"
            if res.is_file():
                results[name] = np.loadtxt(res, delimiter=",", ndmin=2)
            if tim.is_file():
                times[name] = json.loads(tim.read_text())
        return gts, results, times

    def score(self, run_dir: Path) -> dict[str, float]:
        from common.tracking.otb import evaluate_otb

        gts, results, times = self._load_run(run_dir)
        m = evaluate_otb(results, gts)
        frames = sum(t["frames"] - 1 for t in times.values())
        secs = sum(t["seconds"] for t in times.values())
        return {"otb_auc": m["success"], "otb_precision20": m["precision"], "videos": m["videos"],
                "fps": frames / secs if secs > 0 else float("nan")}

    item_label = "sequence"

    def item_scores(self, run_dir: Path) -> dict[str, dict[str, float]]:
        from common.tracking.otb import evaluate_otb_per_sequence

        gts, results, _ = self._load_run(run_dir)
        per = evaluate_otb_per_sequence(results, gts)
        return {"per-sequence OTB AUC": {k: v["success"] for k, v in per.items()},
                "per-sequence precision@20": {k: v["precision"] for k, v in per.items()}}

    def export_predictions(self, run_dir: Path) -> None:
        from common.tracking.otb import plot_otb

        gts, results, _ = self._load_run(run_dir)
        plot_otb(results, gts, run_dir / PLOT, title=f"{self.name}: OTB one-pass evaluation")

    def extra_checks(self, run_dir: Path, metrics: Mapping[str, float]) -> list[Check]:
        """The paper's numbers are for the fused tracker: without the semantic branch they are not reproduced."""
        run = self.manifest.run(self.run_name)
        if run.config.get("branch") != "both":
            return []
        cfg = json.loads((run_dir / TRACKER_CONFIG).read_text()) if (run_dir / TRACKER_CONFIG).is_file() else {}
        fused = cfg.get("branches") == "both"
        return [Check("both branches (appearance + semantic) evaluated", fused,
                      "fused 0.3 / 0.7 tracker" if fused else "semantic branch absent (needs caffenet.npy and a "
                      "semantic-branch snapshot): the paper's combined-tracker number is NOT reproduced")]

    def demo_checks(self, run_dir: Path, metrics: Mapping[str, float]) -> list[Check]:
        from bundles.sa_siam.demo import training_checks
        from common.tracking.otb import evaluate_otb

        gts, _, _ = self._load_run(run_dir)
        oracle = evaluate_otb(gts, gts)
        finite = all(np.isfinite(metrics.get(k, np.nan)) for k in ("otb_auc", "otb_precision20"))
        return [Check(n, ok, d) for n, ok, d in training_checks(run_dir / "train")] + [
            # IoU 1 exceeds every success threshold but the last (1.0, strict >): AUC 20/21
            Check("metric sanity: ground truth as the result gives AUC 20/21 and precision 1",
                  abs(oracle["success"] - 20 / 21) < 1e-12 and oracle["precision"] == 1.0,
                  f"AUC {oracle['success']:.4f} (expected {20 / 21:.4f}), precision {oracle['precision']:.3f}"),
            Check("metric sanity: OTB AUC / precision finite", finite,
                  f"AUC {metrics.get('otb_auc', float('nan')):.3f}, precision@20 "
                  f"{metrics.get('otb_precision20', float('nan')):.3f} (demo weights: no claim about the paper)"),
        ]

    def summary_lines(self, run_dir: Path, metrics: Mapping[str, float]) -> list[str]:
        lines = [f"OTB one-pass: AUC {metrics.get('otb_auc', float('nan')):.3f}, precision@20 "
                 f"{metrics.get('otb_precision20', float('nan')):.3f} over {int(metrics.get('videos', 0))} "
                 f"sequences; tracker {metrics.get('fps', float('nan')):.1f} fps"]
        if (run_dir / PLOT).is_file():
            lines += ["", f"![OTB success and precision plots]({PLOT})"]
        train = run_dir / "train" / "appearance" / "train_plot.png"
        if train.is_file():
            lines += ["", "![training loss and LR](train/appearance/train_plot.png)"]
        return lines

    def figures(self, run_dir: Path, metrics: Mapping[str, float]) -> list[tuple[str, Figure]]:
        """OTB success and precision plots, then the demo training's loss / LR / throughput (run_dir/train)."""
        from common.plots import otb_figure, training_figures

        gts, results, _ = self._load_run(run_dir)
        otb = otb_figure(results, gts, title=f"{self.name}: OTB one-pass evaluation")
        return [("OTB success and precision plots", otb)] + training_figures(run_dir / "train",
                                                                              title=f"{self.name} training")


BUNDLE = SASiamBundle()
