"""`zoo compare RUN_A RUN_B`: two runs of the same bundle side by side, so a user sees where an accuracy gap comes
from: provenance differences (backend, device, weights, exported models ...), every metric (A, B, B - A), and
per-item values recomputed from each run's files (per-class AP for refinedet, per-sequence accuracy / failures for
the VOT trackers, per-sequence OTB AUC / precision for sa_siam, per-query AP for pamtri). Items that differ come
first, largest |difference| first; identical ones are counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from common.errors import InputError


@dataclass(frozen=True)
class Diff:
    """One quantity in both runs (None: absent from that run)."""

    item: str
    a: float | None
    b: float | None

    @property
    def difference(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def same(self) -> bool:
        from common.verify import numbers_match  # lazily: common.verify imports torch

        if self.a is None or self.b is None:
            return self.a is None and self.b is None
        return numbers_match(self.a, self.b)

    def magnitude(self) -> float:
        """|B - A| for sorting; an item missing or NaN on one side sorts first."""
        d = self.difference
        return math.inf if d is None or math.isnan(d) else abs(d)


@dataclass
class ItemTable:
    """Per-item values of one quantity: the differing items sorted by |difference|, the rest counted."""

    title: str
    item_label: str
    differing: list[Diff]
    identical: int

    @classmethod
    def build(cls, title: str, item_label: str, a: Mapping[str, float], b: Mapping[str, float]) -> ItemTable:
        diffs = [Diff(k, _num(a.get(k)), _num(b.get(k))) for k in sorted(set(a) | set(b))]
        differing = sorted((d for d in diffs if not d.same), key=lambda d: (-d.magnitude(), d.item))
        return cls(title, item_label, differing, len(diffs) - len(differing))


@dataclass
class ComparisonResult:
    bundle: str
    a: Path
    b: Path
    verdicts: tuple[str, str]
    provenance: list[tuple[str, str, str]]  # differing fields only: (field, A, B)
    provenance_identical: int
    metrics: list[Diff]
    items: list[ItemTable] = field(default_factory=list)


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return None


def _flat(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)


def _provenance(r: Mapping[str, Any]) -> dict[str, str]:
    """The fields a gap can come from, flattened to strings."""
    prov = r.get("provenance") if isinstance(r.get("provenance"), dict) else {}
    arts = r.get("artifacts") if isinstance(r.get("artifacts"), dict) else {}
    out: dict[str, str] = {}
    _flat("", {"mode": r.get("mode"), "published_run": r.get("published_run"), "backend": r.get("backend", {}),
               "device": prov.get("device", {}), "weights sha256": (arts.get("weights") or {}).get("sha256"),
               "ground truth sha256": (arts.get("dataset") or {}).get("sha256"),
               "exported_models": r.get("exported_models", {}), "zoo_commit": prov.get("zoo_commit"),
               "manifest sha256": prov.get("manifest_sha256"), "packages": prov.get("packages", {})}, out)
    return out


def compare_runs(a: Path, b: Path) -> ComparisonResult:
    """Compare two run directories of the same bundle (InputError when the bundles differ)."""
    from common.bundle import load_bundle
    from common.manifest import bundle_names
    from common.report import read_report

    a, b = Path(a), Path(b)
    ra, rb = read_report(a), read_report(b)
    if ra["bundle"] != rb["bundle"]:
        raise InputError(b, f"bundle {rb['bundle']!r} differs from {a}'s {ra['bundle']!r}: compare two runs of "
                            "the same bundle")
    name = ra["bundle"]
    if name not in bundle_names():
        raise InputError(a / "report.json", f"unknown bundle {name!r}; known: {bundle_names()}")
    pa, pb = _provenance(ra), _provenance(rb)
    keys = sorted(set(pa) | set(pb))
    differing = [(k, pa.get(k, "—"), pb.get(k, "—")) for k in keys if pa.get(k) != pb.get(k)]
    ma = ra.get("metrics") if isinstance(ra.get("metrics"), dict) else {}
    mb = rb.get("metrics") if isinstance(rb.get("metrics"), dict) else {}
    metrics = [Diff(k, _num(ma.get(k)), _num(mb.get(k))) for k in [*ma, *(k for k in mb if k not in ma)]]
    result = ComparisonResult(name, a, b, (str(ra.get("verdict")), str(rb.get("verdict"))), differing,
                              len(keys) - len(differing), metrics)
    bundle = load_bundle(name)
    ia, ib = bundle.item_scores(a), bundle.item_scores(b)
    result.items = [ItemTable.build(title, bundle.item_label, ia[title], ib.get(title, {})) for title in ia]
    return result


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}" if np.isfinite(v) and abs(v) < 1e6 else f"{v:.4g}"


def render_comparison(r: ComparisonResult, *, top: int = 20) -> str:
    """Markdown: provenance differences, metrics, then one table per per-item quantity (`top` rows each, 0 = all)."""
    lines = [f"# compare {r.bundle}", "", f"- A: `{r.a}` ({r.verdicts[0]})", f"- B: `{r.b}` ({r.verdicts[1]})", "",
             "## Provenance", ""]
    if r.provenance:
        lines += ["| field | A | B |", "|---|---|---|"] + [f"| {k} | {va} | {vb} |" for k, va, vb in r.provenance]
        lines += ["", f"{r.provenance_identical} other field(s) identical."]
    else:
        lines.append(f"All {r.provenance_identical} fields identical.")
    lines += ["", "## Metrics", "", "| metric | A | B | B - A |", "|---|---|---|---|"]
    lines += [f"| {d.item} | {_f(d.a)} | {_f(d.b)} | {_f(d.difference)} |" for d in r.metrics if "/" not in d.item]
    for t in r.items:
        lines += ["", f"## {t.title}: {len(t.differing)} differ, {t.identical} identical", ""]
        if not t.differing:
            continue
        shown = t.differing if top <= 0 else t.differing[:top]
        lines += [f"| {t.item_label} | A | B | B - A |", "|---|---|---|---|"]
        lines += [f"| {d.item} | {_f(d.a)} | {_f(d.b)} | {_f(d.difference)} |" for d in shown]
        if len(shown) < len(t.differing):
            lines.append(f"\n... and {len(t.differing) - len(shown)} more differing (--top 0 lists all)")
    return "\n".join(lines) + "\n"


@click.command("compare")
@click.argument("run_a", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--top", type=click.IntRange(0), default=20, show_default=True,
              help="Rows per per-item table (0 = all differing items).")
def compare_command(run_a: Path, run_b: Path, top: int) -> None:
    """Two runs of the same bundle side by side: provenance, metrics, and the per-item values (class, sequence,
    query) where they differ, largest difference first."""
    click.echo(render_comparison(compare_runs(run_a, run_b), top=top), nl=False)
