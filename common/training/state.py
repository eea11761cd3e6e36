"""Training checkpoints: the upstream snapshot format plus what an exact resume needs.

A file holds `{"epoch", "state_dict", "optimizer"}` exactly as pysot writes its snapshots (so the weights load
strictly into the inference model and upstream tools can read it), plus a `"zoo"` table: the iteration reached,
the epoch whose optimizer configuration the optimizer state belongs to, the world size and every rank's RNG
states. Everything is plain tensors / numbers / strings, so `torch.load(weights_only=True)` reads it back.
Files are written to a temporary name and renamed: an interrupted save never leaves a truncated checkpoint.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.checkpoint import load_checkpoint
from common.errors import CheckpointError

FORMAT = 1


def capture_rng() -> dict[str, Any]:
    """This process's python / numpy / torch (and CUDA) generator states, as weights_only-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    random.setstate(_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuple(x: Any) -> Any:
    return tuple(_tuple(v) for v in x) if isinstance(x, list | tuple) else x


@dataclass(frozen=True)
class ResumePoint:
    """What a checkpoint says about where training stood."""

    iteration: int  # steps completed
    optimizer_epoch: int  # the epoch configuration the optimizer state belongs to
    world_size: int
    rng: list[dict[str, Any]]  # per rank


def save_checkpoint(path: Path, *, epoch: int, state_dict: Mapping[str, torch.Tensor],
                    optimizer: Mapping[str, Any], resume: ResumePoint, extra: Mapping[str, Any] | None = None) -> Path:
    """Write an upstream-format snapshot with the resume table, atomically."""
    obj = {"epoch": epoch, "state_dict": dict(state_dict), "optimizer": dict(optimizer),
           "zoo": {"format": FORMAT, "iteration": resume.iteration, "optimizer_epoch": resume.optimizer_epoch,
                   "world_size": resume.world_size, "rng": list(resume.rng), **(extra or {})}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class LoadedCheckpoint:
    epoch: int
    state_dict: Mapping[str, torch.Tensor]
    optimizer: Mapping[str, Any] | None
    resume: ResumePoint | None  # None: a plain upstream snapshot (weights + optimizer, no exact position)


def read_checkpoint(path: Path) -> LoadedCheckpoint:
    """Read a snapshot written here or by upstream (weights_only); the error names the file and the problem."""
    obj = load_checkpoint(path)
    if "state_dict" not in obj or not isinstance(obj["state_dict"], Mapping):
        raise CheckpointError(path, "not a training checkpoint: no 'state_dict' table (keys: "
                                    f"{sorted(obj)[:8]})")
    epoch = obj.get("epoch")
    if not isinstance(epoch, int):
        raise CheckpointError(path, f"'epoch' must be an integer, got {epoch!r}")
    zoo = obj.get("zoo")
    resume = None
    if isinstance(zoo, Mapping):
        if zoo.get("format") != FORMAT:
            raise CheckpointError(path, f"resume table format {zoo.get('format')!r}, this zoo reads {FORMAT}")
        resume = ResumePoint(int(zoo["iteration"]), int(zoo["optimizer_epoch"]), int(zoo["world_size"]),
                             list(zoo["rng"]))
    return LoadedCheckpoint(epoch, obj["state_dict"], obj.get("optimizer"), resume)
