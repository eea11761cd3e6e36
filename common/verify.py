"""Measured vs published, per the manifest's tolerances; and re-verification of a run directory alone.

Rule (written out in every check line): |measured - published| <= tolerance, where tolerance is
`tolerance_abs`, or `tolerance_rel * |published|`. The rule is symmetric on purpose: a reproduction far *above*
the published number is not a reproduction either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from common.bundle import Check, load_bundle
from common.manifest import PublishedMetric, PublishedRun

RECOMPUTE_TOL = 1e-9  # recorded vs recomputed metric: the same computation, so equal up to float printing


def numbers_match(a: float, b: float) -> bool:
    """A recorded and a recomputed value agree: within RECOMPUTE_TOL (relative and absolute), NaN only with NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=RECOMPUTE_TOL, abs_tol=RECOMPUTE_TOL)


def check_metric(measured: float | None, published: PublishedMetric) -> Check:
    """One PASS / NOT PASSED line for a published metric."""
    tol = published.tolerance_abs if published.tolerance_abs is not None else published.tolerance_rel * abs(
        published.value)
    rule = (f"±{published.tolerance_abs} abs" if published.tolerance_abs is not None
            else f"±{published.tolerance_rel:.1%} rel = ±{tol:.4g}")
    if measured is None or not math.isfinite(measured):
        return Check(published.name, False, f"not measured (published {published.value} {published.unit})",
                     None, published.value)
    ok = abs(measured - published.value) <= tol
    return Check(published.name, ok, f"measured {measured:.4f} vs published {published.value} {published.unit} "
                 f"({rule})", measured, published.value)


def check_published(metrics: Mapping[str, float], run: PublishedRun) -> list[Check]:
    return [check_metric(metrics.get(m.name), m) for m in run.metrics]


def parity_check(name: str, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], *,
                 rtol: float = 1e-3, atol: float = 1e-4) -> Check:
    """Backend parity: every output within atol + rtol * max|reference| of the reference backend."""
    worst = []
    ok = set(reference) == set(candidate)
    for key, ref in reference.items():
        if key not in candidate or candidate[key].shape != ref.shape:
            ok = False
            worst.append(f"{key}: shape {getattr(candidate.get(key), 'shape', None)} vs {ref.shape}")
            continue
        err = float(np.max(np.abs(candidate[key].astype(np.float64) - ref))) if ref.size else 0.0
        bound = atol + rtol * float(np.max(np.abs(ref))) if ref.size else atol
        ok &= err <= bound
        worst.append(f"{key} max|diff| {err:.2e} (bound {bound:.2e})")
    return Check(name, ok, "; ".join(worst))


def verify_run_dir(run_dir: Path) -> tuple[list[Check], dict[str, float]]:
    """Recompute the metrics from the run directory's files and compare them with the recorded ones and, for a
    real run, with the published numbers. Returns the checks and the recomputed metrics."""
    from common.manifest import load_manifest
    from common.report import read_report

    report = read_report(run_dir)
    bundle = load_bundle(report["bundle"])
    manifest = load_manifest(run_dir / "manifest.toml")
    recomputed = bundle.score(run_dir)
    recorded = report.get("metrics", {})
    same = set(recorded) == set(recomputed) and all(
        math.isclose(recomputed[k], recorded[k], rel_tol=1e-9, abs_tol=1e-9) for k in recorded)
    checks = [Check("recomputed metrics equal the recorded ones", same,
                    "from predictions + ground truth in the run directory" if same
                    else f"recorded {recorded} vs recomputed {recomputed}")]
    if report["mode"] == "real":
        checks += check_published(recomputed, manifest.run(report["published_run"]))
    else:
        checks += [Check(c["name"], c["passed"], c["detail"] + " (recorded)") for c in report["checks"]]
    return checks, recomputed
