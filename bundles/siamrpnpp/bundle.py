"""SiamRPN++ training bundle: the pysot 8-GPU recipe trained with the shared machinery (common/training), its
snapshots evaluated on VOT2016 through bundles/siamrpn's tracker and common/tracking's metric (reused, not copied).

- `zoo train siamrpnpp --devices 8 --data training_dataset` trains (recipe.py; torchrun);
- `zoo eval siamrpnpp --weights runs/.../snapshot/checkpoint_e19.pth --data VOT2016` evaluates one snapshot with
  the port's tracker values (0.04 / 0.44 / 0.33, recorded in the report) against the 8p e19 row;
  `--weights runs/.../snapshot --epochs 11-20` evaluates several and writes a table;
- `zoo demo siamrpnpp` curates synthetic data, trains 2 processes, resumes, checks, evaluates the snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bundles.siamrpn.bundle import SiamRPNBundle
from common.bundle import Check, DemoAssets

if TYPE_CHECKING:  # matplotlib is imported only when report.html is rendered
    from matplotlib.figure import Figure


class SiamRPNPPBundle(SiamRPNBundle):
    name = "siamrpnpp"

    def training_task(self, overrides: Mapping[str, Any]):
        from bundles.siamrpnpp.recipe import make_task

        return make_task(overrides)

    def demo_training(self, train_dir: Path, demo: DemoAssets, cache_dir: Path) -> tuple[Path, list[str]]:
        from bundles.siamrpnpp.demo import run_demo_training

        return run_demo_training(train_dir, init=demo.weights, cache=cache_dir / "demo" / self.name)

    def demo_checks(self, run_dir: Path, metrics: Mapping[str, float]) -> list[Check]:
        from bundles.siamrpnpp.demo import training_checks

        return [Check(n, ok, d) for n, ok, d in training_checks(run_dir / "train")] + super().demo_checks(
            run_dir, metrics)

    def summary_lines(self, run_dir: Path, metrics: Mapping[str, float]) -> list[str]:
        lines = super().summary_lines(run_dir, metrics)
        plot = run_dir / "train" / "uninterrupted" / "train_plot.png"
        if plot.is_file():  # the demo's training run, beside the evaluation of its snapshot
            lines += ["", f"![training loss, LR and throughput]({plot.relative_to(run_dir)})"]
        return lines

    def figures(self, run_dir: Path, metrics: Mapping[str, float]) -> list[tuple[str, Figure]]:
        """The VOT plots, then the demo training's loss / LR / throughput (the runs under run_dir/train, when this
        evaluation is a demo's)."""
        from common.plots import training_figures

        return super().figures(run_dir, metrics) + training_figures(run_dir / "train", title=f"{self.name} training")


BUNDLE = SiamRPNPPBundle()
