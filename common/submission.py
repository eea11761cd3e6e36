"""Reproducibility submissions: `zoo submit` packs run directories into one archive with a hash index, `zoo check`
re-verifies such an archive without trusting its sender (MLPerf submission-checker style).

Layout of a submission (a gzip tar):

    submission.json          index {path: sha256, size} of every other file, environment, zoo version, runs
    runs/<i>-<dirname>/...   each run directory as `zoo eval` / `zoo demo` wrote it (onnx/ and om/ only with
                             --with-models: large, and their hashes are in report.json `exported_models`)

What `check` re-derives, collecting every problem instead of stopping at the first: the archive holds only plain
files at safe relative paths (no link, device, absolute or '..' member is ever written); every file matches the
index and nothing is missing or extra; each run's manifest.toml is the zoo's own manifest of the version that made
it and the one report.json's provenance names; every file report.json `outputs` binds is there with that hash;
every metric recomputes from the raw predictions and ground truth; every verdict follows from the recomputed
checks. The index alone proves nothing (a sender can re-hash it): the recomputation and the bindings do.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from common.errors import InputError, ZooError

FORMAT = "ascend-zoo-submission/1"
INDEX = "submission.json"
RUNS = "runs"
MODEL_DIRS = ("onnx", "om")
REPORT_FILES = ("report.json", "report.md", "report.html")
VERDICTS = ("PASS", "FAIL", "DEMO-PASS", "DEMO-FAIL", "INCOMPLETE")
MAX_JSON_BYTES = 256 << 20  # report.json / submission.json of a huge run stay far below this
DEFAULT_MAX_BYTES = 64 << 30  # extraction stops beyond this: a hostile archive must not fill the disk
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


# -- results ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One discrepancy: the file (archive-relative) and what is wrong with it."""

    path: str
    what: str

    def line(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass
class MetricRow:
    metric: str
    recorded: float | None
    recomputed: float | None
    ok: bool


@dataclass
class RunCheck:
    """What `check` found for one run of the submission."""

    name: str  # runs/<i>-<dirname>
    bundle: str = "?"
    mode: str = "?"
    verdict_recorded: str = "?"
    verdict_derived: str = "?"
    rows: list[MetricRow] = field(default_factory=list)
    problems: int = 0


@dataclass
class CheckResult:
    archive: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: list[RunCheck] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, path: str, what: str, run: RunCheck | None = None) -> None:
        self.problems.append(Problem(path, what))
        if run is not None:
            run.problems += 1


# -- small hostile-input helpers ------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    """common.fetch.file_digest, imported lazily: common.fetch loads requests, and every `zoo` command imports
    this module at start-up."""
    from common.fetch import file_digest

    return file_digest(path)


def _number(value: Any) -> float | None:
    """A JSON number as float (NaN / inf kept: json writes them), None for anything else (bools, strings, ints
    too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _same(a: float | None, b: float | None) -> bool:
    from common.verify import numbers_match  # lazily: common.verify imports torch, `zoo` starts without it

    return a is not None and b is not None and numbers_match(a, b)


def _read_json_object(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(object, "") or (None, why not): never raises on bad content."""
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            return None, f"larger than {MAX_JSON_BYTES >> 20} MiB"
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, f"unreadable: {e.strerror}"
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # JSONDecodeError, int too long, nesting
        return None, f"not valid JSON: {str(e)[:200]}"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    return data, ""


def _safe_relpath(name: str) -> str | None:
    """The '/'-separated relative path of an archive or index name, or None when it is absolute, climbs with
    '..', holds a NUL or backslash, or is empty."""
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
        return None
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.6g}"


# -- submit ---------------------------------------------------------------------------------------------------
def _run_files(run_dir: Path, with_models: bool) -> list[Path]:
    """Regular files of a run directory, sorted; links are refused (a submission holds plain files only)."""
    files = []
    for dirpath, dirnames, filenames in os.walk(run_dir, followlinks=False):
        base = Path(dirpath)
        rel_dir = base.relative_to(run_dir)
        if rel_dir == Path(".") and not with_models:
            dirnames[:] = [d for d in dirnames if d not in MODEL_DIRS]
        for name in [*dirnames, *filenames]:
            if (base / name).is_symlink():
                raise InputError(base / name, "a symbolic link in the run directory: a submission holds plain "
                                              "files only (copy the target in)")
        files += [base / n for n in filenames]
    return sorted(files)


def _outputs_problems(run_dir: Path, outputs: Any) -> list[str]:
    """Files report.json `outputs` binds that are missing or changed since the report was written."""
    if not isinstance(outputs, dict) or not outputs:
        return ["report.json has no `outputs` (made by an older zoo): re-run it to bind its predictions"]
    bad = []
    for rel, digest in outputs.items():
        safe = _safe_relpath(rel)
        path = run_dir / safe if safe else None
        if path is None or not path.is_file():
            bad.append(f"{rel}: bound by report.json outputs but missing")
        elif _sha256(path) != digest:
            bad.append(f"{rel}: changed since the report was written (sha256 differs from report.json outputs)")
    return bad


def validate_run_dir(run_dir: Path) -> dict[str, Any]:
    """Refuse (InputError naming the directory) a run that has no report, did not complete, whose files changed
    after the report, or whose recorded metrics do not recompute; returns its report."""
    from common.verify import verify_run_dir

    if not run_dir.is_dir():
        raise InputError(run_dir, "not a run directory")
    report, why = _read_json_object(run_dir / "report.json")
    if report is None:
        raise InputError(run_dir, f"report.json {why}: not a run directory written by `zoo eval` / `zoo demo`")
    verdict = report.get("verdict")
    if verdict not in VERDICTS:
        raise InputError(run_dir, f"report.json verdict {verdict!r} is not one of {VERDICTS}")
    if verdict == "INCOMPLETE":
        raise InputError(run_dir, "the run is INCOMPLETE (it did not finish): nothing to submit")
    changed = _outputs_problems(run_dir, report.get("outputs"))
    if changed:
        raise InputError(run_dir, "; ".join(changed[:5]) + (" ..." if len(changed) > 5 else ""))
    try:
        checks, _ = verify_run_dir(run_dir)
    except ZooError as e:
        raise InputError(run_dir, f"metrics cannot be recomputed: {e}") from None
    except Exception as e:  # noqa: BLE001 - a scorer failing on a broken run must become one clear line
        raise InputError(run_dir, f"metrics cannot be recomputed: {type(e).__name__}: {e}") from None
    if not checks[0].passed:
        raise InputError(run_dir, f"recorded metrics do not recompute: {checks[0].detail}")
    return report


def make_submission(run_dirs: Iterable[Path], out: Path, *, with_models: bool = False) -> Path:
    """Pack validated run directories into `out` (gzip tar) with submission.json first; returns `out`."""
    from common import __version__
    from common.report import device_description, package_versions, zoo_commit

    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise InputError(None, "no run directory given")
    entries, index, sources = [], {}, []
    for i, run_dir in enumerate(run_dirs):
        report = validate_run_dir(run_dir)
        name = f"{RUNS}/{i}-{_SAFE_NAME.sub('_', run_dir.resolve().name) or 'run'}"
        entries.append({"dir": name, "source": str(run_dir), "bundle": report.get("bundle"),
                        "mode": report.get("mode"), "published_run": report.get("published_run"),
                        "verdict": report.get("verdict"), "with_models": with_models})
        for path in _run_files(run_dir, with_models):
            if path.resolve() == out.resolve():
                continue
            arc = f"{name}/{path.relative_to(run_dir).as_posix()}"
            index[arc] = {"sha256": _sha256(path), "size": path.stat().st_size}
            sources.append((arc, path))
    meta = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "zoo": {"commit": zoo_commit(), "version": __version__,
                    "package": package_versions().get("ascend-zoo", "")},
            "environment": {"device": device_description(), "packages": package_versions()},
            "runs": entries, "files": index}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tf:
            _add_bytes(tf, INDEX, (json.dumps(meta, indent=1) + "\n").encode())
            for arc, path in sources:
                info = tarfile.TarInfo(arc)
                info.size, info.mode, info.mtime = path.stat().st_size, 0o644, int(path.stat().st_mtime)
                with path.open("rb") as f:
                    tf.addfile(info, f)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes, mtime: float | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time() if mtime is None else mtime)
    tf.addfile(info, io.BytesIO(data))


# -- check: extraction ---------------------------------------------------------------------------------------
def _extract(archive: Path, root: Path, result: CheckResult, max_bytes: int) -> dict[str, Path]:
    """Write the archive's regular files at safe paths under `root` (our own loop: nothing unsafe is ever
    handed to tarfile's extraction); every refused member is a problem naming it. Returns relpath -> file."""
    if not archive.is_file():
        raise InputError(archive, "submission archive not found")
    files: dict[str, Path] = {}
    total = 0
    root.mkdir(parents=True)
    where = archive.name
    try:
        # Stream mode: one sequential pass, members handled in archive order.
        with tarfile.open(archive, "r|*") as tf:
            for ti in tf:
                name = ti.name
                rel = _safe_relpath(name)
                if rel is None:
                    what = ("absolute path" if name.startswith("/") else "'..' path traversal" if ".." in
                            name.replace("\\", "/").split("/") else "unsafe name")
                    result.add(f"{where}:{name!r}", f"member refused ({what}): not extracted")
                    continue
                if ti.issym() or ti.islnk():
                    kind = "symbolic" if ti.issym() else "hard"
                    result.add(f"{where}:{name}", f"member refused: a {kind} link (to {ti.linkname!r}); a "
                                                  "submission holds plain files only")
                    continue
                if ti.isdir():
                    continue  # directories are implied by their files
                if not ti.isreg():
                    kind = ("character device" if ti.ischr() else "block device" if ti.isblk() else
                            "FIFO" if ti.isfifo() else f"tar type {ti.type!r}")
                    result.add(f"{where}:{name}", f"member refused: a {kind}")
                    continue
                if rel in files:
                    result.add(rel, "appears twice in the archive (which copy counts is ambiguous)")
                    continue
                total += ti.size
                if total > max_bytes:
                    result.add(where, f"more than {max_bytes} bytes of content: extraction stopped")
                    break
                dest = root / rel
                try:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(ti)
                    assert src is not None  # a regular member always has data
                    with dest.open("xb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                except (OSError, FileExistsError) as e:
                    result.add(rel, f"cannot be extracted: {e.strerror or e}")
                    continue
                files[rel] = dest
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        if not files and isinstance(e, tarfile.ReadError):
            raise InputError(archive, f"not a (gzip) tar archive: {e}") from None
        result.add(where, f"corrupt or truncated archive: {e}")
    return files


# -- check: the zoo's own manifest ---------------------------------------------------------------------------
@dataclass
class _Zoo:
    """The checker's view of zoo versions: its own commit and, per (commit, bundle), the trusted manifest."""

    commit: str
    cache: dict[tuple[str, str], tuple[bytes | None, str]] = field(default_factory=dict)

    def manifest(self, theirs: str, bundle: str) -> tuple[bytes | None, str]:
        """(manifest bytes of `bundle` at the zoo version `theirs`, "") or (None, why it cannot be had)."""
        key = (theirs, bundle)
        if key not in self.cache:
            self.cache[key] = self._lookup(theirs, bundle)
        return self.cache[key]

    def _lookup(self, theirs: str, bundle: str) -> tuple[bytes | None, str]:
        from common.manifest import BUNDLES_DIR
        from common.report import REPO_ROOT

        if theirs == self.commit:
            return (BUNDLES_DIR / bundle / "manifest.toml").read_bytes(), ""
        base = theirs.removesuffix("-dirty")
        if _COMMIT.match(base):  # validated before it goes near git: a hostile string could be an option
            git = ["git", "-C", str(REPO_ROOT)]
            try:
                has = subprocess.run([*git, "cat-file", "-e", f"{base}^{{commit}}"], capture_output=True,
                                     timeout=30).returncode == 0
                if has:
                    shown = subprocess.run([*git, "show", f"{base}:bundles/{bundle}/manifest.toml"],
                                           capture_output=True, timeout=30)
                    if shown.returncode != 0:
                        return None, f"zoo commit {base} has no bundles/{bundle}/manifest.toml"
                    return shown.stdout, ""
            except (OSError, subprocess.SubprocessError):
                pass
        return None, (f"the submission was made by zoo {theirs!r}, this checker is zoo {self.commit!r}, and this "
                      "checkout does not have that commit: the run's manifest cannot be compared with the zoo's "
                      f"own; check with a zoo at {base!r} (a git checkout that has it)")


# -- check -------------------------------------------------------------------------------------------------------
def check_submission(archive: Path, *, workdir: Path | None = None,
                     max_bytes: int = DEFAULT_MAX_BYTES) -> CheckResult:
    """Extract `archive` safely into a temporary directory and re-verify everything in it (module docstring);
    bad archives raise InputError only when nothing could be read at all, every other finding is a Problem."""
    from common.report import zoo_commit

    t0 = time.perf_counter()
    archive = Path(archive)
    result = CheckResult(archive)
    with tempfile.TemporaryDirectory(prefix="zoo-check-", dir=workdir) as tmp:
        root = Path(tmp) / "submission"
        files = _extract(archive, root, result, max_bytes)
        meta = _check_index(root, files, result)
        if meta is not None:
            zoo = _Zoo(zoo_commit())
            _check_runs(meta, root, files, result, zoo, Path(tmp))
    result.seconds = time.perf_counter() - t0
    return result


def _check_index(root: Path, files: Mapping[str, Path], result: CheckResult) -> dict[str, Any] | None:
    """submission.json's own shape, then every file against it; returns it (None when unusable)."""
    if INDEX not in files:
        result.add(INDEX, "missing: not a zoo submission (or the index was removed)")
        return None
    meta, why = _read_json_object(files[INDEX])
    if meta is None:
        result.add(INDEX, why)
        return None
    if meta.get("format") != FORMAT:
        result.add(INDEX, f"format {meta.get('format')!r}, this checker reads {FORMAT!r}")
    index = meta.get("files")
    if not isinstance(index, dict):
        result.add(INDEX, "`files` must be an object {path: {sha256, size}}")
        index = {}
    for rel, entry in index.items():
        safe = _safe_relpath(rel)
        if safe != rel:
            result.add(INDEX, f"index entry {rel!r} is not a plain relative path")
            continue
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("size") if isinstance(entry, dict) else None
        if not isinstance(sha, str) or not _HEX64.match(sha) or isinstance(size, bool) or not isinstance(size, int):
            result.add(INDEX, f"index entry {rel!r} needs a 64-hex sha256 and an integer size")
            continue
        if rel not in files:
            result.add(rel, "missing: listed in submission.json but not in the archive")
            continue
        actual = files[rel].stat().st_size
        if actual != size:
            result.add(rel, f"size {actual} bytes, index says {size}")
        elif _sha256(files[rel]) != sha:
            result.add(rel, "sha256 differs from submission.json")
    for rel in sorted(set(files) - set(index) - {INDEX}):
        result.add(rel, "extra file: in the archive but not in submission.json")
    zoo = meta.get("zoo")
    if not isinstance(zoo, dict) or not isinstance(zoo.get("commit"), str):
        result.add(INDEX, "`zoo.commit` (the zoo version that made the submission) is missing")
        meta["zoo"] = {"commit": "unknown"}
    return meta


def _check_runs(meta: dict[str, Any], root: Path, files: Mapping[str, Path], result: CheckResult, zoo: _Zoo,
                tmp: Path) -> None:
    runs = meta.get("runs")
    if not isinstance(runs, list) or not runs:
        result.add(INDEX, "`runs` must be a non-empty list")
        return
    theirs = meta["zoo"]["commit"]
    if theirs != zoo.commit:
        result.notes.append(f"made by zoo {theirs!r}; this checker is zoo {zoo.commit!r}")
    listed = set()
    for entry in runs:
        name = entry.get("dir") if isinstance(entry, dict) else None
        rel = _safe_relpath(name) if isinstance(name, str) else None
        if rel is None or not rel.startswith(f"{RUNS}/") or rel.count("/") != 1:
            result.add(INDEX, f"run entry {entry!r:.200} needs `dir` = runs/<name>")
            continue
        if rel in listed:
            result.add(INDEX, f"run {rel} listed twice")
            continue
        listed.add(rel)
        run = RunCheck(rel)
        result.runs.append(run)
        try:
            _check_run(entry, root / rel, rel, files, result, run, zoo, theirs, tmp)
        except Exception as e:  # noqa: BLE001 - hostile content must end as a problem line, never a traceback
            result.add(rel, f"check failed: {type(e).__name__}: {str(e)[:300]}", run)
    present = {"/".join(r.split("/")[:2]) for r in files if r.startswith(f"{RUNS}/") and r.count("/") >= 2}
    for rel in sorted(present - listed):
        result.add(rel, "run directory in the archive but not listed in submission.json `runs`")


def _check_run(entry: dict[str, Any], run_dir: Path, rel: str, files: Mapping[str, Path], result: CheckResult,
               run: RunCheck, zoo: _Zoo, theirs: str, tmp: Path) -> None:
    from common.bundle import Check, load_bundle
    from common.manifest import bundle_names, load_manifest
    from common.report import OUTPUTS_EXCLUDED_DIRS, OUTPUTS_EXCLUDED_FILES

    def problem(path: str, what: str) -> None:
        result.add(f"{rel}/{path}" if path else rel, what, run)

    report, why = _read_json_object(run_dir / "report.json") if (run_dir / "report.json").is_file() else (None,
                                                                                                         "missing")
    if report is None:
        problem("report.json", why)
        return
    bundle, mode, published_run = report.get("bundle"), report.get("mode"), report.get("published_run")
    verdict, metrics, checks = report.get("verdict"), report.get("metrics"), report.get("checks")
    # The bundle name selects code to import: only names of this zoo's bundles go further.
    if bundle not in bundle_names():
        problem("report.json", f"bundle {bundle!r:.80} is not one of this zoo's bundles {bundle_names()}")
        return
    run.bundle = bundle
    run.mode = mode if isinstance(mode, str) else "?"
    run.verdict_recorded = verdict if isinstance(verdict, str) else "?"
    shape_ok = True
    for key, value, ok in (("mode", mode, mode in ("real", "demo")),
                           ("published_run", published_run, isinstance(published_run, str)),
                           ("verdict", verdict, verdict in VERDICTS),
                           ("metrics", metrics, isinstance(metrics, dict)),
                           ("checks", checks, isinstance(checks, list))):
        if not ok:
            problem("report.json", f"`{key}` is invalid: {value!r:.120}")
            shape_ok = False
    for key in ("bundle", "mode", "published_run"):
        if entry.get(key) != report.get(key):
            problem("report.json", f"{key} {report.get(key)!r:.80} but submission.json says {entry.get(key)!r:.80}")
    if verdict == "INCOMPLETE":
        problem("report.json", "the run is INCOMPLETE: no result to check")

    # 1. the manifest: the zoo's own at the version that made the submission, and the one the report names
    manifest_path = run_dir / "manifest.toml"
    trusted = None
    if not manifest_path.is_file():
        problem("manifest.toml", "missing")
    else:
        own, why_not = zoo.manifest(theirs, bundle)
        if own is None:
            problem("manifest.toml", why_not)
        else:
            if manifest_path.read_bytes() != own:
                problem("manifest.toml", f"differs from the zoo's own bundles/{bundle}/manifest.toml of the version "
                                         "that made the submission (changed after the run?)")
            trusted_path = tmp / f"trusted-{bundle}-{len(zoo.cache)}.toml"
            trusted_path.write_bytes(own)
            trusted = load_manifest(trusted_path)
        prov = report.get("provenance")
        recorded_sha = prov.get("manifest_sha256") if isinstance(prov, dict) else None
        if recorded_sha != hashlib.sha256(manifest_path.read_bytes()).hexdigest():
            problem("manifest.toml", f"sha256 differs from report.json provenance.manifest_sha256 "
                                     f"{recorded_sha!r:.80}")
    if trusted is not None and isinstance(published_run, str):
        if published_run not in [r.name for r in trusted.published]:
            problem("report.json", f"published run {published_run!r:.80} is not in the {bundle} manifest")
        elif report.get("published") != trusted.run(published_run).model_dump(mode="json"):
            problem("report.json", f"`published` differs from the manifest's published run {published_run!r}")

    # 2. the bindings: report.json outputs (predictions, ground truth) and exported models
    outputs = report.get("outputs")
    prefix = f"{rel}/"
    in_run = {r[len(prefix):]: p for r, p in files.items() if r.startswith(prefix)}
    if not isinstance(outputs, dict) or not outputs:
        problem("report.json", "no `outputs` binding (run made by an older zoo?): predictions are not bound to "
                               "the report")
        outputs = {}
    for out_rel, digest in outputs.items():
        if _safe_relpath(out_rel) != out_rel or not isinstance(digest, str):
            problem("report.json", f"outputs entry {out_rel!r:.120} is not a relative path with a sha256")
        elif out_rel not in in_run:
            problem(out_rel, "missing: bound by report.json outputs")
        elif _sha256(in_run[out_rel]) != digest:
            problem(out_rel, "sha256 differs from report.json outputs (the file was changed or swapped after the "
                             "run)")
    exported = report.get("exported_models") if isinstance(report.get("exported_models"), dict) else {}
    for file_rel, path in in_run.items():
        top = file_rel.split("/")[0]
        if top in OUTPUTS_EXCLUDED_DIRS:
            key = Path(file_rel).stem if top == "onnx" else Path(file_rel).name
            if exported.get(key) != _sha256(path):
                problem(file_rel, "exported model does not match report.json exported_models")
        elif file_rel not in OUTPUTS_EXCLUDED_FILES and file_rel not in outputs:
            problem(file_rel, "not bound by report.json outputs (added after the run?)")
    if not shape_ok:
        return

    # 3. recompute every metric from the raw predictions + ground truth
    b = load_bundle(bundle)
    try:
        recomputed = b.score(run_dir)
    except Exception as e:  # noqa: BLE001 - a scorer on hostile files: one problem line
        problem("", f"metrics cannot be recomputed: {type(e).__name__}: {str(e)[:300]}")
        recomputed = None
    for key in sorted(set(metrics) | set(recomputed or {}), key=lambda k: (list(metrics).index(k)
                                                                            if k in metrics else len(metrics), k)):
        rec = _number(metrics.get(key)) if key in metrics else None
        new = None if recomputed is None or key not in recomputed else float(recomputed[key])
        ok = _same(rec, new)
        run.rows.append(MetricRow(str(key), rec, new, ok))
        if recomputed is not None and not ok:
            what = ("recorded but not recomputed" if new is None else "recomputed but not recorded"
                    if key not in metrics else f"recorded {metrics.get(key)!r:.40} is not a number" if rec is None
                    else f"recorded {rec!r} but recomputed {new!r}")
            problem("report.json", f"metric {key}: {what}")

    # 4. re-derive the verdict
    recorded_checks = {}
    for c in checks:
        if not (isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("passed"), bool)):
            problem("report.json", f"check entry {c!r:.120} needs a name and a boolean `passed`")
            continue
        recorded_checks[c["name"]] = c["passed"]
    derived: list[Check] = []
    if recomputed is not None:
        if mode == "real":
            if trusted is not None and published_run in [r.name for r in trusted.published]:
                from common.verify import check_published

                b.select_run(published_run)
                derived = check_published(recomputed, trusted.run(published_run))
                derived += b.extra_checks(run_dir, recomputed)
        else:
            # Demo: the metric sanity checks recompute from the run's files; backend parity needs the model,
            # so its recorded value stands (and must be consistent with the verdict below).
            derived = b.demo_checks(run_dir, recomputed)
    for c in derived:
        if c.name not in recorded_checks:
            problem("report.json", f"check {c.name!r} re-derived but not recorded")
        elif recorded_checks[c.name] != c.passed:
            problem("report.json", f"check {c.name!r}: recorded {'PASS' if recorded_checks[c.name] else 'NOT PASSED'}"
                                   f", re-derived {'PASS' if c.passed else 'NOT PASSED'} ({c.detail[:200]})")
    if mode == "real":
        derived_names = {c.name for c in derived}
        for name in recorded_checks:
            if derived and name not in derived_names:
                problem("report.json", f"recorded check {name!r} is not one the zoo derives for this run")
        if derived:
            run.verdict_derived = "PASS" if all(c.passed for c in derived) else "FAIL"
    else:
        final = {**recorded_checks, **{c.name: c.passed for c in derived}}
        run.verdict_derived = "DEMO-" + ("PASS" if final and all(final.values()) else "FAIL")
    if run.verdict_derived != "?" and verdict != run.verdict_derived:
        problem("report.json", f"verdict {verdict!r:.40} but the checks give {run.verdict_derived}")


# -- rendering --------------------------------------------------------------------------------------------------
def render_check(result: CheckResult) -> str:
    """The check table (one row per run and metric) and every problem, one line each."""
    lines = [f"# zoo check {result.archive.name}", "", "| run | bundle | metric | recorded | recomputed | "
             "verdict recorded / re-derived | |", "|---|---|---|---|---|---|---|"]
    for run in result.runs:
        verdict = f"{run.verdict_recorded} / {run.verdict_derived}"
        if not run.rows:
            lines.append(f"| {run.name} | {run.bundle} | — | — | — | {verdict} | "
                         f"{'OK' if not run.problems else 'problem'} |")
        for row in run.rows:
            lines.append(f"| {run.name} | {run.bundle} | {row.metric} | {_fmt(row.recorded)} | "
                         f"{_fmt(row.recomputed)} | {verdict} | {'OK' if row.ok else 'problem'} |")
    lines += [""] + [f"note: {n}" for n in result.notes]
    if result.problems:
        lines += [f"{len(result.problems)} problem(s):"] + [f"- {p.line()}" for p in result.problems]
        lines.append(f"{result.archive}: FAIL")
    else:
        lines.append(f"{result.archive}: OK ({len(result.runs)} run(s), {result.seconds:.1f} s)")
    return "\n".join(lines) + "\n"


# -- bench ------------------------------------------------------------------------------------------------------
def _bench_report(bundle_name: str, run_dir: Path, description: str) -> None:
    """Score a synthetic full-scale run directory and write its report (mode demo, checks re-derivable)."""
    import shutil as _shutil

    from common.bundle import load_bundle
    from common.pipeline import ground_truth_digest
    from common.report import DEMO_NOTICE, RunReport, collect_provenance, write_report

    b = load_bundle(bundle_name)
    m = b.manifest
    run = m.run(None)
    assert m.path is not None
    _shutil.copyfile(m.path, run_dir / "manifest.toml")
    report = RunReport(bundle=b.name, mode="demo", published_run=run.name, published=run.model_dump(mode="json"),
                       provenance=collect_provenance(m.sha256, m.upstream.model_dump()))
    report.notes += [DEMO_NOTICE, f"SYNTHETIC PREDICTIONS written directly at full scale ({description}); no network "
                                  "ran: a speed benchmark of `zoo check`, not a result"]
    report.artifacts["dataset"] = {"path": "synthetic", "sha256": ground_truth_digest(run_dir)}
    report.metrics = b.score(run_dir)
    b.export_predictions(run_dir)
    report.checks = b.demo_checks(run_dir, report.metrics)
    report.decide()
    write_report(report, run_dir)


def _bench_refinedet(run_dir: Path, seed: int = 0) -> None:
    """VOC2007 test scale: 4952 images, 1-6 objects each (10 % difficult), 100 detections per image (a quarter
    jittered copies of the ground truth), written as prepare + predict write them."""
    import numpy as np

    from bundles.refinedet import data
    from bundles.refinedet.bundle import DETECTIONS, GROUND_TRUTH

    rng = np.random.default_rng(seed)
    n_images, per_image = 4952, 100
    ids = [f"{i:06d}" for i in range(1, n_images + 1)]
    objects, gt_boxes, gt_labels = [], [], []
    for _ in ids:
        objs = []
        for _ in range(int(rng.integers(1, 7))):
            xy = np.floor(rng.uniform(0, 400, 2))
            wh = np.floor(rng.uniform(10, 200, 2))
            box = (float(xy[0]), float(xy[1]), float(xy[0] + wh[0]), float(xy[1] + wh[1]))
            objs.append(data.VocObject(int(rng.integers(1, 21)), bool(rng.random() < 0.1), box))
        objects.append(objs)
        gt_boxes.append(np.array([o.box for o in objs]))
        gt_labels.append(np.array([o.label for o in objs]))
    data.write_ground_truth(run_dir / GROUND_TRUTH, ids, objects)
    m = n_images * per_image
    index = np.repeat(np.arange(n_images, dtype=np.int32), per_image)
    labels = rng.integers(1, 21, m).astype(np.int8)
    boxes = np.concatenate([rng.uniform(0, 400, (m, 2)), np.zeros((m, 2))], axis=1)
    boxes[:, 2:] = boxes[:, :2] + rng.uniform(10, 200, (m, 2))
    on_gt = rng.random(m) < 0.25
    pick = [int(rng.integers(0, len(gt_boxes[i]))) for i in index[on_gt]]
    boxes[on_gt] = np.stack([gt_boxes[i][j] for i, j in zip(index[on_gt], pick, strict=True)]) - 1 + rng.normal(
        0, 4, (int(on_gt.sum()), 4))  # detections are pixel boxes; the metric adds 1 as the det files do
    labels[on_gt] = [gt_labels[i][j] for i, j in zip(index[on_gt], pick, strict=True)]
    scores = (rng.random(m) * 0.7 + 0.3 * on_gt).astype(np.float32)
    np.savez(run_dir / DETECTIONS, image_index=index, labels=labels, scores=scores,
             boxes=boxes.astype(np.float32))


def _bench_pamtri(run_dir: Path, seed: int = 0) -> None:
    """VeRi scale: 1678 queries x 11579 gallery images, 1024-d features (common.metrics.reid.synthetic_veri)."""
    import numpy as np

    from bundles.pamtri import data
    from bundles.pamtri.bundle import FEATURES, GROUND_TRUTH
    from common.metrics.reid import synthetic_veri

    qf, gf, q_pids, g_pids, q_cams, g_cams = synthetic_veri(seed=seed)
    splits = {}
    for split, pids, cams in (("query", q_pids, q_cams), ("gallery", g_pids, g_cams)):
        names = [f"{p:04d}_c{c:03d}_{i:08d}_0.jpg" for i, (p, c) in enumerate(zip(pids.tolist(), cams.tolist(),
                                                                                  strict=True))]
        splits[split] = data.VeriSplit(run_dir, names, pids.astype(np.int64), cams.astype(np.int64))
    data.write_ground_truth(run_dir / GROUND_TRUTH, splits)
    np.save(run_dir / FEATURES["query"], qf)
    np.save(run_dir / FEATURES["gallery"], gf)


def _bench_siamrpn(run_dir: Path, seed: int = 0) -> None:
    """VOT2016 scale: 60 sequences, 21,455 frames (common.tracking.vot.synthetic_results), pysot result files."""
    from dataclasses import asdict

    from bundles.siamrpn.bundle import BUNDLE, GROUND_TRUTH, TRACKER_CONFIG, result_file, time_file
    from common.tracking.vot import synthetic_results, write_trajectory

    trajs, gts = synthetic_results(seed)
    gt = {"dataset": "VOT2016", "sequences": {n: {"size": list(g.size), "polygons": g.polygons.tolist()}
                                              for n, g in gts.items()}}
    (run_dir / GROUND_TRUTH).write_text(json.dumps(gt))
    (run_dir / TRACKER_CONFIG).write_text(json.dumps({"published_run": BUNDLE.manifest.run(None).name,
                                                      "graphs": "split",
                                                      "tracker": asdict(BUNDLE.tracker_config())}, indent=1))
    for name, t in trajs.items():
        write_trajectory(result_file(run_dir, "VOT2016", name), t)
        n = len(t.flags)
        time_file(run_dir, "VOT2016", name).write_text(json.dumps({
            "seconds": n / 40.0, "frames": n, "failures": t.failures, "preprocess_seconds": n / 400.0,
            "tracker_seconds": n / 40.0}))


BENCH_RUNS = {"refinedet": (_bench_refinedet, "VOC2007 test: 4952 images, 100 detections each"),
              "pamtri": (_bench_pamtri, "VeRi: 1678 queries x 11579 gallery, 1024-d"),
              "siamrpn": (_bench_siamrpn, "VOT2016: 60 sequences, 21,455 frames")}


def bench_check(workdir: Path | None = None, *, limit_s: float = 30.0) -> dict[str, float]:
    """Build a submission of one full-scale synthetic run per inference bundle, then time `check_submission` on
    it. Returns {"check_s", "archive_mib", "under_limit", "problems", "build_s"}."""
    with tempfile.TemporaryDirectory(prefix="zoo-bench-check-", dir=workdir) as tmp:
        base = Path(tmp)
        t0 = time.perf_counter()
        dirs = []
        for name, (write, description) in BENCH_RUNS.items():
            run_dir = base / f"{name}-fullscale"
            run_dir.mkdir()
            write(run_dir)
            _bench_report(name, run_dir, description)
            dirs.append(run_dir)
        archive = make_submission(dirs, base / "bench.tar.gz")
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = check_submission(archive, workdir=base)
        check_s = time.perf_counter() - t1
        if not result.ok:
            raise ZooError("bench-check: the synthetic submission did not check clean:\n" + render_check(result))
        return {"check_s": check_s, "under_limit": float(check_s < limit_s), "limit_s": limit_s,
                "archive_mib": archive.stat().st_size / 2**20, "problems": float(len(result.problems)),
                "build_s": build_s}


# -- click commands (registered in common/cli.py) ---------------------------------------------------------------
@click.command("submit")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The submission archive to write (NAME.tar.gz).")
@click.option("--with-models", is_flag=True, help="Also pack the exported models (onnx/, om/): large; their hashes "
              "are in report.json either way.")
def submit_command(run_dirs: tuple[Path, ...], out: Path, with_models: bool) -> None:
    """Pack run directories (any bundles) into one archive a reviewer can `zoo check` without trusting you.

    Refuses a run without report.json, an INCOMPLETE one, one whose files changed after its report, or one whose
    metrics do not recompute."""
    path = make_submission(run_dirs, out, with_models=with_models)
    click.echo(f"{path}: {len(run_dirs)} run(s), {path.stat().st_size / 2**20:.1f} MiB")


@click.command("check")
@click.argument("archive", type=click.Path(path_type=Path))
def check_command(archive: Path) -> None:
    """Re-verify a submission: index hashes, no missing / extra / unsafe member, manifests against the zoo's own,
    predictions bound to the reports, every metric recomputed, every verdict re-derived. Exit 1 on any problem."""
    result = check_submission(archive)
    click.echo(render_check(result), nl=False)
    sys.exit(0 if result.ok else 1)


@click.command("bench-check")
def bench_check_command() -> None:
    """Time `zoo check` on a submission of full-scale synthetic runs (VOC07, VeRi, VOT2016 sizes)."""
    r = bench_check()
    click.echo(f"zoo check on full-scale synthetic runs ({r['archive_mib']:.0f} MiB archive): {r['check_s']:.1f} s "
               f"({'under' if r['under_limit'] else 'OVER'} {r['limit_s']:.0f} s; building took {r['build_s']:.1f} s)")


if __name__ == "__main__":  # python -m common.submission bench
    if sys.argv[1:] != ["bench"]:
        sys.exit("usage: python -m common.submission bench")
    try:
        bench_check_command(args=[], standalone_mode=False)
    except ZooError as err:
        sys.exit(f"error: {err}")
