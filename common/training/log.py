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
    """Loss terms, learning rate and throughput against the step (common.plots.training_figure, the HTML report's);
    None without records."""
    if not records:
        return None
    from common.plots import figure_png, training_figure

    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(figure_png(training_figure(records, title=title), dpi=100))
    return png
