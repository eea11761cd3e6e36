"""RefineDet320 (VGG16 + ARM/TCB/ODM) for PASCAL VOC, written from shared/specs/refinedet.md section 1.

Reproduces the network of luuuyi/RefineDet.PyTorch @ 0e4b24ce (MIT) as patched by the Ascend ModelZoo port: the
exported graph returns the four head tensors with the softmax inside (spec section 1.9, ModelZoo `test` phase);
priors are computed on the host (`bundles.refinedet.post.prior_boxes`). Module names mirror the upstream state_dict
keys (`vgg.N`, `tcb0.N`, ...) because the published checkpoint's 98 keys freeze them.

Order: blocks, then the model, then the checkpoint filter, then the factory.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 21
ANCHORS_PER_CELL = 3
SOURCE_CHANNELS = (512, 512, 1024, 512)  # conv4_3, conv5_3, fc7, extras -> the four ARM sources
TCB_CHANNELS = 256
OUTPUT_NAMES = ("arm_loc", "arm_conf", "odm_loc", "odm_conf")


class L2Norm(nn.Module):
    """Per-pixel L2 normalisation over channels with a learned per-channel scale (eps added after the sqrt)."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
        return self.weight.view(1, -1, 1, 1) * x / norm


def vgg16_base() -> nn.ModuleList:
    """The 35-entry VGG16 list (spec table 1.2); indices are the state_dict key numbers."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif v == "C":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU(inplace=True)]
            in_ch = v
    layers += [
        nn.MaxPool2d(2, 2),  # pool5 is 2x2 stride 2 here (SSD uses 3x3 stride 1)
        nn.Conv2d(512, 1024, 3, padding=3, dilation=3),  # conv6 (fc6), dilated
        nn.ReLU(inplace=True),
        nn.Conv2d(1024, 1024, 1),  # conv7 (fc7)
        nn.ReLU(inplace=True),
    ]
    return nn.ModuleList(layers)


def _heads(out_per_anchor: int, channels: tuple[int, ...]) -> nn.ModuleList:
    return nn.ModuleList(nn.Conv2d(c, ANCHORS_PER_CELL * out_per_anchor, 3, padding=1) for c in channels)


FEATURE_MAPS = (40, 20, 10, 5)  # source sizes for a 320 input (spec 1.1)
NUM_ANCHORS = sum(f * f for f in FEATURE_MAPS) * ANCHORS_PER_CELL  # 6375


def _flatten(maps: list[torch.Tensor], per_anchor: int) -> torch.Tensor:
    """(B, A*D, H, W) per level -> (B, N, D), levels concatenated in order (spec 1.8 anchor order).

    Reshapes use the constant per-level sizes with -1 only for the batch, so the exported graph's output shapes
    are (batch, 6375, D) for ONNX shape inference and ATC rather than fully dynamic."""
    flat = [
        m.permute(0, 2, 3, 1).reshape(-1, f * f * ANCHORS_PER_CELL * per_anchor)
        for m, f in zip(maps, FEATURE_MAPS, strict=True)
    ]
    return torch.cat(flat, dim=1).reshape(-1, NUM_ANCHORS, per_anchor)


class RefineDet(nn.Module):
    """RefineDet320: VGG16 base, anchor refinement module (ARM), transfer connection blocks (TCB) and the
    object detection module (ODM). Returns (arm_loc, arm_conf, odm_loc, odm_conf) with both confidences softmaxed,
    shapes (B,6375,4), (B,6375,2), (B,6375,4), (B,6375,21)."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.num_classes = num_classes
        self.vgg = vgg16_base()
        self.conv4_3_L2Norm = L2Norm(512, 10)
        self.conv5_3_L2Norm = L2Norm(512, 8)
        self.extras = nn.ModuleList([nn.Conv2d(1024, 256, 1), nn.Conv2d(256, 512, 3, stride=2, padding=1)])
        self.arm_loc = _heads(4, SOURCE_CHANNELS)
        self.arm_conf = _heads(2, SOURCE_CHANNELS)
        self.odm_loc = _heads(4, (TCB_CHANNELS,) * 4)
        self.odm_conf = _heads(num_classes, (TCB_CHANNELS,) * 4)
        tcb0: list[nn.Module] = []
        tcb2: list[nn.Module] = []
        for c in SOURCE_CHANNELS:
            tcb0 += [nn.Conv2d(c, 256, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(256, 256, 3, padding=1)]
            tcb2 += [nn.ReLU(inplace=True), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True)]
        self.tcb0 = nn.ModuleList(tcb0)
        self.tcb1 = nn.ModuleList(nn.ConvTranspose2d(256, 256, 2, stride=2) for _ in range(3))
        self.tcb2 = nn.ModuleList(tcb2)

    def sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four ARM source maps (40, 20, 10, 5 pixels for a 320 input)."""
        for k in range(23):
            x = self.vgg[k](x)
        out = [self.conv4_3_L2Norm(x)]
        for k in range(23, 30):
            x = self.vgg[k](x)
        out.append(self.conv5_3_L2Norm(x))
        for k in range(30, len(self.vgg)):
            x = self.vgg[k](x)  # the main path continues un-normalised
        out.append(x)
        x = F.relu(self.extras[0](x))
        out.append(F.relu(self.extras[1](x)))
        return out

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        src = self.sources(image)
        arm_loc = _flatten([h(s) for h, s in zip(self.arm_loc, src, strict=True)], 4)
        arm_conf = _flatten([h(s) for h, s in zip(self.arm_conf, src, strict=True)], 2)
        # TCB top-down, deepest level first: P_k = tcb2_k(tcb0_k(source_k) + deconv(P_{k+1})).
        levels: list[torch.Tensor] = []
        upper: torch.Tensor | None = None
        for k in reversed(range(4)):
            p = src[k]
            for i in range(3):
                p = self.tcb0[3 * k + i](p)
            if upper is not None:
                p = p + self.tcb1[k](upper)
            for i in range(3):
                p = self.tcb2[3 * k + i](p)
            upper = p
            levels.insert(0, p)
        odm_loc = _flatten([h(p) for h, p in zip(self.odm_loc, levels, strict=True)], 4)
        odm_conf = _flatten([h(p) for h, p in zip(self.odm_conf, levels, strict=True)], self.num_classes)
        return arm_loc, F.softmax(arm_conf, dim=-1), odm_loc, F.softmax(odm_conf, dim=-1)


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unwrap the containers seen in the wild ('state_dict', 'model', DDP's 'module.' prefix); keys unchanged
    otherwise (the published file is a plain 98-key state_dict, spec section 0)."""
    for container in ("state_dict", "model"):
        inner = state_dict.get(container)
        if isinstance(inner, Mapping):
            state_dict = inner
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def refinedet320(
    state_dict: Mapping[str, torch.Tensor] | None = None, *, source: str = "RefineDet320 checkpoint"
) -> RefineDet:
    """RefineDet320 for VOC (21 classes) in eval mode; strict load of `state_dict` when given (`source` names it
    in errors)."""
    from common.checkpoint import load_strict
    from common.upstream import bundle_upstream_keys

    model = RefineDet()
    if state_dict is not None:
        load_strict(model, checkpoint_filter_fn(state_dict), source=source,
                    upstream=bundle_upstream_keys("refinedet"))
    return model.eval()
