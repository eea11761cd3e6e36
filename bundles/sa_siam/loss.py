"""SA-Siam training loss (shared/specs/sa_siam.md section 7): balanced logistic loss on the response map, plus the
slim L2 terms that TF's `get_total_loss` adds to the logged total (section 3, resolved 15.2)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

R_POS = 16
STRIDE = 8
WEIGHT_DECAY = 5e-4


def label_map(size: int, r_pos: int = R_POS, stride: int = STRIDE) -> np.ndarray:
    """size x size float32: 1 where |dx| + |dy| <= r_pos / stride (L1 from the centre (size - 1) / 2), else 0.
    rNeg = 0, so there is no ignore band. 15x15 -> 13 positives, 212 negatives."""
    offsets = np.abs(np.arange(size, dtype=np.float64) - (size - 1) / 2)
    dist = offsets[:, None] + offsets[None, :]
    return (dist <= r_pos / stride).astype(np.float32)


def balanced_logistic_loss(response: torch.Tensor, *, r_pos: int = R_POS, stride: int = STRIDE) -> torch.Tensor:
    """Sigmoid cross-entropy with logits against `label_map`, weighted 0.5/n_pos at positives and 0.5/n_neg at
    negatives, summed over each (B,1,S,S) map, averaged over the batch (the logged `batch loss`)."""
    labels_np = label_map(response.shape[-1], r_pos, stride)
    n_pos = float(labels_np.sum())
    n_neg = float(labels_np.size - n_pos)
    labels = torch.from_numpy(labels_np).to(response.device, response.dtype).expand_as(response)
    weights = torch.where(labels > 0, 0.5 / n_pos, 0.5 / n_neg).to(response.dtype)
    loss = F.binary_cross_entropy_with_logits(response, labels, reduction="none")
    return (loss * weights).sum(dim=(1, 2, 3)).mean()


def l2_regularisation(module: nn.Module, weight_decay: float = WEIGHT_DECAY) -> torch.Tensor:
    """weight_decay * sum(w^2) / 2 over every conv weight (slim `l2_regularizer`): appearance conv1-5; semantic
    frozen trunk convs (a gradient-free constant in the logged total, spec 15.2) and the 1x1 convs. Biases, BN and
    the attention FCs (nn.Linear) carry no regulariser upstream and are left out."""
    terms = [m.weight.float().pow(2).sum() for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not terms:
        return torch.zeros(())
    return weight_decay * torch.stack(terms).sum() / 2
