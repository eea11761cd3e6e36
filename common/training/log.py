"""What rank 0 records while training: a JSONL log (one object per logged step), progress on the terminal (a tqdm
bar) or periodic plain lines when stderr is not a terminal (containers, CI), and the loss / LR / throughput plot."""

from __future__ import annotations

import json
import logging
import sys
import time
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


class Progress:
    """Steps done, steps/s and ETA: a tqdm bar on a terminal, else a plain log line every `every_s` seconds."""

    def __init__(self, total: int, initial: int = 0, *, desc: str = "train", enabled: bool = True,
                 every_s: float = 30.0, unit: str = "step"):
        self.total, self.done, self.desc, self.unit = total, initial, desc, unit
        self.enabled, self.every_s = enabled, every_s
        self._t0 = time.monotonic()
        self._start = initial
        self._last = 0.0
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)

    def update(self, n: int = 1, **postfix: float) -> None:
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            print(self.line(postfix), file=sys.stderr, flush=True)

    def line(self, postfix: Mapping[str, float] | None = None) -> str:
        elapsed = time.monotonic() - self._t0
        rate = (self.done - self._start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        extra = " ".join(f"{k}={v:.4g}" for k, v in (postfix or {}).items())
        eta_s = time.strftime("%H:%M:%S", time.gmtime(eta)) if eta != float("inf") else "?"
        return (f"{self.desc}: {self.done}/{self.total} {self.unit}s ({100 * self.done / max(1, self.total):.1f} %), "
                f"{rate:.3g} {self.unit}/s, ETA {eta_s} {extra}").rstrip()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


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
