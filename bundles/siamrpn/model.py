"""SiamRPN++ `siamrpn_r50_l234_dwxcorr`, written from shared/specs/siamrpn.md sections 1-6 and 16.

Reproduces the network of STVIR/pysot @ 9b07c52 (Apache-2.0): a modified ResNet-50 returning layer2-4 (conv1
padding 0, 3x3 downsamples, atrous layer3/4), three 1x1 adjust layers that crop the template to 7x7, and three
depth-wise RPN heads fused with softmax-normalised learned weights. Module names mirror the published state_dict
keys (`backbone.layer2.0.downsample.0`, `rpn_head.rpn3.loc.head.3`, ...) because the 458-key checkpoint freezes them.

Three graphs share one set of weights:
- `SiamRPN.forward(template, search) -> (cls, loc)`: the seed's single graph (template branch recomputed per frame);
- `TemplateBranch(template) -> 6 kernels` (run once per (re)init) and `SearchBranch(search, *kernels) -> (cls, loc)`
  (per frame): the split pair of spec section 16, equal to the single graph by construction and by test.

Order: blocks, then the model, then the split branches, then the checkpoint filter, then the factory.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

EXEMPLAR_SIZE = 127
INSTANCE_SIZE = 255
SCORE_SIZE = 25
ANCHOR_NUM = 5
LEVELS = (2, 3, 4)
NECK_CHANNELS = 256
HEADS = ("cls", "loc")
KERNEL_NAMES = tuple(f"kernel{lvl}_{h}" for lvl in LEVELS for h in HEADS)  # split-graph inputs, this order
OUTPUT_NAMES = ("cls", "loc")


# -- backbone -----------------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    """ResNet bottleneck (expansion 4) with the conv2 stride/dilation/padding of spec section 2."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, padding: int,
                 downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


def make_stage(inplanes: int, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    """One `layerN` by the rule of spec section 2: conv2 padding 2 - stride; with dilation D > 1 block 0 uses D/2;
    the downsample is 1x1 only for stride 1 and D = 1, else 3x3 (dilation/padding D/2 when D > 1, else 1/0)."""
    out = planes * Bottleneck.expansion
    if stride == 1 and dilation == 1:
        down_conv = nn.Conv2d(inplanes, out, 1, stride=1, bias=False)
    else:
        dd = dilation // 2 if dilation > 1 else 1
        pad = dilation // 2 if dilation > 1 else 0
        down_conv = nn.Conv2d(inplanes, out, 3, stride=stride, padding=pad, dilation=dd, bias=False)
    downsample = nn.Sequential(down_conv, nn.BatchNorm2d(out))
    d0 = dilation // 2 if dilation > 1 else 1
    p0 = dilation // 2 if dilation > 1 else 2 - stride
    layers = [Bottleneck(inplanes, planes, stride, d0, p0, downsample)]
    layers += [Bottleneck(out, planes, 1, dilation, dilation, None) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet50(nn.Module):
    """pysot's ResNet-50 (spec section 2): returns the outputs of layer2, layer3, layer4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=0, bias=False)  # padding 0: upstream geometry
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = make_stage(64, 64, 3, stride=1, dilation=1)
        self.layer2 = make_stage(256, 128, 4, stride=2, dilation=1)
        self.layer3 = make_stage(512, 256, 6, stride=1, dilation=2)
        self.layer4 = make_stage(1024, 512, 3, stride=1, dilation=4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        p2 = self.layer2(self.layer1(x))
        p3 = self.layer3(p2)
        return p2, p3, self.layer4(p3)


# -- neck and head ------------------------------------------------------------------------------------------
class AdjustLayer(nn.Module):
    """1x1 conv + BN (no ReLU), then a 7x7 centre crop when the map is narrower than 20 (the template only)."""

    def __init__(self, in_channels: int, out_channels: int = NECK_CHANNELS):
        super().__init__()
        self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                        nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        width = x.shape[3]
        if width < 20:  # decided on the static shape, so each traced branch keeps exactly one path
            left = (width - 7) // 2
            x = x[:, :, left:left + 7, left:left + 7]
        return x


class AdjustAllLayer(nn.Module):
    """One AdjustLayer per backbone level (`downsample2/3/4`)."""

    def __init__(self, in_channels: tuple[int, ...] = (512, 1024, 2048)):
        super().__init__()
        for lvl, c in zip(LEVELS, in_channels, strict=True):
            self.add_module(f"downsample{lvl}", AdjustLayer(c))

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return [getattr(self, f"downsample{lvl}")(f) for lvl, f in zip(LEVELS, feats, strict=True)]


def _conv_bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


def xcorr_depthwise(search: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-(sample, channel) valid cross-correlation: (B,C,29,29) x (B,C,5,5) -> (B,C,25,25), as one grouped conv."""
    b, c = kernel.shape[0], kernel.shape[1]
    x = search.reshape(1, b * c, search.shape[2], search.shape[3])
    k = kernel.reshape(b * c, 1, kernel.shape[2], kernel.shape[3])
    out = F.conv2d(x, k, groups=b * c)
    return out.reshape(b, c, out.shape[2], out.shape[3])


class DepthwiseXCorr(nn.Module):
    """conv_kernel / conv_search (3x3 conv-BN-ReLU each), depth-wise xcorr, then a 1x1 head to `out_channels`."""

    def __init__(self, out_channels: int, channels: int = NECK_CHANNELS):
        super().__init__()
        self.conv_kernel = _conv_bn_relu(channels)
        self.conv_search = _conv_bn_relu(channels)
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, out_channels, 1),
        )

    def correlate(self, kernel: torch.Tensor, search_feat: torch.Tensor) -> torch.Tensor:
        """The search half, given the already-computed kernel (conv_kernel output)."""
        return self.head(xcorr_depthwise(self.conv_search(search_feat), kernel))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.correlate(self.conv_kernel(z), x)


class DepthwiseRPN(nn.Module):
    """`cls` (2 x 5 anchors) and `loc` (4 x 5 anchors) depth-wise correlation heads of one level."""

    def __init__(self, anchor_num: int = ANCHOR_NUM):
        super().__init__()
        self.cls = DepthwiseXCorr(2 * anchor_num)
        self.loc = DepthwiseXCorr(4 * anchor_num)


class MultiRPN(nn.Module):
    """Three DepthwiseRPNs fused by softmax(cls_weight) / softmax(loc_weight) (learned; a plain mean is wrong)."""

    def __init__(self) -> None:
        super().__init__()
        # Registered before the children so state_dict() lists them first, as upstream's file does.
        self.cls_weight = nn.Parameter(torch.ones(len(LEVELS)))
        self.loc_weight = nn.Parameter(torch.ones(len(LEVELS)))
        for lvl in LEVELS:
            self.add_module(f"rpn{lvl}", DepthwiseRPN())

    def kernels(self, zfs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Template-side kernels in KERNEL_NAMES order: (rpn2.cls, rpn2.loc, rpn3.cls, ...)."""
        return [getattr(getattr(self, f"rpn{lvl}"), h).conv_kernel(z)
                for lvl, z in zip(LEVELS, zfs, strict=True) for h in HEADS]

    def correlate(self, kernels: list[torch.Tensor], xfs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        cls_w = F.softmax(self.cls_weight, dim=0)
        loc_w = F.softmax(self.loc_weight, dim=0)
        cls: torch.Tensor | None = None
        loc: torch.Tensor | None = None
        for i, (lvl, x) in enumerate(zip(LEVELS, xfs, strict=True)):
            rpn = getattr(self, f"rpn{lvl}")
            c = rpn.cls.correlate(kernels[2 * i], x) * cls_w[i]
            lo = rpn.loc.correlate(kernels[2 * i + 1], x) * loc_w[i]
            cls = c if cls is None else cls + c
            loc = lo if loc is None else loc + lo
        assert cls is not None and loc is not None
        return cls, loc

    def forward(self, zfs: list[torch.Tensor], xfs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.correlate(self.kernels(zfs), xfs)


# -- model --------------------------------------------------------------------------------------------------
class SiamRPN(nn.Module):
    """The seed's single graph: (template 1x3x127x127, search 1x3x255x255), BGR 0..255 float, no normalisation
    -> (cls 1x10x25x25, loc 1x20x25x25). Template features are recomputed on every call."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet50()
        self.neck = AdjustAllLayer()
        self.rpn_head = MultiRPN()

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """neck(backbone(img)): three 256-channel maps (7x7 for a template, 31x31 for a search crop)."""
        return self.neck(self.backbone(img))

    def forward(self, template: torch.Tensor, search: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rpn_head(self.features(template), self.features(search))


class TemplateBranch(nn.Module):
    """Split graph 1: template -> the six depth-wise kernels (1x256x5x5 each, KERNEL_NAMES order); once per init."""

    def __init__(self, model: SiamRPN):
        super().__init__()
        self.model = model  # shared, not copied: one set of weights for every graph

    def forward(self, template: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.rpn_head.kernels(self.model.features(template)))


class SearchBranch(nn.Module):
    """Split graph 2: (search, *kernels) -> (cls, loc); per frame, with the same softmax-weighted fusion."""

    def __init__(self, model: SiamRPN):
        super().__init__()
        self.model = model

    def forward(self, search: torch.Tensor, *kernels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.rpn_head.correlate(list(kernels), self.model.features(search))


# -- checkpoint ---------------------------------------------------------------------------------------------
def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Loader contract of spec section 6.2: unwrap `state_dict`, strip `module.`, and make the BatchNorm
    `num_batches_tracked` counters optional (filled with 0 when absent, dropped when the model has none). Every
    other key is passed through untouched so `load_strict` can list what is missing or unexpected."""
    from common.checkpoint import unwrap_state_dict, with_batch_counters

    return with_batch_counters(unwrap_state_dict(state_dict), model)


def siamrpn_r50_l234(state_dict: Mapping[str, torch.Tensor] | None = None, *, source: str = "checkpoint") -> SiamRPN:
    """siamrpn_r50_l234_dwxcorr in eval mode; strict load of `state_dict` when given (`source` names it in errors)."""
    from common.checkpoint import load_strict
    from common.upstream import bundle_upstream_keys

    model = SiamRPN()
    if state_dict is not None:
        load_strict(model, checkpoint_filter_fn(state_dict, model), source=source,
                    upstream=bundle_upstream_keys("siamrpn"))
    return model.eval()



def random_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Demo / parity weights with the published keys and shapes, deterministic in `seed`.

    Convs are He-normal and the fusion weights standard normal. BatchNorm statistics are then *calibrated*: one
    forward pass in training mode over seeded smooth 0..255 images (cumulative averaging) sets every running
    mean/variance to what that layer actually sees. Uncalibrated random statistics let activations grow ~10x per
    stage through 53 BN layers (1e7 logits), which makes the demo tracker degenerate."""
    gen = torch.Generator().manual_seed(seed)
    model = SiamRPN()
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.ndim == 4:
                v.copy_(torch.randn(v.shape, generator=gen) * (2.0 / v[0].numel()) ** 0.5)
            elif k.endswith(("cls_weight", "loc_weight")):
                v.copy_(torch.randn(v.shape, generator=gen))
            elif k.endswith("head.3.bias"):
                v.copy_(0.1 * torch.randn(v.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None  # cumulative average: the running stats become exactly the calibration stats
                m.reset_running_stats()

        def image(size: int) -> torch.Tensor:
            # Smooth blobs plus fine texture: both low- and high-frequency content, like real frames.
            coarse = torch.rand(1, 3, size // 16 + 1, size // 16 + 1, generator=gen)
            coarse = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
            fine = torch.rand(1, 3, size, size, generator=gen)
            return (0.7 * coarse + 0.3 * fine) * 255

        z, x = image(EXEMPLAR_SIZE), image(INSTANCE_SIZE)
        model.train()
        model(z, x)
        model.eval()
        # Rescale each level's last 1x1 conv so the fused logits / deltas are small (std 0.1 / 0.05): random
        # weights otherwise give |dw| >> 1 (exp() overflows in the box decode) and confident random peaks that
        # make the demo tracker leave the object on the first frame. Near-flat scores let the cosine window keep
        # it centred, so the demo's failures come from the synthetic sequences' hard frames.
        zfs, xfs = model.features(z), model.features(x)
        for lvl, zf, xf in zip(LEVELS, zfs, xfs, strict=True):
            for h, target in (("cls", 0.003), ("loc", 0.0015)):
                branch = getattr(getattr(model.rpn_head, f"rpn{lvl}"), h)
                std = float(branch(zf, xf).std()) + 1e-6
                branch.head[3].weight.mul_(target / std)
                branch.head[3].bias.mul_(target / std)
    return {k: v.clone() if not k.endswith("num_batches_tracked") else torch.zeros_like(v)
            for k, v in model.state_dict().items()}


def graph_modules(model: SiamRPN) -> dict[str, nn.Module]:
    """The three graphs over one set of weights, named as in the manifest: `model` (the seed's single graph),
    `template` and `search` (the split pair)."""
    return {"model": model, "template": TemplateBranch(model).eval(), "search": SearchBranch(model).eval()}
