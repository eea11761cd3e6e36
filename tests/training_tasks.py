"""Tiny training tasks for the machinery tests (imported by torchrun workers through PYTHONPATH=tests).

A two-layer MLP on index-seeded regression data: the update of N processes with summed gradients must equal one
process on the concatenated batch with the loss multiplied by N (`loss_factor`), and a resumed run must equal an
uninterrupted one. The first layer is frozen before `freeze_epoch` and the optimizer rebuilt there, like pysot's
backbone schedule, so resume across that boundary is exercised too."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from common.training.loop import TrainingTask


class TinyData(Dataset):
    def __init__(self, items: int):
        self.items = items

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([7, index])
        x = rng.standard_normal(4).astype(np.float32)
        return {"x": x, "y": np.array([x.sum() * 0.5 + 0.1], np.float32)}


class TinyTask(TrainingTask):
    name = "tiny"

    def __init__(self, o: Mapping[str, Any]):
        self.epochs = int(o.get("epochs", 2))
        self.batch_size = int(o.get("batch_size", 2))
        self.items = int(o.get("items", 32))
        self.lr = float(o.get("lr", 0.1))
        self.grad_clip = float(o["clip"]) if "clip" in o else None
        self.loss_factor = float(o.get("loss_factor", 1))
        self.freeze_epoch = int(o.get("freeze_epoch", 1))
        self.fail_rank = o.get("fail_rank")
        self.fail_at = int(o.get("fail_at", 1))
        self.log_every = 1
        self.grad_reduction = str(o.get("reduction", "sum"))
        self._steps = 0

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def dataset(self) -> Dataset:
        return TinyData(self.items)

    def configure(self, model, epoch, optimizer):
        frozen = epoch < self.freeze_epoch
        for p in model[0].parameters():
            p.requires_grad_(not frozen)
        if optimizer is None or epoch == self.freeze_epoch:
            optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=self.lr,
                                        momentum=0.9, weight_decay=1e-4)
        for g in optimizer.param_groups:
            g["lr"] = self.lr * 0.5 ** epoch
        return optimizer

    def loss(self, model, batch):
        if self.fail_rank is not None and os.environ.get("RANK") == str(self.fail_rank) and self._steps >= self.fail_at:
            raise RuntimeError("injected failure in the loss")
        self._steps += 1
        err = ((model(batch["x"]) - batch["y"]) ** 2).mean()
        return {"total_loss": err * self.loss_factor, "mse_loss": err}


def make_tiny(overrides: Mapping[str, Any]) -> TinyTask:
    return TinyTask(overrides)
