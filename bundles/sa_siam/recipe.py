"""The SA-Siam branch-training recipe (shared/specs/sa_siam.md sections 3, 4, 7, 8, 12) as a `TrainingTask` for
the shared loop (common/training/loop.py). Each branch trains on its own, as upstream: `branch = "appearance"`
(the seed's only run) or `"semantic"` (frozen CaffeNet trunk from a user-supplied caffenet.npy).

Semantics kept on purpose (spec section 14):
- plain SGD (no momentum), LR 0.01 x 0.1 from epoch 25 (step 166,250 = 25 x 6,650), batch 8, 30 epochs x 6,650
  steps, no gradient clipping;
- the optimised and LOGGED total loss is the balanced logistic loss + the L2 terms (5e-4 * sum(w^2) / 2 over conv
  weights, TF's get_total_loss), so the seed's "accuracy" (the mean of the last 10 logged totals) is comparable;
  the L2 term is in the loss rather than SGD weight_decay for that reason (same gradient);
- 239 x 239 exemplar and instance -> 15 x 15 score map; BN momentum 0.05, eps 1.001e-5 (model.py);
- logging every 10 steps with the totals printed to 2 decimals, as the seed's log lines the metric is read from.
Multi-process: the seed ran one process with batch 8; here `batch_size` is the global batch, split over the
processes, and gradients are AVERAGED (grad_reduction "mean"), so N processes update like the one-process run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import InputError
from common.training.loop import TrainingTask
from common.training.recipe import with_overrides


@dataclass(frozen=True)
class Recipe:
    """The seed's configuration (spec section 8); `zoo train sa_siam --set key=value` overrides one value."""

    data: str = "ILSVRC2015-VID-Curation"  # the curated root (Data/VID/train/a..e + train_imdb.json)
    branch: str = "appearance"  # appearance | semantic
    caffenet: str = ""  # caffenet.npy, required by the semantic branch
    epochs: int = 30
    examples_per_epoch: int = 53_200  # 6,650 steps of 8
    batch_size: int = 8  # global: split over the processes
    lr: float = 0.01
    lr_decay_epoch: int = 25  # x0.1 from this epoch (TF exponential staircase: 0.1 ^ floor(step / (25 x 6650)))
    lr_decay: float = 0.1
    weight_decay: float = 5e-4  # L2 on conv weights, in the total loss
    max_frame_dist: int = 100
    seed: int = 0  # upstream seeds python / numpy / TF with 0; here the data seed and the init seed
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.branch not in ("appearance", "semantic"):
            raise ValueError(f"branch must be 'appearance' or 'semantic', got {self.branch!r}")

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, Any]) -> Recipe:
        """The recipe with `key=value` overrides, each parsed as its field's type; unknown keys are an error."""
        return with_overrides(cls, overrides)

    @property
    def steps_per_epoch(self) -> int:
        return self.examples_per_epoch // self.batch_size


def lr_at_epoch(recipe: Recipe, epoch: int) -> float:
    return recipe.lr * (recipe.lr_decay if epoch >= recipe.lr_decay_epoch else 1.0)


def seed_loss_metric(records: list[Mapping[str, Any]], *, lines: int = 10, every: int = 10) -> float:
    """The seed's 'accuracy' (spec section 12): the mean of the total-loss values of the last `lines` log lines,
    as printed (2 decimals). The seed logs 0-based steps 0, 10, 20, ...: here iterations 1, 11, 21, ... (other
    logged records, e.g. the last iteration, are not seed log lines)."""
    seed_lines = [r for r in records if (int(r["step"]) - 1) % every == 0]
    tail = [round(float(r["total_loss"]), 2) for r in seed_lines[-lines:]]
    if len(tail) < lines:
        raise ValueError(f"need {lines} logged steps, got {len(tail)}")
    return sum(tail) / len(tail)


class BranchModel(nn.Module):
    """One branch under its own name (`appearance.*` or `semantic.*`), so a branch snapshot loads into the
    combined tracker model (model.SASiam) beside the other branch's."""

    def __init__(self, branch: str, module: nn.Module):
        super().__init__()
        self.branch = branch
        self.add_module(branch, module)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.branch)(z, x)


class SASiamTask(TrainingTask):
    name = "sa_siam"
    grad_reduction = "mean"
    grad_clip = None

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if recipe.batch_size % world:
            raise InputError(None, f"batch_size {recipe.batch_size} (global) does not split over {world} processes")
        self.epochs = recipe.epochs
        self.batch_size = recipe.batch_size // world
        self.log_every = recipe.log_every
        self.log_phase = 1  # the seed prints 0-based steps 0, 10, ...: after 1, 11, ... iterations
        self.caffenet_sha256: str | None = None

    def build_model(self) -> nn.Module:
        from bundles.sa_siam.model import AppearanceBranch, SemanticBranch, init_xavier

        torch.manual_seed(self.recipe.seed)
        if self.recipe.branch == "appearance":
            branch = AppearanceBranch()
            init_xavier(branch)
            return BranchModel("appearance", branch)
        if not self.recipe.caffenet:
            raise InputError(None, "the semantic branch needs the CaffeNet weights: --set caffenet=/path/caffenet.npy"
                                   " (not shipped upstream; spec section 4.2)")
        from bundles.sa_siam.caffenet import load_caffenet_npy
        from common.fetch import file_digest

        path = Path(self.recipe.caffenet)
        branch = SemanticBranch()
        init_xavier(branch)
        branch.trunk.load_state_dict(load_caffenet_npy(path))
        self.caffenet_sha256 = file_digest(path)
        return BranchModel("semantic", branch)

    def dataset(self) -> torch.utils.data.Dataset:
        from bundles.sa_siam.data import VidPairs

        return VidPairs(Path(self.recipe.data), examples=self.recipe.examples_per_epoch * self.recipe.epochs,
                        seed=self.recipe.seed, max_frame_dist=self.recipe.max_frame_dist)

    def configure(self, model: nn.Module, epoch: int, optimizer: torch.optim.Optimizer | None
                  ) -> torch.optim.Optimizer:
        model.train()  # BN in batch-statistics mode (the CaffeNet trunk has no BN; its weights stay frozen)
        if optimizer is None:
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.SGD(params, lr=self.recipe.lr, momentum=0.0)  # plain GradientDescentOptimizer
        for g in optimizer.param_groups:
            g["lr"] = lr_at_epoch(self.recipe, epoch)
        return optimizer

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from bundles.sa_siam.loss import balanced_logistic_loss, l2_regularisation

        response = model(batch["exemplar"], batch["instance"])
        batch_loss = balanced_logistic_loss(response)
        l2 = l2_regularisation(getattr(model, model.branch), self.recipe.weight_decay)
        return {"total_loss": batch_loss + l2, "batch_loss": batch_loss}

    def worker_init(self, worker_id: int) -> None:
        import cv2

        cv2.setNumThreads(1)

    def describe(self) -> dict[str, Any]:
        r = dataclasses.asdict(self.recipe)
        r["per_process_batch"] = self.batch_size
        r["gradient_reduction"] = "mean over ranks (the seed ran one process with the global batch)"
        r["caffenet_sha256"] = self.caffenet_sha256
        r["recipe_sha256"] = hashlib.sha256(repr(sorted(dataclasses.asdict(self.recipe).items())).encode()).hexdigest()
        return r

    def after_training(self, out_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The seed's metric on this run's log, beside the published values (hardware classes named)."""
        from common.manifest import bundle_manifest

        try:
            value = seed_loss_metric(records, every=self.log_every)
        except ValueError as e:
            return {"final_loss_mean10": None, "note": str(e)}
        rows = []
        for run in bundle_manifest("sa_siam").published:
            for m in run.metrics:
                if m.name == "final_loss_mean10":
                    tol = (m.tolerance_rel or 0) * m.value
                    rows.append({"run": run.name, "hardware": run.hardware, "published": m.value,
                                 "tolerance_abs": tol, "within": abs(value - m.value) <= tol})
        return {"final_loss_mean10": value, "branch": self.recipe.branch, "compared_with": rows}


def make_task(overrides: Mapping[str, Any]) -> SASiamTask:
    return SASiamTask(Recipe.with_overrides(overrides))
