"""The `zoo` command line: exit codes and one-line errors (runs the real entry point in a subprocess)."""

from __future__ import annotations

import subprocess
import sys


def zoo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common", *args], capture_output=True, text=True, timeout=300)


def test_list_shows_bundles_and_published_runs():
    r = zoo("list")
    assert r.returncode == 0
    assert "refinedet" in r.stdout and "310P3_bs1" in r.stdout and "79.6" in r.stdout


def test_missing_data_path_is_one_clear_line(tmp_path):
    r = zoo("eval", "refinedet", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: --data {tmp_path / 'nope'}: does not exist"]


def test_real_eval_with_bad_dataset_names_the_file_and_reports_incomplete(tmp_path):
    (tmp_path / "VOCdevkit").mkdir()
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    r = zoo("eval", "refinedet", "--data", str(tmp_path), "--weights", str(weights), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "test.txt" in r.stderr
    import json

    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["verdict"] == "INCOMPLETE" and report["metrics"] == {}


def test_ais_bench_device_ids():
    import pytest

    from common.errors import ZooError
    from common.pipeline import _npu_id

    assert (_npu_id("npu"), _npu_id("npu:3")) == (0, 3)
    for bad in ("cpu", "cuda:0", "npu:x"):
        with pytest.raises(ZooError, match="npu:<id>"):
            _npu_id(bad)


def test_convert_dry_run_prints_one_atc_command_per_published_batch_size(tmp_path):
    r = zoo("convert", "refinedet", "--out", str(tmp_path), "--om", "--dry-run", "--soc-version", "Ascend310P3")
    assert r.returncode == 0, r.stderr
    cmds = [line for line in r.stdout.splitlines() if line.startswith("atc ")]
    assert [c.split("--input_shape=image:")[1].split(",")[0] for c in cmds] == ["1", "4", "8", "16", "32", "64"]
    assert all("--precision_mode=allow_fp32_to_fp16" in c and "--soc_version=Ascend310P3" in c for c in cmds)
    assert f"--output={tmp_path.resolve()}/model_bs16 " in cmds[3]
