"""What rank 0 records while training: a JSONL log (one object per logged step) and the loss / LR / throughput
plot (progress: common.progress)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("zoo.train")


class JsonlLog:
    """Append-only JSONL; each line flushed so a crash loses nothing already logged. On resume, lines past the
    resume point are dropped first (they belong to the steps about to be redone)."""

    def __init__(self, path: Path, *, resume_from_step: int | None = None):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from_step is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_from_step]
            path.write_text("".join(line + "\n" for line in kept))
        self._fh = path.open("a")

    def write(self, record: Mapping[str, Any]) -> None:
        self._fh.write(json.dumps(record, default=float) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training(records: list[Mapping[str, Any]], png: Path, *, title: str = "training") -> Path | None:
    """Loss terms, learning rate and throughput against the step (matplotlib, headless); None without records."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    loss_keys = [k for k in records[0] if k.endswith("loss")]
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for k in loss_keys:
        axes[0].plot(steps, [r.get(k, float("nan")) for r in records], label=k)
    axes[0].set_ylabel("loss (rank mean)")
    axes[0].legend(loc="upper right")
    lr_keys = [k for k in records[0] if k.startswith("lr")]
    for k in lr_keys:
        axes[1].plot(steps, [r.get(k, float("nan")) for r in records], label=k)
    axes[1].set_ylabel("learning rate")
    axes[1].set_yscale("log")
    if lr_keys:
        axes[1].legend(loc="upper right")
    axes[2].plot(steps, [r.get("pairs_per_s", float("nan")) for r in records], label="pairs/s (all ranks)")
    axes[2].set_ylabel("throughput")
    axes[2].set_xlabel("step")
    ax2 = axes[2].twinx()
    ax2.plot(steps, [r.get("data_wait_s", float("nan")) for r in records], color="tab:red", alpha=0.5,
             label="data wait (s)")
    ax2.set_ylabel("data wait (s)")
    axes[0].set_title(title)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
