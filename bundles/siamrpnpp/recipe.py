"""The pysot `siamrpn_r50_l234_dwxcorr_8gpu` training recipe (shared/specs/siamrpnpp_training.md sections 1-4, 9,
11, 13, 15) as a `TrainingTask` for the shared loop (common/training/loop.py).

Upstream semantics reproduced on purpose, and where:
- gradients are SUMMED over ranks (the shared loop's `sum_gradients`, as pysot's all-reduce): with N processes the
  update is N x the gradient of the global-batch mean; no loss or LR scaling is applied because no averaging
  (DDP) is used (section 1, 13);
- the LR changes only at epoch boundaries: 5 warm-up epochs (x1.3797 per epoch from 0.001), then log-spaced
  0.005 -> 0.0005 over the remaining 15; a group's LR is that times its initial LR / BASE_LR (section 3);
- epochs 0-9: every backbone parameter frozen and every backbone BatchNorm in eval (ImageNet statistics), the
  optimizer's backbone group empty; at epoch 10 the optimizer and scheduler are REBUILT (momentum restarts from
  zero) with layer2-4 trainable at 0.1 x LR and their BatchNorms in train mode; stem and layer1 stay frozen with
  BN in eval for good (section 4, 15.6, 15.7). `optimizer = "ascend_port"` instead builds one optimizer holding
  every backbone parameter and never rebuilds it (the Ascend port, section 12);
- modes are a pure function of the epoch and are re-applied after `model.train()`, so a resume lands in exactly
  the freeze state of its epoch (section 13, 15.6).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bundles.siamrpn.model import SiamRPN
from bundles.siamrpnpp.loss import total_loss
from common.checkpoint import load_checkpoint, load_strict, unwrap_state_dict, with_batch_counters
from common.errors import CheckpointError
from common.training.loop import TrainingTask
from common.training.recipe import with_overrides


@dataclass(frozen=True)
class Recipe:
    """Every value of the 8gpu config the training uses (section 2). `zoo train --set key=value` overrides one."""

    data: str = "training_dataset"  # the base holding vid/ yt_bb/ coco/ det/ (crop511 + JSON, as curated)
    pretrained: str = ""  # pysot resnet50.model path; "" = random init (the performance config)
    init: str = ""  # a whole-model checkpoint to start from (pysot TRAIN.PRETRAINED; loaded strictly here)
    epochs: int = 20
    batch_size: int = 28  # per device
    base_lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_start: float = 0.005  # log phase
    lr_end: float = 0.0005
    warmup_epochs: int = 5
    warmup_start: float = 0.001
    warmup_end: float = 0.005
    grad_clip: float = 10.0
    cls_weight: float = 1.0
    loc_weight: float = 1.2
    backbone_train_epoch: int = 10
    backbone_train_layers: tuple[str, ...] = ("layer2", "layer3", "layer4")
    layers_lr: float = 0.1
    videos_per_epoch: int = 600_000
    neg: float = 0.2
    data_seed: int = 0  # the pick lists and per-item randomness (ours: upstream draws from global RNG state)
    log_every: int = 20
    optimizer: str = "pysot"  # "pysot" (rebuilt at backbone_train_epoch) | "ascend_port" (built once)

    def __post_init__(self) -> None:
        if self.optimizer not in ("pysot", "ascend_port"):
            raise ValueError(f"optimizer must be 'pysot' or 'ascend_port', got {self.optimizer!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} must be in [0, epochs={self.epochs})")

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, Any]) -> Recipe:
        """The recipe with `key=value` overrides, each parsed as its field's type; unknown keys are an error."""
        return with_overrides(cls, overrides)



def lr_at_epoch(recipe: Recipe, epoch: int) -> float:
    """The head/neck LR of `epoch` (0-based): step warm-up then log decay (pysot WarmUPScheduler, section 3)."""
    if not 0 <= epoch < recipe.epochs:
        raise ValueError(f"epoch {epoch} outside 0..{recipe.epochs - 1}")
    if epoch < recipe.warmup_epochs:
        mult = (recipe.warmup_end / recipe.warmup_start) ** (1.0 / recipe.warmup_epochs)
        return recipe.warmup_start * mult ** epoch
    space = np.logspace(math.log10(recipe.lr_start), math.log10(recipe.lr_end), recipe.epochs - recipe.warmup_epochs)
    return float(space[epoch - recipe.warmup_epochs])


def apply_freeze(model: SiamRPN, recipe: Recipe, epoch: int) -> None:
    """Modes and requires_grad for `epoch`: everything in train mode, then the backbone frozen with its BNs in
    eval, then (from backbone_train_epoch) the train layers trainable with their BNs in train mode."""
    model.train()
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    for m in model.backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    if epoch >= recipe.backbone_train_epoch:
        for name in recipe.backbone_train_layers:
            layer = getattr(model.backbone, name)
            for p in layer.parameters():
                p.requires_grad_(True)
            for m in layer.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.train()


def build_optimizer(model: SiamRPN, recipe: Recipe) -> torch.optim.SGD:
    """SGD over [backbone trainable (0.1 x LR), neck, rpn_head] with momentum and weight decay on every group.
    `initial_lr` is each group's LR at BASE_LR, from which every epoch's LR is derived."""
    if recipe.optimizer == "ascend_port":
        backbone = list(model.backbone.parameters())  # frozen ones have no grad and are skipped by SGD
    else:
        backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [
        {"params": backbone, "name": "backbone", "initial_lr": recipe.layers_lr * recipe.base_lr},
        {"params": list(model.neck.parameters()), "name": "neck", "initial_lr": recipe.base_lr},
        {"params": list(model.rpn_head.parameters()), "name": "rpn_head", "initial_lr": recipe.base_lr},
    ]
    for g in groups:
        g["lr"] = g["initial_lr"]
    return torch.optim.SGD(groups, lr=recipe.base_lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def set_epoch_lr(optimizer: torch.optim.Optimizer, recipe: Recipe, epoch: int) -> None:
    lr = lr_at_epoch(recipe, epoch)
    for g in optimizer.param_groups:
        g["lr"] = lr * g["initial_lr"] / recipe.base_lr


BACKBONE_IGNORED = ("fc.weight", "fc.bias")  # an ImageNet classifier head, if present, is not part of the backbone


def load_pretrained_backbone(model: SiamRPN, path: Path) -> str:
    """pysot's resnet50.model into the backbone, strictly (section 11): `state_dict` unwrapped, `module.` stripped,
    an fc head dropped; every other key must match the modified ResNet-50 (3x3 downsamples), so a torchvision
    checkpoint or the finished tracker's model.pth (keys prefixed `backbone.`) is refused with the keys named.
    Returns the file's sha256 for the report."""
    from common.fetch import file_digest

    sd = {k: v for k, v in unwrap_state_dict(load_checkpoint(path)).items() if k not in BACKBONE_IGNORED}
    if sd and all(k.startswith("backbone.") for k in sd):
        raise CheckpointError(path, "keys carry a 'backbone.' prefix: this is a whole-tracker checkpoint (e.g. the "
                                    "MODEL_ZOO model.pth the Ascend README renames), not the ImageNet backbone "
                                    "resnet50.model (spec section 11)")
    load_strict(model.backbone, with_batch_counters(sd, model.backbone), source=str(path))
    return file_digest(path)


class SiamRPNPPTask(TrainingTask):
    """The recipe bound to a dataset on disk."""

    name = "siamrpnpp"

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.epochs = recipe.epochs
        self.batch_size = recipe.batch_size
        self.grad_clip = recipe.grad_clip
        self.log_every = recipe.log_every
        self.backbone_sha256: str | None = None

    def build_model(self) -> nn.Module:
        model = SiamRPN()  # PyTorch default init for neck and head; cls/loc fusion weights ones(3) (section 9)
        if self.recipe.init:
            from bundles.siamrpn.model import checkpoint_filter_fn

            path = Path(self.recipe.init)
            load_strict(model, checkpoint_filter_fn(load_checkpoint(path), model), source=str(path))
        if self.recipe.pretrained:
            self.backbone_sha256 = load_pretrained_backbone(model, Path(self.recipe.pretrained))
        return model

    def dataset(self) -> torch.utils.data.Dataset:
        from bundles.siamrpnpp.data import TrainPairs, pysot_sources

        return TrainPairs(pysot_sources(Path(self.recipe.data)), videos_per_epoch=self.recipe.videos_per_epoch,
                          epochs=self.recipe.epochs, neg=self.recipe.neg, seed=self.recipe.data_seed)

    def configure(self, model: nn.Module, epoch: int, optimizer: torch.optim.Optimizer | None
                  ) -> torch.optim.Optimizer:
        assert isinstance(model, SiamRPN)
        apply_freeze(model, self.recipe, epoch)
        rebuild = (self.recipe.optimizer == "pysot" and epoch == self.recipe.backbone_train_epoch)
        if optimizer is None or rebuild:
            optimizer = build_optimizer(model, self.recipe)
        set_epoch_lr(optimizer, self.recipe, epoch)
        return optimizer

    def loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        cls, loc = model(batch["template"], batch["search"])
        return total_loss(cls, loc, dict(batch), cls_weight=self.recipe.cls_weight, loc_weight=self.recipe.loc_weight)

    def worker_init(self, worker_id: int) -> None:
        import cv2

        cv2.setNumThreads(1)  # each DataLoader worker is one core's worth of decoding and warping

    def describe(self) -> dict[str, Any]:
        r = dataclasses.asdict(self.recipe)
        r["initialisation"] = (
            f"pretrained backbone {self.recipe.pretrained} (sha256 {self.backbone_sha256})" if self.recipe.pretrained
            else f"whole model from {self.recipe.init}" if self.recipe.init
            else "random (PyTorch default init; the performance config)")
        r["gradient_reduction"] = "sum over ranks (pysot), no scaling"
        r["lr_per_epoch"] = [lr_at_epoch(self.recipe, e) for e in range(self.recipe.epochs)]
        r["recipe_sha256"] = hashlib.sha256(repr(sorted(dataclasses.asdict(self.recipe).items())).encode()).hexdigest()
        return r


def make_task(overrides: Mapping[str, Any]) -> SiamRPNPPTask:
    return SiamRPNPPTask(Recipe.with_overrides(overrides))
