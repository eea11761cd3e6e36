"""The plots of report.html (and bench.html / the training report): each function returns a matplotlib Figure.

Figures are built with the object-oriented API on an Agg canvas, never through pyplot: no global figure registry
to leak from a long run, no display needed, and safe to call from any thread. `figure_png` turns one into bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

TRAIN_LOG = "train_log.jsonl"  # common.training.loop.LOG_FILE, repeated so plotting never imports torch


def new_figure(width: float, height: float) -> Figure:
    """An empty figure on its own Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, *, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (no 'Software' text chunk: the bytes depend only on the plot)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


# -- detection --------------------------------------------------------------------------------------------------
def pr_curves_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], *, title: str,
                     columns: int = 5) -> Figure:
    """One small precision/recall panel per class: {class: (recall, precision, AP in [0, 1])}, curves in sorted
    detection order as common.metrics.voc computes them. A class without detections or without non-difficult
    ground truth (NaN recall) gets a labelled empty panel instead of a curve."""
    rows = max(1, math.ceil(len(curves) / columns))
    fig = new_figure(2.3 * columns, 2.0 * rows + 0.4)
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, (name, (recall, precision, ap)) in zip(axes, curves.items(), strict=False):
        recall, precision = np.asarray(recall, float), np.asarray(precision, float)
        ax.set_title(f"{name}  AP {100 * ap:.1f}", fontsize=8)
        if recall.size == 0 or not np.isfinite(recall).any():
            why = "no detections" if recall.size == 0 else "no ground truth"
            ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=8, color="grey", transform=ax.transAxes)
        else:
            ax.plot(recall, precision, lw=1.2)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[len(curves):]:
        ax.set_visible(False)
    fig.supxlabel("recall", fontsize=9)
    fig.supylabel("precision", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return fig


# -- re-identification ------------------------------------------------------------------------------------------
def cmc_figure(cmc: np.ndarray, mean_ap: float, *, title: str) -> Figure:
    """CMC curve, rank 1..len(cmc) (`cmc[r-1]` in [0, 1]), with the mAP (in [0, 1]) in the title."""
    cmc = np.asarray(cmc, float)
    ranks = np.arange(1, cmc.size + 1)
    fig = new_figure(7, 4.2)
    ax = fig.add_subplot()
    ax.plot(ranks, 100 * cmc, "-o", ms=3)
    for r in (1, 5, 10, 20, 50):
        if r <= cmc.size:
            ax.annotate(f"{100 * cmc[r - 1]:.1f}", (r, 100 * cmc[r - 1]), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=7)
    ax.set(xlabel="rank", ylabel="matching rate (%)", xlim=(0.5, max(cmc.size, 1) + 0.5), ylim=(0, 105),
           title=f"{title}: CMC, mAP {100 * mean_ap:.2f} %")
    ax.grid(alpha=0.3)
    return fig


# -- VOT --------------------------------------------------------------------------------------------------------
def eao_figure(curve: np.ndarray, interval: tuple[int, int], eao: float, *, title: str) -> Figure:
    """Expected average overlap against sequence length (curve[0] is length 1), the EAO interval shaded and the
    EAO (the curve's mean over it) drawn across it."""
    curve = np.asarray(curve, float)
    lengths = np.arange(1, curve.size + 1)
    fig = new_figure(7, 4.2)
    ax = fig.add_subplot()
    ax.plot(lengths, curve, lw=1.5, label="expected average overlap")
    low, high = interval
    if high >= low > 0:
        ax.axvspan(low, high, color="tab:orange", alpha=0.15, label=f"EAO interval [{low}, {high}]")
        if math.isfinite(eao):
            ax.hlines(eao, low, high, colors="tab:red", lw=2, label=f"EAO {eao:.3f}")
    ax.set(xlabel="sequence length (frames)", ylabel="expected average overlap", ylim=(0, 1.02),
           xlim=(1, max(curve.size, high, 2)), title=f"{title}: EAO curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return fig


def vot_sequences_figure(per_sequence: Sequence[Any], *, title: str) -> Figure:
    """Per-sequence accuracy and failures (bars); items have `name`, `accuracy`, `failures` (VOT SequenceScore)."""
    names = [s.name for s in per_sequence]
    x = np.arange(len(names))
    fig = new_figure(max(6.0, 0.35 * len(names) + 2), 5)
    ax_a, ax_f = fig.subplots(2, 1, sharex=True)
    ax_a.bar(x, [s.accuracy if math.isfinite(s.accuracy) else 0.0 for s in per_sequence], color="tab:blue")
    ax_a.set(ylabel="accuracy", ylim=(0, 1), title=f"{title}: per-sequence accuracy and failures")
    ax_f.bar(x, [s.failures for s in per_sequence], color="tab:red")
    ax_f.set(ylabel="failures")
    ax_f.yaxis.get_major_locator().set_params(integer=True)
    ax_f.set_xticks(x, names, rotation=60 if len(names) > 8 else 0, ha="right" if len(names) > 8 else "center",
                    fontsize=7)
    for ax in (ax_a, ax_f):
        ax.grid(alpha=0.3, axis="y")
    return fig


# -- OTB --------------------------------------------------------------------------------------------------------
def otb_figure(results: Mapping[str, np.ndarray], gts: Mapping[str, np.ndarray], *, title: str) -> Figure:
    """OTB success and precision plots (the mean curves of common.tracking.otb.otb_curves, so the legend values
    equal evaluate_otb's), with each sequence's curve faintly behind."""
    from common.tracking.otb import PRECISION_THRESHOLDS, SUCCESS_THRESHOLDS, otb_curves

    curves = otb_curves(results, gts)
    success = np.mean([s for s, _ in curves.values()], axis=0)
    precision = np.mean([p for _, p in curves.values()], axis=0)
    fig = new_figure(11, 4.5)
    ax_s, ax_p = fig.subplots(1, 2)
    for s, p in curves.values():
        ax_s.plot(SUCCESS_THRESHOLDS, s, color="grey", lw=0.6, alpha=0.4)
        ax_p.plot(PRECISION_THRESHOLDS, p, color="grey", lw=0.6, alpha=0.4)
    ax_s.plot(SUCCESS_THRESHOLDS, success, "-o", ms=3, label=f"AUC {success.mean():.3f}")
    ax_s.set(xlabel="overlap threshold", ylabel="success rate", xlim=(0, 1), ylim=(0, 1.02),
             title=f"success plot of OPE ({len(curves)} sequences)")
    ax_p.plot(PRECISION_THRESHOLDS, precision, "-", label=f"precision@20 {precision[20]:.3f}")
    ax_p.axvline(20, color="grey", lw=0.8, ls="--")
    ax_p.set(xlabel="location error threshold (px)", ylabel="precision", xlim=(0, PRECISION_THRESHOLDS[-1]),
             ylim=(0, 1.02), title="precision plot of OPE")
    ax_s.legend(loc="lower left")
    ax_p.legend(loc="lower right")
    for ax in (ax_s, ax_p):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


# -- training ---------------------------------------------------------------------------------------------------
def training_figure(records: Sequence[Mapping[str, Any]], *, title: str) -> Figure:
    """Loss terms, learning rate per parameter group and throughput (pairs/s, with the data wait) against the
    step, from the records of a train_log.jsonl (common.training.log)."""
    if not records:
        raise ValueError("no training records to plot (empty train_log.jsonl)")
    steps = [r["step"] for r in records]
    keys = sorted({k for r in records for k in r})

    def series(k: str) -> list[float]:
        return [float(r.get(k, float("nan"))) for r in records]

    fig = new_figure(8, 8.5)
    ax_l, ax_r, ax_t = fig.subplots(3, 1, sharex=True)
    for k in (k for k in keys if k.endswith("loss")):
        ax_l.plot(steps, series(k), label=k)
    ax_l.set(ylabel="loss (rank mean)", title=title)
    ax_l.legend(loc="upper right", fontsize=8)
    lr_keys = [k for k in keys if k.startswith("lr")]
    for k in lr_keys:
        ax_r.plot(steps, series(k), label=k)
    ax_r.set_ylabel("learning rate")
    if lr_keys and all(v > 0 for k in lr_keys for v in series(k) if math.isfinite(v)):
        ax_r.set_yscale("log")  # the warm-up and step schedules span decades
    if lr_keys:
        ax_r.legend(loc="upper right", fontsize=8)
    ax_t.plot(steps, series("pairs_per_s"), label="pairs/s (all ranks)")
    ax_t.set(ylabel="pairs/s", xlabel="step")
    wait = ax_t.twinx()
    wait.plot(steps, series("data_wait_s"), color="tab:red", alpha=0.5, label="data wait (s)")
    wait.set_ylabel("data wait (s)")
    ax_t.legend(loc="upper left", fontsize=8)
    wait.legend(loc="upper right", fontsize=8)
    for ax in (ax_l, ax_r, ax_t):
        ax.grid(alpha=0.3)
    return fig


def training_logs(train_dir: Path) -> list[Path]:
    """The train_log.jsonl files of a training run directory, or of the runs one level below it (a demo's
    `run_dir/train/<run>/`), in name order."""
    if (train_dir / TRAIN_LOG).is_file():
        return [train_dir / TRAIN_LOG]
    return sorted(train_dir.glob(f"*/{TRAIN_LOG}"))


def training_figures(train_dir: Path, *, title: str) -> list[tuple[str, Figure]]:
    """One (title, figure) per training log under `train_dir` (see training_logs)."""
    from common.training.log import read_jsonl

    out = []
    for log in training_logs(train_dir):
        name = title if log.parent == train_dir else f"{title}: {log.parent.name}"
        out.append((f"{name} (loss, LR, throughput)", training_figure(read_jsonl(log), title=name)))
    return out


# -- speed ------------------------------------------------------------------------------------------------------
def bench_figure(rows: Sequence[Mapping[str, float]], published: Sequence[Any], *, title: str) -> Figure:
    """Throughput against batch size: this machine's pure-inference and end-to-end fps (rows of
    common.bench.run_bench) beside each published table (manifest [[throughput]]: hardware, convention, unit,
    per_batch). Log scale: a CPU and an NPU differ by orders of magnitude."""
    fig = new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    batches = [int(r["batch"]) for r in rows]
    ax.plot(batches, [r["pure_fps"] for r in rows], "-o", label="measured: pure inference")
    ax.plot(batches, [r["e2e_fps"] for r in rows], "-s", label="measured: end to end")
    for t in published:
        pts = sorted(t.per_batch.items())
        ax.plot([b for b, _ in pts], [v for _, v in pts], "--^", label=f"published {t.hardware} ({t.convention})")
    all_b = sorted(set(batches) | {b for t in published for b in t.per_batch})
    ax.set_xscale("log", base=2)
    if all_b:
        ax.set_xticks(all_b, [str(b) for b in all_b])
    ax.set_yscale("log")
    ax.set(xlabel="batch size", ylabel=f"{published[0].unit if published else 'fps'}", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def bars_figure(values: Mapping[str, float], *, ylabel: str, title: str) -> Figure:
    """One bar per named measurement (e.g. a training bench's pairs/s per measure)."""
    fig = new_figure(7, 4)
    ax = fig.add_subplot()
    names = list(values)
    ax.bar(np.arange(len(names)), [values[n] for n in names], color="tab:blue")
    ax.set_xticks(np.arange(len(names)), names, fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, axis="y")
    return fig
