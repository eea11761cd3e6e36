"""SA-Siam twofold Siamese network, written from shared/specs/sa_siam.md sections 2-7 and 14.

A PyTorch re-implementation of the TF1 original (microsoft/SA-Siam @ 8bb8760, MIT) keeping its semantics:
- `AppearanceBranch`: SiamFC AlexNet with BN, VALID convs, trained from scratch (spec 3);
- `SemanticBranch`: frozen CaffeNet trunk with LRN, conv4 x0.1 and conv5 each through a trainable 1x1 conv to 128 ch,
  3x3-grid max-pool channel attention on the exemplar only (spec 4);
- per branch r = 1e-3 * xcorr + b (spec 6); `SASiam` fuses R = 0.3 r_app + 0.7 r_sem at inference only (the branches
  are trained separately, each with its own checkpoint).

Exemplar features are cropped at feature level (conv5 6x6, semantic conv4 8x8) by the border rule of spec 4.4, so the
239 training exemplar and the 255 inference exemplar both give 6x6 / 8x8 templates. Upstream's "2 groups" (split
the input channels, run `b1`/`b2`, concatenate) is a grouped conv with groups=2 whose weight is concat(b1, b2) on
the output axis; its per-group BNs are one BN over the concatenated channels (BN is per channel).

`ExemplarGraph` / `SearchGraph` are the two static-shape inference graphs (opset 11), see `graph_io`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import CheckpointError

TRAIN_SIZE = 239  # exemplar and instance in training (spec 2)
INFERENCE_SIZE = 255  # exemplar (first frame's centre-scale search crop) and search crops at inference
NUM_SCALES = 3
STRIDE = 8
CHANNELS = 256
EXEMPLAR_FEATURE = 6  # conv5 exemplar crop; semantic conv4 gets 6 + 2 = 8
SEMANTIC_EXEMPLAR = 8
RESPONSE_SCALE = 1e-3
C_APPEARANCE = 0.3
SEMANTIC_LAYERS = (("conv4", 0.1), ("conv5", 1.0))  # upstream processes conv4 first; concat order [conv4 | conv5]
CAFFE_MEAN_RGB = (123.0, 117.0, 104.0)
# TF 1.x fused batch norm raises any epsilon below 1.001e-5 to 1.001e-5, so the configured 1e-6 is never used;
# TF's decay 0.95 (moving = 0.95 moving + 0.05 batch) is PyTorch's momentum 0.05.
BN_EPS = 1.001e-5
BN_MOMENTUM = 0.05


# -- shared pieces ------------------------------------------------------------------------------------------
def init_xavier(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """slim's default init (spec 3/8): Xavier-uniform conv and linear weights, biases 0, BN gamma 1 beta 0 (and
    fresh running statistics). Fans are per group: upstream creates each b1/b2 half as its own variable, so a
    [5,5,48,128] half has fan_out 25*128, not the 25*256 PyTorch's xavier_uniform_ would use for the grouped weight."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight
            receptive = math.prod(w.shape[2:]) if w.ndim > 2 else 1
            groups = m.groups if isinstance(m, nn.Conv2d) else 1
            fan_in = w.shape[1] * receptive
            fan_out = w.shape[0] // groups * receptive
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            with torch.no_grad():
                w.copy_(torch.rand(w.shape, generator=generator) * (2 * bound) - bound)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_parameters()  # gamma 1, beta 0, running mean 0 / var 1
    return module


def _width(feature: torch.Tensor) -> int:
    """Static spatial size as a Python int, so that an ONNX trace bakes crops and pads in as constants (a traced
    shape expression would make Pad's amounts dynamic and lose the static output shapes of the graphs)."""
    return int(feature.shape[-1])


def exemplar_borders(width: int, size: int) -> tuple[int, int, int, int]:
    """Spec 4.4: the 3x3 grid borders [0, n_left, n_left + size, width] of a width x width feature whose centre
    `size` x `size` cell is the exemplar crop; n_left = int((width - size) / 2 + 0.5)."""
    n_left = int((width - size) / 2 + 0.5)
    return 0, n_left, n_left + size, width


def crop_centre(feature: torch.Tensor, size: int) -> torch.Tensor:
    """The centre `size` x `size` cell of `exemplar_borders` (decided on the static shape)."""
    _, lo, hi, _ = exemplar_borders(_width(feature), size)
    return feature[:, :, lo:hi, lo:hi]


def xcorr(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """VALID cross-correlation summed over channels, one map per sample: z (Bz,C,h,w), x (B,C,H,W) ->
    (B,1,H-h+1,W-w+1). Bz = B pairs sample i with template i (training); Bz = 1 correlates the one template with
    every search crop (the tracker's 3 scales)."""
    if z.shape[0] == 1:
        return F.conv2d(x, z)
    b, c, h, w = (int(d) for d in x.shape)
    if z.shape[0] != b:
        raise ValueError(f"xcorr: {z.shape[0]} templates for {b} search images (need 1 or {b})")
    out = F.conv2d(x.reshape(1, b * c, h, w), z, groups=b)  # group i: search i against template i
    return out.reshape(b, 1, out.shape[2], out.shape[3])


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _pad_to(feature: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad spatially to `width` (upstream's combine: pad_l = pad // 2, pad_r = the rest).

    Concatenated zero blocks rather than F.pad: the opset-11 export of F.pad computes its pads with a reversed
    Slice that constant folding skips, so ONNX shape inference would lose the static shape of the output."""
    pad = width - _width(feature)
    if pad == 0:
        return feature
    b, c, h, w = (int(d) for d in feature.shape)
    left, right = pad // 2, pad - pad // 2
    feature = torch.cat([feature.new_zeros(b, c, h, left), feature, feature.new_zeros(b, c, h, right)], dim=3)
    return torch.cat([feature.new_zeros(b, c, left, width), feature, feature.new_zeros(b, c, right, width)], dim=2)


# -- appearance branch --------------------------------------------------------------------------------------
class AppearanceBranch(nn.Module):
    """SiamFC AlexNet (spec 3): conv1-4 conv (no bias) + BN + ReLU, conv5 conv with bias (no BN, no ReLU), max
    pools 3/2, all VALID; conv2/4/5 are 2-group convs. 239 -> conv5 20x20, 255 -> 22x22. Xavier-initialised."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=2, bias=False)
        self.bn1 = _bn(96)
        self.conv2 = nn.Conv2d(96, 256, 5, groups=2, bias=False)
        self.bn2 = _bn(256)
        self.conv3 = nn.Conv2d(256, 384, 3, bias=False)
        self.bn3 = _bn(384)
        self.conv4 = nn.Conv2d(384, 384, 3, groups=2, bias=False)
        self.bn4 = _bn(384)
        self.conv5 = nn.Conv2d(384, 256, 3, groups=2)
        self.pool = nn.MaxPool2d(3, stride=2)
        self.bias = nn.Parameter(torch.zeros(1))  # `detection/biases` [1], init 0
        init_xavier(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 (no normalisation) -> conv5 (B, 256, W, W)."""
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.relu(self.bn4(self.conv4(x)))
        return self.conv5(x)

    def exemplar(self, z: torch.Tensor) -> torch.Tensor:
        """conv5 centre-cropped to 6x6 (no attention), borders of spec 4.4."""
        return crop_centre(self.features(z), EXEMPLAR_FEATURE)

    def search(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def match(self, z_feat: torch.Tensor, x_feat: torch.Tensor) -> torch.Tensor:
        """r = 1e-3 * xcorr + b (spec 6)."""
        return RESPONSE_SCALE * xcorr(z_feat, x_feat) + self.bias

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Response (B,1,S,S): 239/239 -> 15x15, 255/255 -> 17x17. Two separate passes, as upstream (in training
        each updates the BN moving averages)."""
        return self.match(self.exemplar(z), self.search(x))


# -- semantic branch ----------------------------------------------------------------------------------------
class CaffeNetTrunk(nn.Module):
    """Frozen CaffeNet conv1-conv5 (spec 4.1); state_dict keys are those `load_caffenet_npy` returns.

    Input RGB 0..255; `[123, 117, 104]` is subtracted from R, G, B and the channels reversed to BGR (what the
    Caffe weights expect). conv -> ReLU -> pool -> LRN for layers 1-2 (CaffeNet order), then conv3-5 with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 11, stride=2)
        self.conv2 = nn.Conv2d(96, 256, 5, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3)
        self.conv4 = nn.Conv2d(384, 384, 3, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, groups=2)
        self.pool = nn.MaxPool2d(3, stride=2)
        # TF local_response_normalization(depth_radius 2, alpha 2e-5, beta 0.75, bias 1) == LRN(size 5, alpha
        # 1e-4, ...) in PyTorch, which divides alpha by the size.
        self.lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
        self.register_buffer("mean_rgb", torch.tensor(CAFFE_MEAN_RGB).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> CaffeNetTrunk:
        """Always eval: the trunk is frozen (it has no BN or dropout, so this only keeps `training` honest)."""
        return super().train(False)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 -> BGR minus the Caffe mean. Slices + concat rather than flip: plain opset-11 ops."""
        x = x - self.mean_rgb
        return torch.cat([x[:, 2:3], x[:, 1:2], x[:, 0:1]], dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (conv4, conv5), both after their ReLU: 239 -> 22x22 / 20x20, 255 -> 24x24 / 22x22."""
        x = self.lrn(self.pool(F.relu(self.conv1(self.preprocess(x)))))
        x = self.lrn(self.pool(F.relu(self.conv2(x))))
        x = F.relu(self.conv3(x))
        c4 = F.relu(self.conv4(x))
        return c4, F.relu(self.conv5(c4))


def grid_max(feature: torch.Tensor, borders: tuple[int, int, int, int]) -> torch.Tensor:
    """Max of each of the 3x3 grid cells given by `borders`, per channel, row-major (top-left, top-centre, ...,
    bottom-right) -> (B, C, 9)."""
    cells = [feature[:, :, borders[r]:borders[r + 1], borders[c]:borders[c + 1]].amax(dim=(2, 3))
             for r in range(3) for c in range(3)]
    return torch.stack(cells, dim=2)


class SemanticBranch(nn.Module):
    """Frozen CaffeNet + conv4/conv5 fusion (spec 4.3) + exemplar channel attention (spec 4.4) + its own bias.

    Exemplar -> (B, 256, 8, 8) [conv4 8x8 | conv5 6x6 zero-padded to 8x8]; search -> (B, 256, 22|24, 22|24).
    Trainable: the two 1x1 convs, the four attention FCs, the bias (`trainable_parameters`). Load the trunk with
    `branch.trunk.load_state_dict(load_caffenet_npy(path))`."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = CaffeNetTrunk()
        self.c1x1_conv4 = nn.Conv2d(384, CHANNELS // 2, 1)
        self.c1x1_conv5 = nn.Conv2d(256, CHANNELS // 2, 1)
        for layer, _ in SEMANTIC_LAYERS:
            self.add_module(f"att_fc1_{layer}", nn.Linear(9, 9))  # shared over channels, acts on the 9 cells
            self.add_module(f"att_fc2_{layer}", nn.Linear(9, 1))
        self.bias = nn.Parameter(torch.zeros(1))
        for name, child in self.named_children():
            if name != "trunk":
                init_xavier(child)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Everything but the frozen trunk (what the optimiser gets)."""
        return (p for p in self.parameters() if p.requires_grad)

    def attention(self, layer: str, feature: torch.Tensor, borders: tuple[int, int, int, int]) -> torch.Tensor:
        """xi (B, C) in (0.5, 1.5): sigmoid(fc2(relu(fc1(grid max)))) + 0.5; the +0.5 keeps every channel alive."""
        hidden = F.relu(getattr(self, f"att_fc1_{layer}")(grid_max(feature, borders)))
        return torch.sigmoid(getattr(self, f"att_fc2_{layer}")(hidden))[..., 0] + 0.5

    def _fuse(self, feats: list[torch.Tensor]) -> torch.Tensor:
        width = max(_width(f) for f in feats)
        return torch.cat([_pad_to(f, width) for f in feats], dim=1)

    def exemplar(self, z: torch.Tensor) -> torch.Tensor:
        """Attention on the raw trunk feature, centre crop (conv5 6x6, conv4 8x8), then x scale, 1x1, pad, concat."""
        c4, c5 = self.trunk(z)
        w5 = _width(c5)
        out = []
        for (layer, scale), feat in zip(SEMANTIC_LAYERS, (c4, c5), strict=True):
            borders = exemplar_borders(_width(feat), EXEMPLAR_FEATURE + _width(feat) - w5)
            feat = feat * self.attention(layer, feat, borders)[:, :, None, None]
            feat = feat[:, :, borders[1]:borders[2], borders[1]:borders[2]]
            out.append(getattr(self, f"c1x1_{layer}")(feat * scale))
        return self._fuse(out)

    def search(self, x: torch.Tensor) -> torch.Tensor:
        """No attention, no crop: x scale, 1x1, conv5 part zero-padded to conv4's size, concat."""
        c4, c5 = self.trunk(x)
        return self._fuse([getattr(self, f"c1x1_{layer}")(feat * scale)
                           for (layer, scale), feat in zip(SEMANTIC_LAYERS, (c4, c5), strict=True)])

    def match(self, z_feat: torch.Tensor, x_feat: torch.Tensor) -> torch.Tensor:
        return RESPONSE_SCALE * xcorr(z_feat, x_feat) + self.bias

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.match(self.exemplar(z), self.search(x))


# -- the tracker's network ----------------------------------------------------------------------------------
class SASiam(nn.Module):
    """Both branches for inference: R = c_a r_app + (1 - c_a) r_sem (c_a = 0.3), or r_app alone without a
    semantic branch (the seed's configuration). Zero-padding the appearance part to the semantic size, as the
    upstream inference graph does, leaves its correlation unchanged, so each branch is correlated on its own."""

    def __init__(self, appearance: AppearanceBranch | None = None, semantic: SemanticBranch | None = None,
                 c_appearance: float = C_APPEARANCE):
        super().__init__()
        self.appearance = appearance if appearance is not None else AppearanceBranch()
        self.semantic = semantic
        self.c_appearance = c_appearance

    def exemplar_features(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'z_app': (B,256,6,6)} plus {'z_sem': (B,256,8,8)} with a semantic branch."""
        feats = {"z_app": self.appearance.exemplar(z)}
        if self.semantic is not None:
            feats["z_sem"] = self.semantic.exemplar(z)
        return feats

    def respond(self, x: torch.Tensor, feats: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Search crops (B,3,255,255) against templates of batch B or 1 (broadcast) -> (B,1,17,17)."""
        r_app = self.appearance.match(feats["z_app"], self.appearance.search(x))
        if self.semantic is None:
            return r_app
        r_sem = self.semantic.match(feats["z_sem"], self.semantic.search(x))
        return self.c_appearance * r_app + (1.0 - self.c_appearance) * r_sem

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.respond(x, self.exemplar_features(z))


class ExemplarGraph(nn.Module):
    """Inference graph 1: `exemplar` [1,3,255,255] -> `z_app` [1,256,6,6] (+ `z_sem` [1,256,8,8])."""

    def __init__(self, model: SASiam):
        super().__init__()
        self.model = model

    def forward(self, exemplar: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.exemplar_features(exemplar)
        return (feats["z_app"], feats["z_sem"]) if "z_sem" in feats else feats["z_app"]


class SearchGraph(nn.Module):
    """Inference graph 2: `search` [3,3,255,255], `z_app` (+ `z_sem`) -> `response` [3,1,17,17]."""

    def __init__(self, model: SASiam):
        super().__init__()
        self.model = model

    def forward(self, search: torch.Tensor, z_app: torch.Tensor, z_sem: torch.Tensor | None = None) -> torch.Tensor:
        feats = {"z_app": z_app} if z_sem is None else {"z_app": z_app, "z_sem": z_sem}
        return self.model.respond(search, feats)


TensorList = list[tuple[str, list[int]]]


def graph_io(semantic: bool) -> dict[str, tuple[TensorList, TensorList]]:
    """{'exemplar': (inputs, outputs), 'search': (inputs, outputs)}, each a list of (name, static shape)."""
    s = INFERENCE_SIZE
    score = (s - 127) // STRIDE + 1  # conv5 22 - 6 + 1 = 17 (a 127 input would give exactly the 6x6, spec 3)
    templates: TensorList = [("z_app", [1, CHANNELS, EXEMPLAR_FEATURE, EXEMPLAR_FEATURE])]
    if semantic:
        templates.append(("z_sem", [1, CHANNELS, SEMANTIC_EXEMPLAR, SEMANTIC_EXEMPLAR]))
    return {
        "exemplar": ([("exemplar", [1, 3, s, s])], list(templates)),
        "search": ([("search", [NUM_SCALES, 3, s, s]), *templates], [("response", [NUM_SCALES, 1, score, score])]),
    }


# -- provenance: our state_dict keys <- upstream TF variables -----------------------------------------------
def _appearance_variables() -> dict[str, tuple[str, ...]]:
    scope = "sa_siam/appearance_net"
    out: dict[str, tuple[str, ...]] = {}
    for i in range(1, 6):
        parts = (f"conv{i}/b1", f"conv{i}/b2") if i in (2, 4, 5) else (f"conv{i}",)
        out[f"conv{i}.weight"] = tuple(f"{scope}/{p}/weights" for p in parts)
        if i == 5:
            out["conv5.bias"] = tuple(f"{scope}/{p}/biases" for p in parts)
            continue
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            out[f"bn{i}.{ours}"] = tuple(f"{scope}/{p}/BatchNorm/{theirs}" for p in parts)
        out[f"bn{i}.num_batches_tracked"] = ()  # PyTorch's counter; unused with a fixed momentum
    out["bias"] = ("detection/biases",)
    return out


def _semantic_variables() -> dict[str, tuple[str, ...]]:
    scope = "sa_siam/semantic_net"
    out: dict[str, tuple[str, ...]] = {}
    for i in range(1, 6):  # the caffenet.npy layers, split by upstream into b1/b2 for conv2/4/5 (spec 4.2)
        parts = (f"conv{i}/b1", f"conv{i}/b2") if i in (2, 4, 5) else (f"conv{i}",)
        out[f"trunk.conv{i}.weight"] = tuple(f"{scope}/{p}/weights" for p in parts)
        out[f"trunk.conv{i}.bias"] = tuple(f"{scope}/{p}/biases" for p in parts)
    for layer, _ in SEMANTIC_LAYERS:
        out[f"c1x1_{layer}.weight"] = (f"{scope}/c1x1_{layer}/weights",)
        out[f"c1x1_{layer}.bias"] = (f"{scope}/c1x1_{layer}/biases",)
    for layer, _ in SEMANTIC_LAYERS:
        for fc in ("att_fc1", "att_fc2"):
            out[f"{fc}_{layer}.weight"] = (f"{scope}/{fc}_{layer}/weights",)  # [in, out]: transposed
            out[f"{fc}_{layer}.bias"] = (f"{scope}/{fc}_{layer}/biases",)
    out["bias"] = ("detection/biases",)
    return out


# Each branch's own checkpoint holds `detection/biases`; upstream's combined inference graph renames them
# `detection/biases_appearance` / `detection/biases_semantic` and strips the suffix when restoring (spec 6).
APPEARANCE_TF_VARIABLES: dict[str, tuple[str, ...]] = _appearance_variables()
SEMANTIC_TF_VARIABLES: dict[str, tuple[str, ...]] = _semantic_variables()
TF_VARIABLES: dict[str, tuple[str, ...]] = {
    **{f"appearance.{k}": v for k, v in APPEARANCE_TF_VARIABLES.items()},
    **{f"semantic.{k}": v for k, v in SEMANTIC_TF_VARIABLES.items()},
}


def state_dict_from_tf(variables: Mapping[str, np.ndarray], mapping: Mapping[str, tuple[str, ...]],
                       *, source: str = "TF variables") -> dict[str, torch.Tensor]:
    """Convert upstream variables (name -> array, e.g. read from a TF checkpoint) into our keys: conv weights
    HWIO -> OIHW, FC weights [in, out] -> [out, in], b1/b2 halves concatenated on the output axis."""
    out: dict[str, torch.Tensor] = {}
    for key, names in mapping.items():
        if not names:
            out[key] = torch.tensor(0, dtype=torch.long)  # num_batches_tracked
            continue
        missing = [n for n in names if n not in variables]
        if missing:
            raise CheckpointError(source, f"variable(s) {missing} missing (for {key})")
        arrays = []
        for n in names:
            a = np.asarray(variables[n], dtype=np.float32)
            arrays.append(a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T if a.ndim == 2 else a)
        out[key] = torch.from_numpy(np.ascontiguousarray(np.concatenate(arrays, axis=0)))
    return out
