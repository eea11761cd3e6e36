"""SiamRPN++ r50 / VOT2016 supervised: the bundle's half of the pipeline (see common/bundle.py for the stages).

Run directory files written here:
- `ground_truth.json` (prepare): per sequence the (N,8) polygons and the frame size;
- `tracker_config.json` (predict): the tracker values used, with the published run they come from;
- `results/<dataset>/<tracker>/baseline/<seq>/<seq>_001.txt` (predict, pysot's result format) and
  `<seq>_time.json` next to it (tracker seconds, frames). A sequence whose two files exist is finished: an
  interrupted evaluation resumes from the next one;
from which `score` recomputes A / R / EAO and the speed.

The published run selects the tracker values (manifest `[[published]].config`, spec 8.3): `select_run(name)`
(or setting `run_name`) before `predict`; the default is the manifest's default run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from bundles.siamrpn.model import (
    SearchBranch,
    SiamRPN,
    TemplateBranch,
    random_state_dict,
    siamrpn_r50_l234,
)
from bundles.siamrpn.tracker import SiamRPNTracker, TrackerConfig
from common.backends.base import Backend
from common.bundle import Bundle, Check, DemoAssets, Graph, PredictStats
from common.checkpoint import load_checkpoint
from common.errors import InputError
from common.progress import Progress
from common.sharding import balanced_groups, merge_by_copy
from common.tracking.data import VotSequence, make_synthetic_vot, read_vot
from common.tracking.vot import (
    FAILURE,
    INIT,
    SKIP_AFTER_FAILURE,
    SKIPPED,
    SequenceGT,
    Trajectory,
    evaluate,
    read_trajectory,
    run_supervised,
    write_trajectory,
)

if TYPE_CHECKING:  # matplotlib is imported only when report.html is rendered
    from matplotlib.figure import Figure

log = logging.getLogger("zoo.siamrpn")

GROUND_TRUTH = "ground_truth.json"
TRACKER_CONFIG = "tracker_config.json"
RESULTS = "results"
TRACKER_NAME = "siamrpn_r50_l234_dwxcorr"
CARD_CHIPS = 4  # the seed's "per card" figure: an Atlas 300I card holds 4 Ascend 310 chips


@dataclass(frozen=True)
class VotDataset:
    name: str  # VOT2016, ...: picks the EAO interval and the results folder
    sequences: list[VotSequence]


def result_file(run_dir: Path, dataset: str, seq: str) -> Path:
    return run_dir / RESULTS / dataset / TRACKER_NAME / "baseline" / seq / f"{seq}_001.txt"


def time_file(run_dir: Path, dataset: str, seq: str) -> Path:
    return result_file(run_dir, dataset, seq).with_name(f"{seq}_time.json")


class SiamRPNBundle(Bundle):
    name = "siamrpn"

    # -- configuration --------------------------------------------------------------------------------------
    def tracker_config(self) -> TrackerConfig:
        run = self.manifest.run(self.run_name)
        return TrackerConfig.from_mapping(run.config, source=f"{self.manifest.path} [[published]] {run.name}")

    # -- model ----------------------------------------------------------------------------------------------
    def build_model(self, weights: Path | None) -> nn.Module:
        return siamrpn_r50_l234(None if weights is None else load_checkpoint(weights), source=str(weights))

    def graphs(self, model: nn.Module) -> dict[str, Graph]:
        """The seed's single graph and the split pair, one set of weights (spec section 16)."""
        assert isinstance(model, SiamRPN) and self.manifest.model is not None
        g = self.manifest.graphs
        return {"model": Graph(model, self.manifest.model),
                "template": Graph(TemplateBranch(model).eval(), g["template"]),
                "search": Graph(SearchBranch(model).eval(), g["search"])}

    # -- data -----------------------------------------------------------------------------------------------
    def make_demo(self, root: Path, *, seed: int = 0, size: int | None = None, frames: int = 25) -> DemoAssets:
        sequences = 3 if size is None else max(1, size // frames)  # `size` counts frames
        data_dir = make_synthetic_vot(root / "VOT2016", sequences=sequences, frames=frames, seed=seed)
        weights = root / "siamrpn_r50_l234_dwxcorr_random-weights.pth"
        if not weights.is_file():
            import torch

            tmp = weights.with_suffix(".tmp")
            torch.save(random_state_dict(seed), tmp)
            tmp.replace(weights)
        return DemoAssets(data_dir, weights, f"synthetic VOT (official layout, {sequences} sequences x {frames} "
                          "frames: a textured object moving, scaling, rotating, then jumping) and random weights "
                          "with the 458 upstream keys (BN statistics calibrated)")

    # -- stages ---------------------------------------------------------------------------------------------
    def prepare(self, data_dir: Path, run_dir: Path, *, limit: int | None = None) -> VotDataset:
        dataset = str(self.run_config().get("dataset", "VOT2016"))
        # The dataset root itself, or a folder holding it (e.g. where `zoo fetch` unpacked VOT2016.zip).
        candidates = [data_dir / dataset, data_dir / dataset.lower(), data_dir]
        root = next((c for c in candidates if c.is_dir()), data_dir)
        seqs = read_vot(root, json_name=f"{dataset}.json", limit=limit)
        run_dir.mkdir(parents=True, exist_ok=True)
        gt = {"dataset": dataset, "sequences": {s.name: {"size": list(s.size), "polygons": s.polygons.tolist()}
                                                for s in seqs}}
        (run_dir / GROUND_TRUTH).write_text(json.dumps(gt))
        return VotDataset(dataset, seqs)

    def predict(self, dataset: VotDataset, backends: Mapping[str, Backend], run_dir: Path, *,
                batch_size: int) -> PredictStats:
        if batch_size != 1:
            raise ValueError("the tracker runs one frame at a time (batch size 1)")
        config = self.tracker_config()
        split = "template" in backends and "search" in backends and self.run_config().get("graphs", "split") == "split"
        record = {"published_run": self.manifest.run(self.run_name).name, "graphs": "split" if split else "single",
                  "tracker": asdict(config)}
        cfg_path = run_dir / TRACKER_CONFIG
        if cfg_path.is_file():
            previous = json.loads(cfg_path.read_text())
            if previous["tracker"] != json.loads(json.dumps(record["tracker"])):
                raise InputError(cfg_path, f"run directory holds results of other tracker values "
                                           f"({previous['published_run']}); use a new output directory")
        cfg_path.write_text(json.dumps(record, indent=1))
        tracker = SiamRPNTracker(backends, config, split=split)
        stats = PredictStats()
        resumed = 0
        t_all = time.perf_counter()
        tracking_s = 0.0
        bar = Progress(sum(len(s.frames) for s in dataset.sequences), desc=f"{self.name} tracking", unit="frame")
        for seq in dataset.sequences:
            res, tim = result_file(run_dir, dataset.name, seq.name), time_file(run_dir, dataset.name, seq.name)
            if res.is_file() and tim.is_file():
                resumed += 1
                bar.update(len(seq.frames))
                continue
            loaders = [(lambda i=i, s=seq: s.load(i)) for i in range(len(seq.frames))]
            pre0, frame0 = tracker.preprocess_s, tracker.frame_s
            traj = run_supervised(tracker, loaders, seq.gt())
            write_trajectory(res, traj)
            timing = {"seconds": traj.seconds, "frames": len(traj.flags), "failures": traj.failures,
                      "preprocess_seconds": tracker.preprocess_s - pre0,
                      "tracker_seconds": tracker.frame_s - frame0}
            tmp = tim.with_suffix(".tmp")
            tmp.write_text(json.dumps(timing))
            tmp.replace(tim)  # written after the trajectory: both present means the sequence is complete
            fps = (len(traj.flags) - 1) / traj.seconds if traj.seconds > 0 else float("nan")
            log.info("%s: %d frames, %d failures, %.1f fps", seq.name, len(traj.flags), traj.failures, fps)
            stats.items += len(traj.flags)
            tracking_s += traj.seconds
            bar.update(len(seq.frames), failures=traj.failures)
        bar.close()
        stats.seconds = time.perf_counter() - t_all
        stats.extra["tracking_seconds"] = tracking_s
        stats.extra.update({"resumed_sequences": resumed, "graphs": record["graphs"],
                            "published_run": record["published_run"], **{f"tracker.{k}": v for k, v in
                                                                         asdict(config).items()}})
        return stats

    def shard(self, dataset: VotDataset, rank: int, world_size: int, *, batch_size: int) -> VotDataset:
        """Whole sequences, balanced by frame count (a sequence's result does not depend on the others)."""
        groups = balanced_groups([len(s.frames) for s in dataset.sequences], world_size)
        return VotDataset(dataset.name, [dataset.sequences[i] for i in groups[rank]])

    def merge_predictions(self, shards: Sequence[tuple[VotDataset, Path]], run_dir: Path) -> None:
        merge_by_copy([folder for _, folder in shards], run_dir)

    def _load_run(self, run_dir: Path) -> tuple[str, dict[str, Trajectory], dict[str, SequenceGT], dict[str, dict]]:
        gt_path = run_dir / GROUND_TRUTH
        try:
            gt = json.loads(gt_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(gt_path, f"cannot read ground truth: {e}") from None
        dataset = gt["dataset"]
        gts = {name: SequenceGT(name, np.array(v["polygons"], float), tuple(v["size"]))
               for name, v in gt["sequences"].items()}
        trajs, times = {}, {}
        for name in gts:
            res, tim = result_file(run_dir, dataset, name), time_file(run_dir, dataset, name)
            if res.is_file() and tim.is_file():
                trajs[name] = read_trajectory(res)
                times[name] = json.loads(tim.read_text())
        return dataset, trajs, gts, times

    def score(self, run_dir: Path) -> dict[str, float]:
        """A / R / lost / EAO from the result files (all sequences required: a partial run raises, naming the
        missing ones), and the tracking speed."""
        dataset, trajs, gts, times = self._load_run(run_dir)
        # Short (synthetic) sequences: EAO over the whole curve, recorded as eao_low/eao_high; VOT2016 itself
        # is far longer than the interval's low end, so this never applies there.
        scores = evaluate(trajs, gts, dataset=dataset, short_fallback=True)
        metrics = scores.as_dict()
        secs = sum(t["seconds"] for t in times.values())
        frames = sum(t["frames"] - 1 for t in times.values())  # pysot's speed: (N - 1) / toc per video
        per_video = [(t["frames"] - 1) / t["seconds"] for t in times.values() if t["seconds"] > 0]
        pre = sum(t.get("preprocess_seconds", 0.0) for t in times.values())
        trk = sum(t.get("tracker_seconds", 0.0) for t in times.values())
        fps = frames / secs if secs > 0 else float("nan")
        metrics.update({
            "fps_per_chip": fps,  # frame-weighted: all frames / all tracker time
            "fps_per_card_x4": fps * CARD_CHIPS,  # the seed README's convention (x4 chips per card)
            "fps_per_video_mean": float(np.mean(per_video)) if per_video else float("nan"),
            "preprocess_share": pre / trk if trk > 0 else float("nan"),
        })
        return metrics

    item_label = "sequence"

    def item_scores(self, run_dir: Path) -> dict[str, dict[str, float]]:
        dataset, trajs, gts, _ = self._load_run(run_dir)
        scores = evaluate(trajs, gts, dataset=dataset, short_fallback=True)
        return {"per-sequence accuracy": {s.name: s.accuracy for s in scores.per_sequence},
                "per-sequence failures": {s.name: float(s.failures) for s in scores.per_sequence}}

    def demo_checks(self, run_dir: Path, metrics: Mapping[str, float]) -> list[Check]:
        """Honest on synthetic data: the protocol's bookkeeping in every result file, the metric on an oracle
        trajectory (the ground truth's own init boxes: no failure, positive accuracy), and finite scores."""
        dataset, trajs, gts, _ = self._load_run(run_dir)
        bad = []
        for name, t in trajs.items():
            for f in np.flatnonzero(t.flags == FAILURE):
                after = t.flags[f + 1:f + SKIP_AFTER_FAILURE]
                nxt = t.flags[f + SKIP_AFTER_FAILURE] if f + SKIP_AFTER_FAILURE < len(t.flags) else INIT
                if not (after == SKIPPED).all() or nxt != INIT:
                    bad.append(f"{name}@{f}")
        from common.tracking.vot import TRACKED, init_box

        oracle = {}
        for name, g in gts.items():
            flags = np.full(len(g.polygons), TRACKED, np.int8)
            flags[0] = INIT
            boxes = np.array([init_box(p) for p in g.polygons])
            boxes[0] = np.nan
            oracle[name] = Trajectory(flags, boxes)
        o = evaluate(oracle, gts, dataset=dataset, short_fallback=True)
        finite = all(np.isfinite(metrics.get(k, np.nan)) for k in ("accuracy", "robustness", "eao"))
        return [
            Check("protocol bookkeeping: 4 skipped frames then re-init after every failure", not bad,
                  f"{int(sum(t.failures for t in trajs.values()))} failures checked" if not bad
                  else f"violations at {bad[:5]}"),
            Check("metric sanity: ground-truth boxes as the trajectory", o.robustness == 0 and o.accuracy > 0.5,
                  f"A = {o.accuracy:.3f}, R = {o.robustness:.3f}, EAO = {o.eao:.3f} (expected R = 0, A > 0.5)"),
            Check("metric sanity: A / R / EAO finite", finite,
                  f"A = {metrics.get('accuracy', float('nan')):.3f}, R = {metrics.get('robustness', float('nan')):.3f},"
                  f" EAO = {metrics.get('eao', float('nan')):.3f} (random weights: no claim about published numbers)"),
        ]

    def metric_benchmark(self) -> dict[str, float]:
        """A / R / EAO (overlaps included) over a VOT2016-sized synthetic result set: 60 sequences, 21,455 frames."""
        from common.tracking.vot import benchmark

        return benchmark()

    def summary_lines(self, run_dir: Path, metrics: Mapping[str, float]) -> list[str]:
        dataset, trajs, gts, times = self._load_run(run_dir)
        scores = evaluate(trajs, gts, dataset=dataset, short_fallback=True)
        nan = float("nan")
        cfg_path = run_dir / TRACKER_CONFIG
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        t = cfg.get("tracker", {})
        lines = [f"Tracker values ({cfg.get('published_run', '?')}, {cfg.get('graphs', '?')} graphs): penalty_k "
                 f"{t.get('penalty_k')}, window_influence {t.get('window_influence')}, lr {t.get('lr')}", "",
                 "| sequence | frames | failures | accuracy | fps |", "|---|---|---|---|---|"]
        for s in scores.per_sequence:
            tm = times.get(s.name, {})
            fps = (tm["frames"] - 1) / tm["seconds"] if tm.get("seconds") else float("nan")
            lines.append(f"| {s.name} | {s.frames} | {s.failures} | {s.accuracy:.3f} | {fps:.1f} |")
        lines += ["", f"EAO averaged over sequence lengths [{scores.interval[0]}, {scores.interval[1]}].",
                  "", f"| Accuracy | Robustness | Lost Number | EAO | fps per chip | fps per card (x{CARD_CHIPS}) |",
                  "|---|---|---|---|---|---|",
                  f"| {scores.accuracy:.3f} | {scores.robustness:.3f} | {scores.lost:.1f} | {scores.eao:.3f} | "
                  f"{metrics.get('fps_per_chip', nan):.1f} | {metrics.get('fps_per_card_x4', nan):.1f} |"]
        return lines

    def figures(self, run_dir: Path, metrics: Mapping[str, float]) -> list[tuple[str, Figure]]:
        """The EAO curve (interval marked) and per-sequence accuracy / failures, recomputed as `score` does."""
        from common.plots import eao_figure, vot_sequences_figure

        dataset, trajs, gts, _ = self._load_run(run_dir)
        scores = evaluate(trajs, gts, dataset=dataset, short_fallback=True)
        title = f"{self.name} ({dataset})"
        return [("EAO curve", eao_figure(scores.curve, scores.interval, scores.eao, title=title)),
                ("per-sequence accuracy and failures", vot_sequences_figure(scores.per_sequence, title=title))]


BUNDLE = SiamRPNBundle()
