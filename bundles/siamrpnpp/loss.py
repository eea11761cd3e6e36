"""SiamRPN++ training losses (shared/specs/siamrpnpp_training.md section 9, with the fact of section 15.1).

Mask-based, like the Ascend port (no `nonzero` / `index_select`, no host sync), but with upstream's semantics
reproduced on purpose: a class term is 0 when **at most one** anchor of that class is selected in the whole batch
(upstream's index selection squeezes a one-element index to a scalar and the term drops out; section 15.1), where
a plain mask-based mean would give a non-zero term for exactly one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ANCHORS = 5


def _class_term(logp: torch.Tensor, mask: torch.Tensor, cls: int) -> torch.Tensor:
    """Mean NLL of class `cls` over `mask`; 0 when the mask selects 0 or 1 entries (upstream quirk)."""
    n = mask.sum()
    total = -(logp[:, cls] * mask).sum()
    return torch.where(n > 1, total / n.clamp(min=1), torch.zeros_like(total))


def cls_loss(cls: torch.Tensor, label_cls: torch.Tensor) -> torch.Tensor:
    """0.5 * NLL over positives + 0.5 * NLL over negatives, each averaged over the whole batch.

    cls: B x 10 x H x W logits (2 per anchor, class-major: channels [bg a0..a4, fg a0..a4]); label_cls: B x 5 x H x W
    in {-1 ignore, 0 negative, 1 positive}."""
    b, _, h, w = cls.shape
    logits = cls.view(b, 2, cls.shape[1] // 2, h, w).permute(0, 2, 3, 4, 1).reshape(-1, 2)
    logp = F.log_softmax(logits.float(), dim=1)
    label = label_cls.reshape(-1)
    pos = (label == 1).to(logp.dtype)
    neg = (label == 0).to(logp.dtype)
    return 0.5 * _class_term(logp, pos, 1) + 0.5 * _class_term(logp, neg, 0)


def loc_loss(loc: torch.Tensor, label_loc: torch.Tensor, label_loc_weight: torch.Tensor) -> torch.Tensor:
    """Weighted L1 (not smooth L1): per anchor the sum over the 4 coordinates of |pred - target| times its weight
    (1/n_pos at positives), summed over everything and divided by the batch size.

    loc: B x 20 x H x W; label_loc: B x 4 x 5 x H x W; label_loc_weight: B x 5 x H x W."""
    b, _, h, w = loc.shape
    diff = (loc.float().view(b, 4, -1, h, w) - label_loc).abs().sum(dim=1)
    return (diff * label_loc_weight).sum() / b


def total_loss(cls: torch.Tensor, loc: torch.Tensor, batch: dict[str, torch.Tensor], *, cls_weight: float,
               loc_weight: float) -> dict[str, torch.Tensor]:
    c = cls_loss(cls, batch["label_cls"])
    lo = loc_loss(loc, batch["label_loc"], batch["label_loc_weight"])
    return {"total_loss": cls_weight * c + loc_weight * lo, "cls_loss": c, "loc_loss": lo}
