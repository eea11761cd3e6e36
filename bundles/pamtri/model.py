"""PAMTRI MultiTaskNet, DenseNet-121 multitask variant, written from shared/specs/pamtri.md section 1.

Reproduces `MultiTaskNet/torchreid/models/densenet.py` of NVlabs/PAMTRI @ 25564bb (NVIDIA Source Code License-NC)
for the plain multitask configuration (3 input channels, no keypoints/heatmaps/segments), as patched by the Ascend
ModelZoo port (`densenet.patch`: a constant pooling kernel for ONNX; numerics unchanged). What differs from upstream:

* the DenseNet-121 backbone is our own module tree with torchvision's module names (the checkpoint's keys freeze
  them) and is built **without** ImageNet weights: upstream downloads them in the constructor (spec 1.6) only for
  the checkpoint to overwrite every tensor;
* the global pool is `adaptive_avg_pool2d(1)` (= the mean over the 8x8 map for a 256 input, exported as
  GlobalAveragePool), so no shape value leaks into the traced graph;
* loading is strict (spec 1.5): upstream keeps only matching keys and silently drops the rest.

Outputs (spec 1.1), same in train and eval mode: ``(y_id, y_color, y_type, f_vid)``; the re-ID embedding is
``f_vid`` (1024-d, after leaky ReLU, not normalised).

Order: blocks, then the model, then the checkpoint filter, then the factory.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import CheckpointError

log = logging.getLogger("zoo.pamtri")

GROWTH_RATE = 32
BN_SIZE = 4  # bottleneck width = BN_SIZE * GROWTH_RATE = 128
BLOCK_CONFIG = (6, 12, 24, 16)
INIT_FEATURES = 64
NUM_FEATURES = 1024  # channels of norm5 for DenseNet-121

NUM_VIDS, NUM_VCOLORS, NUM_VTYPES = 575, 10, 9  # head sizes of the released checkpoint (spec 1.1)
OUTPUT_NAMES = ("y_id", "y_color", "y_type", "f_vid")
EMBEDDING_NAME = "f_vid"  # the re-ID feature, selected by name (never by position)


# ---------------------------------------------------------------------------------------------------------------
# blocks


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bottleneck 128) -> BN-ReLU-conv3x3 (growth 32), no conv bias (spec 1.2).

    Takes the list of earlier feature maps and concatenates them first, in the order [block input, layer 1, ...]."""

    def __init__(self, in_channels: int):
        super().__init__()
        mid = BN_SIZE * GROWTH_RATE
        # Registration order = state_dict order = torchvision's: norm1, relu1, conv1, norm2, relu2, conv2.
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, mid, kernel_size=1, stride=1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, GROWTH_RATE, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(inputs, dim=1)
        x = self.conv1(self.relu1(self.norm1(x)))
        return self.conv2(self.relu2(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    """`num_layers` dense layers named denselayer1..N; the output concatenates the input and every layer's output."""

    def __init__(self, num_layers: int, in_channels: int):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_channels + i * GROWTH_RATE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 (halves the channels, no bias) -> 2x2 average pool, stride 2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_channels))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False))
        self.add_module("pool", nn.AvgPool2d(kernel_size=2, stride=2))


def densenet121_features() -> nn.Sequential:
    """torchvision's DenseNet-121 `features` (conv0 ... norm5), randomly initialised; ends with BatchNorm norm5
    and **no** ReLU (PAMTRI pools the BN output directly)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv0=nn.Conv2d(3, INIT_FEATURES, kernel_size=7, stride=2, padding=3, bias=False),
        norm0=nn.BatchNorm2d(INIT_FEATURES),
        relu0=nn.ReLU(inplace=True),
        pool0=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    channels = INIT_FEATURES
    for b, num_layers in enumerate(BLOCK_CONFIG, start=1):
        layers[f"denseblock{b}"] = DenseBlock(num_layers, channels)
        channels += num_layers * GROWTH_RATE
        if b != len(BLOCK_CONFIG):
            layers[f"transition{b}"] = Transition(channels, channels // 2)
            channels //= 2
    layers["norm5"] = nn.BatchNorm2d(channels)
    assert channels == NUM_FEATURES
    return nn.Sequential(layers)


# ---------------------------------------------------------------------------------------------------------------
# model


class MultiTaskDenseNet121(nn.Module):
    """PAMTRI MultiTaskNet on DenseNet-121 (Tang et al., ICCV 2019), plain multitask variant.

    ``forward(input (Tensor[B, 3, H, W]))`` returns ``y_id (Tensor[B, 575])``, ``y_color (Tensor[B, 10])``,
    ``y_type (Tensor[B, 9])`` (logits, not softmaxed) and ``f_vid (Tensor[B, 1024])``, the re-ID embedding.
    """

    def __init__(self, num_vids: int = NUM_VIDS, num_vcolors: int = NUM_VCOLORS, num_vtypes: int = NUM_VTYPES):
        super().__init__()
        self.base = densenet121_features()
        # Attribute order = upstream's state_dict order: the three branches, then the three classifiers.
        self.fc_vid = nn.Linear(NUM_FEATURES, 1024)
        self.fc_vcolor = nn.Linear(NUM_FEATURES, 512)
        self.fc_vtype = nn.Linear(NUM_FEATURES, 512)
        self.classifier_vid = nn.Linear(1024, num_vids)
        self.classifier_vcolor = nn.Linear(512, num_vcolors)
        self.classifier_vtype = nn.Linear(512, num_vtypes)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # noqa: A002 - the graph's input name
        x = self.base(input)
        f = F.adaptive_avg_pool2d(x, 1).flatten(1)  # mean over the whole map (upstream: avg_pool2d, kernel = map)
        f_vid = F.leaky_relu(self.fc_vid(f), negative_slope=0.01)
        f_vcolor = F.leaky_relu(self.fc_vcolor(f), negative_slope=0.01)
        f_vtype = F.leaky_relu(self.fc_vtype(f), negative_slope=0.01)
        return self.classifier_vid(f_vid), self.classifier_vcolor(f_vcolor), self.classifier_vtype(f_vtype), f_vid


# ---------------------------------------------------------------------------------------------------------------
# checkpoint filter

# torchvision <= 0.2.x registered dense-layer modules as "norm.1", "conv.2", ... (spec addendum).
_LEGACY_DENSE_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:1|2)\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def checkpoint_filter_fn(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap the container (``{'state_dict': ..., 'rank1': ..., 'epoch': ...}`` or ``'model'``), strip DDP's
    ``module.`` prefix and rename legacy ``denselayerN.norm.1.weight`` keys to ``denselayerN.norm1.weight``.

    Pure: returns a new dict and leaves its argument untouched; every other key passes through unchanged so the
    strict load can name it."""
    for container in ("state_dict", "model"):
        inner = state_dict.get(container)
        if isinstance(inner, Mapping):
            state_dict = inner
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        key = _LEGACY_DENSE_KEY.sub(lambda m: m.group(1) + m.group(2), key)
        out[key] = value
    return out


def count_legacy_keys(state_dict: Mapping[str, Any]) -> int:
    """How many keys :func:`checkpoint_filter_fn` renames from the legacy dense-layer spelling (for the report)."""
    return sum(1 for k in checkpoint_filter_fn(state_dict) if k not in state_dict and f"module.{k}" not in state_dict)


def _fill_num_batches_tracked(state_dict: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Add the BatchNorm counters a pre-0.4.1 checkpoint lacks (spec 1.5: unused in eval, the only missing keys
    allowed), but only when they are the *only* missing keys: otherwise the strict load must list everything.
    Returns the keys added so the caller can report them."""
    missing = [k for k in model.state_dict() if k not in state_dict]
    if not missing or not all(k.endswith(".num_batches_tracked") for k in missing):
        return []
    for k in missing:
        state_dict[k] = torch.zeros((), dtype=torch.long)
    return missing


# ---------------------------------------------------------------------------------------------------------------
# factory


def checkpoint_safe_globals() -> list[Any]:
    """The only non-tensor types the checkpoint container may hold: the numpy scalar its ``rank1`` was pickled as
    (a float32 CMC entry, spec 1.4) and the dtype object the scalar needs. Old pickles name the scalar under
    ``numpy.core``, numpy 2 under ``numpy._core``; both spellings map to the same function."""
    scalar = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar  # numpy 2 / numpy 1
    return [
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        np.dtype,
        type(np.dtype(np.float32)),
        type(np.dtype(np.float64)),
    ]


def _pickled_globals(path: str | Path) -> list[str]:
    """The non-tensor types a checkpoint pickles (names only; nothing is executed), to say what was refused."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - diagnostics only; the refusal itself already stands
        return ["<unreadable>"]


def load_pamtri_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read `path` with the safe (weights_only) unpickler; returns the filtered state_dict and the container's
    metadata (``rank1``, ``epoch``, ``legacy_keys_renamed``) for the report."""
    from common.checkpoint import load_checkpoint

    try:
        obj = load_checkpoint(path, safe_globals=checkpoint_safe_globals())
    except CheckpointError as e:
        raise CheckpointError(path, f"{e.problem}; globals it pickles: {_pickled_globals(path)}") from None
    meta: dict[str, Any] = {k: (float(v) if isinstance(v, np.generic) else v)
                            for k, v in obj.items() if k in ("rank1", "epoch")}
    meta["legacy_keys_renamed"] = count_legacy_keys(obj.get("state_dict", obj))
    return checkpoint_filter_fn(obj), meta


def pamtri_densenet121(
    state_dict: Mapping[str, Any] | None = None, *, source: str = "PAMTRI checkpoint"
) -> MultiTaskDenseNet121:
    """The VeRi multitask model (575/10/9 heads) in eval mode; strict load of `state_dict` (raw container or
    filtered) when given. Only missing ``num_batches_tracked`` counters are tolerated; any other missing,
    unexpected or mis-shaped key raises CheckpointError listing them."""
    from common.checkpoint import load_strict
    from common.upstream import bundle_upstream_keys

    model = MultiTaskDenseNet121()
    if state_dict is not None:
        sd = checkpoint_filter_fn(state_dict)
        added = _fill_num_batches_tracked(sd, model)
        if added:
            log.warning("%s: %d BatchNorm num_batches_tracked counters absent (pre-0.4.1 checkpoint), set to 0; "
                        "unused in eval", source, len(added))
        load_strict(model, sd, source=source, upstream=bundle_upstream_keys("pamtri"))
    return model.eval()
