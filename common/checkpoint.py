"""Checkpoint loading: `weights_only=True` always, strict key/shape matching with every mismatch listed."""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.errors import CheckpointError, InputError
from common.upstream import UpstreamKeys


def load_checkpoint(path: str | Path, *, safe_globals: Iterable[Any] = ()) -> Mapping[str, Any]:
    """Load a .pth/.pth.tar with torch's safe unpickler. `safe_globals` lists the only extra types allowed
    (e.g. numpy scalar types a checkpoint pickled for its metadata); arbitrary code is never executed."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file not found")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(path, f"refused by the safe (weights_only) loader: {first}") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(path, f"not a readable torch checkpoint: {e}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"expected a mapping (state_dict), got {type(obj).__name__}")
    return obj


def unwrap_state_dict(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The state_dict inside a training checkpoint (`{"state_dict": ..., "epoch": ...}`) or the mapping itself, with
    DDP's `module.` prefix stripped; every other key unchanged, so a strict load can name it."""
    inner = obj.get("state_dict")
    if isinstance(inner, Mapping):
        obj = inner
    return {k.removeprefix("module."): v for k, v in obj.items()}


def with_batch_counters(state_dict: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """BatchNorm `num_batches_tracked` counters made optional: filled with 0 where `model` has one and the file
    does not (old checkpoints; no effect with a fixed momentum or in eval), dropped where the model has none."""
    expected = model.state_dict()
    out = {k: v for k, v in state_dict.items() if not (k.endswith("num_batches_tracked") and k not in expected)}
    for k, v in expected.items():
        if k.endswith("num_batches_tracked") and k not in out:
            out[k] = torch.zeros_like(v)
    return out


def load_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    upstream: UpstreamKeys | None = None,
) -> None:
    """Load with every key and shape required to match; the error lists missing (with the shape expected),
    unexpected and mis-shaped keys (upstream loaders that silently drop keys hide a wrong checkpoint behind a
    plausible-looking result). `upstream`, the bundle's upstream key list, is named in the error: the model's keys
    are the upstream ones (the bundle tests hold them equal), so a missing key is the upstream key the file lacks."""
    expected = model.state_dict()
    missing = [f"{k} {tuple(v.shape)}" for k, v in expected.items() if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(getattr(state_dict[k], "shape", ())) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                shown = ", ".join(items[:12]) + (f", ... ({len(items)} total)" if len(items) > 12 else "")
                parts.append(f"{len(items)} {label}: {shown}")
        if upstream is not None:
            parts.append(f"upstream keys: {upstream.reference()}")
        raise CheckpointError(source, "keys do not match the model; " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


def random_state_dict(model: nn.Module, *, seed: int) -> dict[str, torch.Tensor]:
    """`model`'s keys and shapes with deterministic random values whose activations stay finite through deep
    stacks (demo stand-in for published weights): He-scaled conv/linear weights, BatchNorm close to identity with
    **positive** running variances (a plain randn makes some negative and BN outputs NaN), other vectors small."""
    gen = torch.Generator().manual_seed(seed)
    bn = {f"{name}.{p}": p for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
          for p in ("weight", "running_var")}
    sd = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
            sd[k] = v.clone()
            continue
        randn = torch.randn(v.shape, generator=gen)
        if v.ndim > 1:
            sd[k] = randn * (2.0 / max(1, v[0].numel())) ** 0.5
        elif bn.get(k) == "weight":
            sd[k] = 1.0 + 0.1 * randn
        elif bn.get(k) == "running_var":
            sd[k] = 0.5 + torch.rand(v.shape, generator=gen)
        else:  # biases, BN shifts and means, per-channel scales such as RefineDet's L2Norm
            sd[k] = 0.01 * randn
        sd[k] = sd[k].to(v.dtype)
    return sd


def save_random_checkpoint(model: nn.Module, path: Path, *, seed: int) -> Path:
    """Write `random_state_dict(model, seed=seed)` to `path` atomically."""
    sd = random_state_dict(model, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(sd, tmp)
    tmp.replace(path)
    return path
