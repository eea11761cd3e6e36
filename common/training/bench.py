"""Training-throughput measurement shared by the training bundles' `zoo bench`: the real loop (`zoo train` under
torchrun) for a few steps, read back from its JSONL log."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path

from common.errors import ZooError
from common.training.launch import LaunchSpec, launch, train_args
from common.training.log import read_jsonl
from common.training.loop import LOG_FILE


def loop_throughput(bundle: str, out: Path, overrides: Mapping[str, str], *, processes: int, stop_after: int,
                    device: str = "cpu", workers: int = 1) -> float:
    """Median pairs (examples) per second over all ranks of the logged steps after the first (which includes
    start-up), for `stop_after` iterations of `zoo train <bundle>` on `processes` processes."""
    args = train_args(bundle, out, overrides, "--stop-after", str(stop_after), device=device, workers=workers)
    if launch(LaunchSpec(processes), args) != 0:
        raise ZooError(f"benchmark training run failed (the failing rank is named above): {out}")
    rates = [r["pairs_per_s"] for r in read_jsonl(out / LOG_FILE)[1:]]
    if not rates:
        raise ZooError(f"benchmark training run logged fewer than 2 steps: {out / LOG_FILE}")
    return statistics.median(rates)
