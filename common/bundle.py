"""The bundle interface: what each `bundles/<model>/bundle.py` provides to the shared pipeline.

The pipeline (common/pipeline.py) drives every bundle through the same stages:
fetch -> prepare -> convert -> infer -> post-process -> metric -> verify -> report.
A bundle supplies the model-specific pieces; everything it writes goes into the run directory, and `score` must be
able to recompute the metrics from the run directory alone (so `zoo verify RUN_DIR` works on a copied run).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from common.backends.base import Backend
from common.manifest import Manifest, ModelIO, bundle_manifest

if TYPE_CHECKING:  # matplotlib is imported only when a report is rendered
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Graph:
    """A module to export/run as one graph, with its named inputs and outputs (outputs in forward order)."""

    module: nn.Module
    io: ModelIO


@dataclass(frozen=True)
class DemoAssets:
    """What `make_demo` produced: a synthetic dataset in the real layout and a random-weight checkpoint."""

    data_dir: Path
    weights: Path
    description: str


@dataclass(frozen=True)
class Check:
    """One verification line: PASS or NOT PASSED, with the rule written out."""

    name: str
    passed: bool
    detail: str
    measured: float | None = None
    expected: float | None = None

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'NOT PASSED'}  {self.name}: {self.detail}"


@dataclass
class PredictStats:
    """Counts and timings of the infer + post-process stage."""

    items: int = 0
    seconds: float = 0.0  # wall time of the stage where the bundle measures it itself (trackers)
    extra: dict[str, Any] = field(default_factory=dict)


class Bundle(ABC):
    """Model-specific half of the pipeline. Subclasses live in `bundles/<name>/bundle.py` as `BUNDLE`."""

    name: str

    def __init__(self) -> None:
        self.manifest: Manifest = bundle_manifest(self.name)
        self.run_name: str | None = None  # the published run being reproduced (None: the manifest default)

    def select_run(self, name: str | None) -> None:
        """Reproduce published run `name`: its `config` table (e.g. tracker values) drives the stages. Unknown
        names fail here, naming the known ones."""
        self.manifest.run(name)
        self.run_name = name

    def run_config(self) -> dict[str, Any]:
        """The selected published run's `config` table."""
        return dict(self.manifest.run(self.run_name).config)

    # -- model ---------------------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self, weights: Path | None) -> nn.Module:
        """The torch model in eval mode; strict load of `weights` (weights_only) when given."""

    def graphs(self, model: nn.Module) -> dict[str, Graph]:
        """The graphs a backend runs, by name. Default: the whole model as the manifest's [model] graph; a bundle
        with split graphs (e.g. a tracker's template and search branches) returns several, named as in the
        manifest's [graphs.<name>] tables."""
        assert self.manifest.model is not None, f"{self.name}: manifest has no [model] table"
        return {"model": Graph(model, self.manifest.model)}

    # -- data ----------------------------------------------------------------------------------------------
    @abstractmethod
    def make_demo(self, root: Path, *, seed: int = 0, size: int | None = None) -> DemoAssets:
        """Write a deterministic synthetic dataset (real on-disk layout) and a random-weight checkpoint with the
        real key names and shapes under `root`; idempotent. `size` scales the dataset (images, or the bundle's
        natural unit) for benchmarks; None is the small demo default."""

    def locate(self, data_dir: Path | None, weights: Path | None, cache_dir: Path) -> tuple[Path, Path] | None:
        """Real dataset and weights: the user's paths win, else what `zoo fetch` put in the cache; None if absent."""
        from common.fetch import artifact_location

        for art in self.manifest.artifacts.values():
            found = artifact_location(self.name, art, cache_dir)
            if art.kind == "weights" and weights is None and found.exists():
                weights = found
            elif art.kind == "dataset" and data_dir is None and found.exists():
                data_dir = found
        return (data_dir, weights) if data_dir is not None and weights is not None else None

    # -- stages --------------------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, data_dir: Path, run_dir: Path, *, limit: int | None = None) -> Any:
        """Validate the dataset (clear errors naming the file) and write the ground truth `score` needs into
        `run_dir`; returns a dataset handle for `predict`."""

    @abstractmethod
    def predict(self, dataset: Any, backends: Mapping[str, Backend], run_dir: Path, *, batch_size: int) -> PredictStats:
        """Run inference + post-processing over the dataset with `backends` (one per graph name); write raw
        predictions into `run_dir`."""

    def shard(self, dataset: Any, rank: int, world_size: int, *, batch_size: int) -> Any:
        """Sharded evaluation (`zoo eval --devices N`): the part of `dataset` that rank `rank` predicts. The parts
        are disjoint, cover the dataset, and cut at batch boundaries (common.sharding.shard_ranges)."""
        from common.errors import ZooError

        raise ZooError(f"{self.name}: sharded evaluation is not implemented for this bundle")

    def merge_predictions(self, shards: Sequence[tuple[Any, Path]], run_dir: Path) -> None:
        """Rank 0 of a sharded evaluation: write into `run_dir` exactly what one process predicting the whole
        dataset writes, from each rank's (part, prediction folder) in rank order."""
        from common.errors import ZooError

        raise ZooError(f"{self.name}: sharded evaluation is not implemented for this bundle")

    @abstractmethod
    def score(self, run_dir: Path) -> dict[str, float]:
        """Recompute every metric from the run directory alone (predictions + ground truth files)."""

    def export_predictions(self, run_dir: Path) -> None:  # noqa: B027 - optional hook, no-op by default
        """Write reviewer-facing copies of the predictions in upstream's own format (optional; after `score`)."""

    def extra_checks(self, run_dir: Path, metrics: Mapping[str, float]) -> list[Check]:
        """Checks of a real run beyond the published-metric comparison (e.g. that what was evaluated is what the
        published number is for)."""
        return []

    def demo_checks(self, run_dir: Path, metrics: Mapping[str, float]) -> list[Check]:
        """Metric sanity checks that are honest on synthetic data (e.g. ground truth scored as predictions)."""
        return []

    item_label: str = "item"  # what `item_scores` keys name: class, query, sequence

    def item_scores(self, run_dir: Path) -> dict[str, dict[str, float]]:
        """Per-item values recomputed from the run directory's files, by quantity title (e.g. per-class AP), for
        `zoo compare` to show where two runs differ. Default: none."""
        return {}

    def metric_benchmark(self) -> dict[str, float]:
        """Speed of this bundle's metric at the published dataset's scale (synthetic data), for `zoo bench`."""
        return {}

    def summary_lines(self, run_dir: Path, metrics: Mapping[str, float]) -> list[str]:
        """Extra Markdown lines for the report (per-class / per-sequence tables)."""
        return []

    def figures(self, run_dir: Path, metrics: Mapping[str, float]) -> list[tuple[str, Figure]]:
        """Plots for report.html as (title, matplotlib Figure), recomputed from the run directory (after `score`).
        Optional; the renderer turns an exception here into a visible note, never a failed run."""
        return []

    # -- training bundles (siamrpnpp, sa_siam) ---------------------------------------------------------------
    def training_task(self, overrides: Mapping[str, Any]) -> Any:
        """The bundle's `common.training.loop.TrainingTask` with recipe overrides (`zoo train --set k=v`)."""
        from common.errors import ZooError

        raise ZooError(f"{self.name} is an inference bundle: it has no training recipe")

    def demo_training(self, train_dir: Path, demo: DemoAssets, cache_dir: Path) -> tuple[Path, list[str]] | None:
        """Training bundles: run the demo training into `train_dir` before the demo evaluation; returns the snapshot
        to evaluate and notes for the report. None (inference bundles): evaluate `demo.weights`."""
        return None


def load_bundle(name: str) -> Bundle:
    """Import `bundles.<name>.bundle` and return its `BUNDLE` instance."""
    bundle_manifest(name)  # a clear error for an unknown name before importing anything
    module = importlib.import_module(f"bundles.{name}.bundle")
    return module.BUNDLE
