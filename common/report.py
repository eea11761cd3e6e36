"""Run reports (JSON for machines, Markdown for reviewers) with the provenance a reviewer needs."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from common.bundle import Check
from common.errors import InputError

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("numpy", "torch", "onnx", "onnxruntime", "opencv-python-headless", "pydantic", "ascend-zoo",
            "aclruntime", "ais_bench")
DEMO_NOTICE = ("DEMO: synthetic data and random weights. This run checks the pipeline (backend parity, metric "
               "sanity) and makes NO claim about the published numbers.")


def zoo_commit() -> str:
    """The zoo's git commit: $ZOO_COMMIT (baked into images), else `git rev-parse HEAD`, else 'unknown'."""
    if os.environ.get("ZOO_COMMIT"):
        return os.environ["ZOO_COMMIT"]
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def device_description() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cores": str(os.cpu_count())}


@dataclass
class RunReport:
    bundle: str
    mode: str  # "real" | "demo"
    published_run: str
    verdict: str = "INCOMPLETE"
    metrics: dict[str, float] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    published: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    exported_models: dict[str, str] = field(default_factory=dict)
    backend: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    # relative path -> sha256 of every file the run wrote (not the reports, not onnx/ om/): binds the raw
    # predictions and ground truth to this report, so a file swapped in later is caught by `zoo check`
    outputs: dict[str, str] = field(default_factory=dict)

    def decide(self) -> str:
        """PASS only when there are checks and all pass; demo verdicts are prefixed so nobody mistakes them."""
        ok = bool(self.checks) and all(c.passed for c in self.checks)
        self.verdict = ("DEMO-" if self.mode == "demo" else "") + ("PASS" if ok else "FAIL")
        return self.verdict

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict.endswith("PASS") else 1


def collect_provenance(manifest_sha256: str, upstream: dict[str, str]) -> dict[str, Any]:
    return {"zoo_commit": zoo_commit(), "manifest_sha256": manifest_sha256, "upstream": upstream,
            "packages": package_versions(), "device": device_description()}


def write_report(report: RunReport, run_dir: Path) -> tuple[Path, Path]:
    """Write report.json, report.md and report.html into `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    js = run_dir / "report.json"
    md = run_dir / "report.md"
    report.outputs = output_digests(run_dir)
    js.write_text(json.dumps(asdict(report), indent=2, sort_keys=False, default=str) + "\n")
    md.write_text(render_markdown(report))
    try:  # report.html beside them (common/html_report.py)
        from common.html_report import write_html

        write_html(report, run_dir)
    except Exception:  # noqa: BLE001 - JSON/Markdown are the record; this runs in the pipeline's `finally`,
        # where raising would hide the run's real outcome
        logging.getLogger("zoo").exception("%s: report.html could not be written", report.bundle)
    return js, md


OUTPUTS_EXCLUDED_FILES = ("report.json", "report.md", "report.html")
OUTPUTS_EXCLUDED_DIRS = ("onnx", "om")  # exported models: large, and their hashes are in `exported_models`


def output_digests(run_dir: Path) -> dict[str, str]:
    """sha256 of every regular file under `run_dir` ('/'-separated relative path -> hex), except the reports and
    the exported-model folders."""
    from common.fetch import file_digest

    out = {}
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if rel.parts[0] in OUTPUTS_EXCLUDED_DIRS or str(rel) in OUTPUTS_EXCLUDED_FILES:
            continue
        if path.is_file() and not path.is_symlink():
            out[rel.as_posix()] = file_digest(path)
    return out


def read_report(run_dir: Path) -> dict[str, Any]:
    """A run directory's report.json; InputError (naming the file) when it is missing, unreadable or not a run
    report."""
    path = run_dir / "report.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(run_dir, "no report.json: not a run directory") from None
    except (OSError, ValueError) as e:
        raise InputError(path, f"unreadable: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("bundle"), str):
        raise InputError(path, "not a run report (a JSON object with `bundle`)")
    return data


def render_markdown(r: RunReport) -> str:
    prov = r.provenance
    lines = [f"# {r.bundle}: {r.verdict}", ""]
    if r.mode == "demo":
        lines += [f"> **{DEMO_NOTICE}**", ""]
    lines += [f"- published run compared: `{r.published_run}` ({r.published.get('source', '')}, "
              f"{r.published.get('hardware', '')})",
              f"- zoo commit `{prov.get('zoo_commit')}`, manifest sha256 `{prov.get('manifest_sha256')}`",
              f"- upstream {prov.get('upstream', {}).get('repo')} @ `{prov.get('upstream', {}).get('commit')}`",
              f"- backend: {', '.join(f'{k}={v}' for k, v in r.backend.items())}", "",
              "## Checks", ""]
    lines += [f"- {c.line()}" for c in r.checks] or ["- (none)"]
    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in r.metrics.items() if "/" not in k]
    if r.details:
        lines += ["", "## Details", "", *r.details]
    lines += ["", "## Timings (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in r.timings_s.items()]
    lines += ["", "## Artifacts and exported models", ""]
    lines += [f"- {k}: `{v.get('sha256')}` ({v.get('path')})" for k, v in r.artifacts.items()]
    lines += [f"- exported {k}: `{v}`" for k, v in r.exported_models.items()]
    lines += ["", "## Environment", "", f"- device: {r.provenance.get('device')}",
              f"- packages: {r.provenance.get('packages')}"]
    if r.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in r.notes]]
    return "\n".join(lines) + "\n"
