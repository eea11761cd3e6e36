"""`zoo submit` / `zoo check`: a clean submission passes; every kind of tampering is caught, each by itself, and the
tampered archives carry a consistent (re-hashed) index wherever that makes the attack stronger, so the check has to
catch them by recomputation and the report's bindings, not by the index."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from common.errors import InputError
from common.submission import INDEX, CheckResult, check_command, check_submission, make_submission, submit_command


# -- helpers ------------------------------------------------------------------------------------------------------
def _unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tf:
        tf.extractall(dest, filter="data")  # our own, trusted archive
    return dest


def _pack(root: Path, out: Path, *, rehash: bool = True,
          extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    """Re-pack an unpacked submission; `rehash` rewrites submission.json's index to match the files (the attacker
    makes the index consistent); `extra` may add crafted members."""
    meta = json.loads((root / INDEX).read_text())
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != INDEX)
    if rehash:
        meta["files"] = {p.relative_to(root).as_posix(): {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                                                          "size": p.stat().st_size} for p in files}
    with tarfile.open(out, "w:gz") as tf:
        data = json.dumps(meta).encode()
        info = tarfile.TarInfo(INDEX)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        for p in files:
            tf.add(p, p.relative_to(root).as_posix())
        if extra is not None:
            extra(tf)
    return out


def _tamper(archive: Path, tmp: Path, edit: Callable[[Path], None], *, rehash: bool = True, **kw) -> Path:
    root = _unpack(archive, tmp / "unpacked")
    edit(root / "runs")
    return _pack(root, tmp / "tampered.tar.gz", rehash=rehash, **kw)


def _run(root_runs: Path) -> Path:
    """The single run directory of a one-run submission."""
    (run,) = list(root_runs.iterdir())
    return run


def _edit_report(run: Path, change: Callable[[dict], None]) -> None:
    report = json.loads((run / "report.json").read_text())
    change(report)
    (run / "report.json").write_text(json.dumps(report, indent=2))


def _problems(result: CheckResult) -> str:
    return "\n".join(p.line() for p in result.problems)


@pytest.fixture(scope="module")
def submissions(demo_run, tmp_path_factory) -> dict[str, Path]:
    """One single-run submission per fast bundle (tampering starts from these)."""
    base = tmp_path_factory.mktemp("submissions")
    return {b: make_submission([demo_run(b)], base / f"{b}.tar.gz") for b in ("refinedet", "pamtri", "siamrpn")}


# -- clean --------------------------------------------------------------------------------------------------------
def test_clean_submission_of_several_bundles_passes(demo_run, tmp_path):
    dirs = [demo_run(b) for b in ("refinedet", "pamtri", "siamrpn")]
    out = tmp_path / "sub.tar.gz"
    r = CliRunner().invoke(submit_command, [*map(str, dirs), "-o", str(out)])
    assert r.exit_code == 0, r.output
    with tarfile.open(out) as tf:
        names = tf.getnames()
    assert names[0] == INDEX
    assert not any("/onnx/" in n for n in names), "exported models are left out by default"
    meta = json.loads(tarfile.open(out).extractfile(INDEX).read())
    assert [e["bundle"] for e in meta["runs"]] == ["refinedet", "pamtri", "siamrpn"]
    assert meta["zoo"]["commit"] and meta["environment"]["device"]["python"]
    assert set(meta["files"]) == {n for n in names if n != INDEX}

    r = CliRunner().invoke(check_command, [str(out)])
    assert r.exit_code == 0, r.output
    assert "| runs/1-pamtri | pamtri | mAP |" in r.output and "DEMO-PASS / DEMO-PASS" in r.output
    assert "problem" not in r.output.split("\n\n")[1]


def test_with_models_packs_and_checks_the_exported_models(demo_run, tmp_path):
    out = make_submission([demo_run("refinedet")], tmp_path / "m.tar.gz", with_models=True)
    with tarfile.open(out) as tf:
        assert "runs/0-refinedet/onnx/model.onnx" in tf.getnames()
    assert check_submission(out).ok

    def swap_model(runs: Path) -> None:
        (_run(runs) / "onnx" / "model.onnx").write_bytes(b"not the exported model")

    result = check_submission(_tamper(out, tmp_path, swap_model))
    assert "runs/0-refinedet/onnx/model.onnx: exported model does not match" in _problems(result)


# -- submit refuses broken runs ------------------------------------------------------------------------------------
def test_submit_refuses_broken_runs(demo_run, tmp_path):
    run = shutil.copytree(demo_run("refinedet"), tmp_path / "run")
    (tmp_path / "no-report").mkdir()
    with pytest.raises(InputError, match="no-report: report.json missing"):
        make_submission([tmp_path / "no-report"], tmp_path / "x.tar.gz")
    _edit_report(run, lambda r: r["metrics"].update({"mAP": 12.5}))
    with pytest.raises(InputError, match="run: recorded metrics do not recompute"):
        make_submission([run], tmp_path / "x.tar.gz")
    _edit_report(run, lambda r: r.update(verdict="INCOMPLETE"))
    with pytest.raises(InputError, match="INCOMPLETE"):
        make_submission([run], tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


# -- tampering, one case each ---------------------------------------------------------------------------------------
def test_edited_metric_value_is_caught(submissions, tmp_path):
    def edit(runs: Path) -> None:
        _edit_report(_run(runs), lambda r: r["metrics"].update({"rank1": r["metrics"]["rank1"] + 5.0}))

    result = check_submission(_tamper(submissions["pamtri"], tmp_path, edit))
    assert not result.ok
    assert "runs/0-pamtri/report.json: metric rank1: recorded" in _problems(result)
    assert not any("sha256 differs from submission.json" in p.what for p in result.problems)  # index consistent
    assert [row.metric for row in result.runs[0].rows if not row.ok] == ["rank1"]


def test_edited_verdict_is_caught(submissions, tmp_path):
    def edit(runs: Path) -> None:
        def fail_a_check(r: dict) -> None:
            r["checks"][1]["passed"] = False  # a recorded check now fails, yet the verdict still says DEMO-PASS
        _edit_report(_run(runs), fail_a_check)

    result = check_submission(_tamper(submissions["refinedet"], tmp_path, edit))
    text = _problems(result)
    assert "recorded NOT PASSED, re-derived PASS" in text
    assert "verdict 'DEMO-PASS' but the checks give" not in text  # the re-derived check is the one that counts

    def edit_verdict(runs: Path) -> None:
        _edit_report(_run(runs), lambda r: r.update(verdict="DEMO-FAIL"))

    result = check_submission(_tamper(submissions["refinedet"], tmp_path / "b", edit_verdict))
    assert "runs/0-refinedet/report.json: verdict 'DEMO-FAIL' but the checks give DEMO-PASS" in _problems(result)
    assert result.runs[0].verdict_derived == "DEMO-PASS"

    def fail_parity(runs: Path) -> None:  # not recomputable (needs the model): the recorded value must agree
        _edit_report(_run(runs), lambda r: r["checks"][0].update(passed=False))

    result = check_submission(_tamper(submissions["refinedet"], tmp_path / "c", fail_parity))
    assert _problems(result) == "runs/0-refinedet/report.json: verdict 'DEMO-PASS' but the checks give DEMO-FAIL"


def test_real_verdict_is_rederived_from_the_published_numbers(submissions, tmp_path):
    """A demo run relabelled as a real run claiming PASS: the published check on the recomputed metrics fails."""
    def edit(runs: Path) -> None:
        _edit_report(_run(runs), lambda r: r.update(mode="real", verdict="PASS"))
    root = _unpack(submissions["pamtri"], tmp_path / "u")
    edit(root / "runs")
    meta = json.loads((root / INDEX).read_text())
    meta["runs"][0]["mode"] = "real"
    (root / INDEX).write_text(json.dumps(meta))
    result = check_submission(_pack(root, tmp_path / "t.tar.gz"))
    assert "verdict 'PASS' but the checks give FAIL" in _problems(result)


def test_swapped_prediction_files_are_caught(submissions, tmp_path):
    def swap(runs: Path) -> None:
        base = _run(runs) / "results" / "VOT2016" / "siamrpn_r50_l234_dwxcorr" / "baseline"
        a, b = sorted(base.iterdir())[:2]
        fa, fb = a / f"{a.name}_001.txt", b / f"{b.name}_001.txt"
        ta, tb = fa.read_bytes(), fb.read_bytes()
        fa.write_bytes(tb)
        fb.write_bytes(ta)

    result = check_submission(_tamper(submissions["siamrpn"], tmp_path, swap))
    text = _problems(result)
    assert text.count("_001.txt: sha256 differs from report.json outputs") == 2
    assert "metric accuracy: recorded" in text  # and the recomputation sees it too


def test_truncated_prediction_file_is_caught(submissions, tmp_path):
    def truncate(runs: Path) -> None:
        f = _run(runs) / "features_query.npy"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    result = check_submission(_tamper(submissions["pamtri"], tmp_path, truncate))
    text = _problems(result)
    assert "runs/0-pamtri/features_query.npy: sha256 differs from report.json outputs" in text
    assert "metrics cannot be recomputed" in text and "features_query.npy" in text.split("cannot be recomputed")[1]


@pytest.fixture(scope="module")
def other_pamtri_run(demo_run, tmp_path_factory) -> Path:
    """A genuine second pamtri run: the pipeline on the same synthetic VeRi with other random weights (seed 1)."""
    import torch

    from bundles.pamtri.model import MultiTaskDenseNet121
    from common.checkpoint import random_state_dict
    from common.pipeline import EvalOptions, evaluate

    base = tmp_path_factory.mktemp("other-pamtri")
    weights = base / "seed1.pth.tar"
    torch.save({"state_dict": random_state_dict(MultiTaskDenseNet121(), seed=1), "rank1": np.float32(0.0),
                "epoch": 0}, weights)
    data = demo_run("pamtri").parent / "cache" / "demo" / "pamtri" / "VeRi"
    evaluate(EvalOptions(bundle="pamtri", out_dir=base / "run", data_dir=data, weights=weights,
                         cache_dir=base / "cache"))
    return base / "run"


@pytest.mark.slow  # a second pamtri pipeline run
def test_prediction_file_from_another_run_is_caught(submissions, other_pamtri_run, tmp_path):
    other = np.load(other_pamtri_run / "features_gallery.npy")

    def transplant(runs: Path) -> None:
        mine = _run(runs) / "features_gallery.npy"
        assert other.shape == np.load(mine).shape and not np.array_equal(other, np.load(mine))
        shutil.copyfile(other_pamtri_run / "features_gallery.npy", mine)

    result = check_submission(_tamper(submissions["pamtri"], tmp_path, transplant))
    text = _problems(result)
    assert "runs/0-pamtri/features_gallery.npy: sha256 differs from report.json outputs" in text
    assert "metric mAP: recorded" in text  # the other run's features score differently


def test_manifest_changed_after_the_run_is_caught(submissions, tmp_path):
    """The run's manifest.toml edited (a wider tolerance), and everything that names its hash made consistent:
    report.json provenance and outputs, and the index. Only the zoo's own manifest can tell."""
    def edit(runs: Path) -> None:
        run = _run(runs)
        m = run / "manifest.toml"
        text = m.read_text()
        assert "tolerance_rel = 0.01" in text
        m.write_text(text.replace("tolerance_rel = 0.01", "tolerance_rel = 1.0", 1))
        digest = hashlib.sha256(m.read_bytes()).hexdigest()

        def rebind(r: dict) -> None:
            r["provenance"]["manifest_sha256"] = digest
            r["outputs"]["manifest.toml"] = digest
        _edit_report(run, rebind)

    result = check_submission(_tamper(submissions["refinedet"], tmp_path, edit))
    text = _problems(result)
    assert "runs/0-refinedet/manifest.toml: differs from the zoo's own bundles/refinedet/manifest.toml" in text
    assert len(result.problems) == 1, text


def test_submission_from_an_unknown_zoo_version_says_so(submissions, tmp_path):
    root = _unpack(submissions["refinedet"], tmp_path / "u")
    meta = json.loads((root / INDEX).read_text())
    meta["zoo"]["commit"] = "0123456789abcdef0123456789abcdef01234567"
    (root / INDEX).write_text(json.dumps(meta))
    result = check_submission(_pack(root, tmp_path / "t.tar.gz"))
    assert any("made by zoo '0123456789abcdef" in n for n in result.notes)
    assert "this checkout does not have that commit" in _problems(result)


def test_missing_file_is_caught(submissions, tmp_path):
    def remove(runs: Path) -> None:
        (_run(runs) / "ground_truth.json").unlink()

    result = check_submission(_tamper(submissions["siamrpn"], tmp_path, remove, rehash=False))
    text = _problems(result)
    assert "runs/0-siamrpn/ground_truth.json: missing: listed in submission.json but not in the archive" in text
    assert "ground_truth.json: missing: bound by report.json outputs" in text


def test_extra_file_is_caught(submissions, tmp_path):
    def add(runs: Path) -> None:
        (_run(runs) / "notes.txt").write_text("added by the sender after the run\n")

    result = check_submission(_tamper(submissions["refinedet"], tmp_path, add, rehash=False))
    assert "runs/0-refinedet/notes.txt: extra file: in the archive but not in submission.json" in _problems(result)
    # re-hashed into the index, the report's outputs still do not bind it
    result = check_submission(_tamper(submissions["refinedet"], tmp_path / "b", add))
    assert _problems(result) == "runs/0-refinedet/notes.txt: not bound by report.json outputs (added after the run?)"


def _member(name: str, data: bytes = b"x", **attrs) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, (io.BytesIO(data) if info.isreg() else None)


def test_path_traversal_member_is_named_and_not_extracted(submissions, tmp_path):
    work = tmp_path / "work"
    work.mkdir()

    def evil(tf: tarfile.TarFile) -> None:
        tf.addfile(*_member("../../evil", b"owned\n"))

    archive = _tamper(submissions["refinedet"], tmp_path, lambda runs: None, extra=evil)
    result = check_submission(archive, workdir=work)
    assert "tampered.tar.gz:'../../evil': member refused ('..' path traversal): not extracted" in _problems(result)
    assert not (work / "evil").exists() and not (tmp_path / "evil").exists()
    assert not list(work.iterdir()), "the temporary extraction directory is removed"


def test_symlink_and_device_members_are_refused(submissions, tmp_path):
    def links(tf: tarfile.TarFile) -> None:
        tf.addfile(*_member("runs/0-refinedet/link", type=tarfile.SYMTYPE, linkname="/etc/passwd"))
        tf.addfile(*_member("runs/0-refinedet/hard", type=tarfile.LNKTYPE, linkname="runs/0-refinedet/report.md"))
        tf.addfile(*_member("runs/0-refinedet/dev", type=tarfile.CHRTYPE))
        tf.addfile(*_member("/abs", b"x"))

    result = check_submission(_tamper(submissions["refinedet"], tmp_path, lambda runs: None, extra=links))
    text = _problems(result)
    assert "runs/0-refinedet/link: member refused: a symbolic link (to '/etc/passwd')" in text
    assert "runs/0-refinedet/hard: member refused: a hard link" in text
    assert "runs/0-refinedet/dev: member refused: a character device" in text
    assert "'/abs': member refused (absolute path)" in text
    assert len(result.problems) == 4, text  # the run itself still checks clean


@pytest.mark.parametrize("report", [
    "[1, 2]",
    '{"bundle": "../../etc"}',
    '{"bundle": "refinedet", "mode": "demo", "published_run": "310P3_bs1", "verdict": "DEMO-PASS", '
    '"metrics": {"mAP": NaN}, "checks": []}',
    '{"bundle": "refinedet", "mode": "demo", "published_run": "310P3_bs1", "verdict": "DEMO-PASS", '
    '"metrics": {"mAP": 1e999, "AP/cat": ' + "9" * 400 + '}, "checks": [1, {"name": 3}], "outputs": [1]}',
    '{"bundle": "refinedet", "mode": 7, "metrics": "x", "checks": {}}',
    '{"a": ' * 100000 + "1" + "}" * 100000,
], ids=["list", "bundle-path", "nan-metric", "huge-numbers", "wrong-types", "deep-nesting"])
def test_hostile_report_json_gives_problems_not_tracebacks(submissions, tmp_path, report):
    def write(runs: Path) -> None:
        (_run(runs) / "report.json").write_text(report)

    archive = _tamper(submissions["refinedet"], tmp_path, write)
    r = CliRunner().invoke(check_command, [str(archive)])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "runs/0-refinedet/report.json:" in r.output and "FAIL" in r.output


@pytest.mark.parametrize("index", ["[]", "{}", '{"files": {"../x": {"sha256": 1, "size": 1e999}}, "runs": [7]}'],
                         ids=["list", "empty", "bad-entries"])
def test_hostile_index_gives_problems(submissions, tmp_path, index):
    root = _unpack(submissions["refinedet"], tmp_path / "u")
    (root / INDEX).write_text(index)
    result = check_submission(_pack(root, tmp_path / "t.tar.gz", rehash=False))
    assert not result.ok and any(p.path == INDEX for p in result.problems)


def test_not_an_archive_is_an_input_error(tmp_path):
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"hello")
    with pytest.raises(InputError, match="not a"):
        check_submission(bad)
    with pytest.raises(InputError, match="not found"):
        check_submission(tmp_path / "missing.tar.gz")
